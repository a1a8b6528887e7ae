import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def char_data(tmp_path_factory):
    """Tiny Shakespeare's first 100k characters, prepared at character level."""
    from gigagpt.data import prepare

    root = tmp_path_factory.mktemp("data")
    text = root / "shakespeare_100k.txt"
    text.write_text((REPO / "data" / "tinyshakespeare.txt").read_text()[:100_000])
    out = root / "char"
    prepare(text, out, tokenizer="char")
    return out


def tiny_overrides(data_dir, out_dir, **extra):
    """A model and run small enough to train in a second on a CPU."""
    values = dict(width=32, depth=2, heads=2, vocab_size=65, max_position_embeddings=32, dropout=0.0,
                  dataset=str(data_dir), out_dir=str(out_dir), batch_size=4, sequence_length=16,
                  num_steps=6, warmup_steps=2, learning_rate=1e-3, log_interval=1, eval_steps=2,
                  device="cpu", dtype="float32")
    values.update(extra)
    return values
