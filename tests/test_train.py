import json
import math
import subprocess
import sys

import pytest
import torch

from gigagpt import GigaGPTError, load_config
from gigagpt.sample import generate, load_model, sample
from gigagpt.train import lr_at, train

from conftest import REPO, tiny_overrides


def test_training_lowers_loss_and_logs_metrics(char_data, tmp_path):
    cfg = load_config(None, **tiny_overrides(char_data, tmp_path, num_steps=30, learning_rate=3e-3))
    rows = train(cfg, progress=False)
    assert rows[0]["loss"] == pytest.approx(math.log(65), abs=0.3)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 31))
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(lines[0])
    assert "val_loss" in lines[-1] and lines[-1]["val_loss"] < rows[0]["loss"]
    assert (tmp_path / "checkpoint_30.pt").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_is_exact(char_data, tmp_path):
    """Training 2N steps equals training N, then resuming for N more (CPU, fp32)."""
    common = tiny_overrides(char_data, tmp_path / "a", num_steps=8, dropout=0.1)
    straight = train(load_config(None, **common), progress=False)
    first = tiny_overrides(char_data, tmp_path / "b", num_steps=4, dropout=0.1, decay_steps=6)
    train(load_config(None, **first), progress=False)
    resumed = train(load_config(None, **{**common, "out_dir": str(tmp_path / "b"),
                                         "checkpoint_path": str(tmp_path / "b" / "checkpoint_4.pt")}),
                    progress=False)
    assert [r["step"] for r in resumed] == [5, 6, 7, 8]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[4:]]


def test_gradient_accumulation_matches_full_batch(char_data, tmp_path):
    full = train(load_config(None, **tiny_overrides(char_data, tmp_path / "a")), progress=False)
    accum = train(load_config(None, **tiny_overrides(char_data, tmp_path / "b", gradient_accumulation_steps=2)),
                  progress=False)
    for a, b in zip(full, accum):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_interrupt_saves_a_checkpoint(char_data, tmp_path):
    def stop_at_step_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    cfg = load_config(None, **tiny_overrides(char_data, tmp_path, num_steps=50))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_log=stop_at_step_3)
    assert torch.load(tmp_path / "checkpoint_3.pt", weights_only=True)["step"] == 3


def test_lr_schedule():
    run = load_config(None, learning_rate=1.0, warmup_steps=10, num_steps=110).run
    assert lr_at(0, run) == 0 and lr_at(5, run) == 0.5 and lr_at(10, run) == 1.0
    assert lr_at(60, run) == pytest.approx(0.55)
    assert lr_at(110, run) == pytest.approx(0.1) and lr_at(500, run) == pytest.approx(0.1)


def test_sampling_from_a_checkpoint(char_data, tmp_path):
    train(load_config(None, **tiny_overrides(char_data, tmp_path)), progress=False)
    model, encoding = load_model(tmp_path / "checkpoint_6.pt")
    text = sample(model, encoding, "ROMEO:", max_new_tokens=20, seed=1)
    assert text.startswith("ROMEO:") and len(text) == 26
    assert text == sample(model, encoding, "ROMEO:", max_new_tokens=20, seed=1)
    greedy = generate(model, torch.tensor([[1, 2]]), 40, temperature=0)  # runs past the 32-token context
    assert greedy.shape == (1, 42)


def test_missing_data_and_too_big_model(tmp_path, char_data):
    with pytest.raises(GigaGPTError, match="gigagpt prepare"):
        train(load_config(None, **tiny_overrides(tmp_path / "nothing", tmp_path)), progress=False)
    with pytest.raises(GigaGPTError, match=r"vocab_size to at least \d+"):
        train(load_config(None, **tiny_overrides(char_data, tmp_path, vocab_size=10)), progress=False)
    cfg = load_config(REPO / "configs" / "175b.yaml", dataset=str(char_data), vocab_size=50257, device="cpu")
    with pytest.raises(GigaGPTError, match=r"need ~[\d,]+ GiB to train .* FSDP .* Cerebras"):
        train(cfg, progress=False)


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "gigagpt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_errors_are_one_line():
    for args, message in [
        (["train", "configs/175b.yaml", "--device", "cpu", "--dataset", "data"], "error: "),
        (["train", "configs/nope.yaml"], "config file not found"),
        (["train", "configs/111m.yaml", "--widht", "3"], "did you mean 'width'"),
        (["info", "configs/111m.yaml", "--heads", "7"], "heads (7) must divide width (768)"),
        (["prepare", "missing.txt", "--out", "/tmp/x"], "missing.txt"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_175b_needs_more_memory_than_this_machine(char_data):
    result = run_cli("train", "configs/175b.yaml", "--device", "cpu", "--dataset", str(char_data),
                     "--vocab_size", "50257")
    assert result.returncode == 1 and "GiB to train" in result.stderr and "torchrun" in result.stderr


def test_info_prints_exact_counts():
    result = run_cli("info", "configs/175b.yaml")
    assert result.returncode == 0, result.stderr
    assert "174,604,259,328" in result.stdout and "FLOPs/token" in result.stdout


def test_cli_train_and_sample(char_data, tmp_path):
    args = [f"--{k}={v}" for k, v in tiny_overrides(char_data, tmp_path).items()]
    result = run_cli("train", "configs/shakespeare_char.yaml", *args)
    assert result.returncode == 0, result.stderr
    assert "step 6:" in result.stdout
    result = run_cli("sample", "--checkpoint", str(tmp_path / "checkpoint_6.pt"), "--prompt", "KING",
                     "--max_new_tokens", "10", "--seed", "0")
    assert result.returncode == 0 and result.stdout.startswith("KING"), result.stderr


def test_your_own_text_just_works(tmp_path):
    """The new user's path: any UTF-8 text, character level, trained with the shipped config. Its vocabulary
    (here with characters tiny Shakespeare lacks) comes from the data's meta.json."""
    text = "Ça va? Größe: 3 × 4 = 12. 日本語, emoji 🙂 — «quotes»!\n" * 400
    (tmp_path / "my_corpus.txt").write_text(text, encoding="utf-8")
    done = run_cli("prepare", str(tmp_path / "my_corpus.txt"), "--tokenizer", "char", "--out", str(tmp_path / "mine"))
    assert done.returncode == 0, done.stderr
    vocab = len(set(text))
    assert vocab > 30 and not set(text) <= set((REPO / "data" / "tinyshakespeare.txt").read_text())
    done = run_cli("train", "configs/shakespeare_char.yaml", "--dataset", str(tmp_path / "mine"), "--out_dir",
                   str(tmp_path / "out"), "--num_steps", "3", "--width", "32", "--depth", "1", "--heads", "2",
                   "--sequence_length", "16", "--batch_size", "4", "--eval_steps", "1", "--checkpoint_steps", "0")
    assert done.returncode == 0, done.stderr
    model, encoding = load_model(tmp_path / "out" / "checkpoint_3.pt")
    assert model.config.vocab_size == encoding.n_vocab == vocab and model.config.max_position_embeddings == 16
    assert sample(model, encoding, "Größe", max_new_tokens=5, seed=0).startswith("Größe")


def test_vocabulary_and_positions_follow_the_data_unless_pinned(char_data, tmp_path):
    from gigagpt.data import load_meta

    vocab = load_meta(char_data)["vocab_size"]  # the 61 characters of the first 100k
    base = tiny_overrides(char_data, tmp_path, num_steps=2)
    del base["vocab_size"], base["max_position_embeddings"], base["sequence_length"]
    train(load_config(None, **base, sequence_length=24), progress=False)
    model, _ = load_model(tmp_path / "checkpoint_2.pt")
    assert (model.config.vocab_size, model.config.max_position_embeddings) == (vocab, 24)
    with pytest.raises(GigaGPTError, match=f"has {vocab} tokens, but the config fixes vocab_size=60: set vocab_size "
                                           f"to at least {vocab}, or leave it out"):
        train(load_config(None, **base, sequence_length=24, vocab_size=60), progress=False)
    with pytest.raises(GigaGPTError, match="sequence_length is 40, but the config fixes max_position_embeddings=32"):
        train(load_config(None, **base, sequence_length=40, max_position_embeddings=32), progress=False)
    # resuming: the checkpoint fixes them (its weights have those shapes)
    with pytest.raises(GigaGPTError, match="sequence_length is 32, but the checkpoint fixes max_position_embeddings"
                                           "=24: use a sequence_length of at most 24"):
        train(load_config(None, **{**base, "num_steps": 4, "sequence_length": 32,
                                   "checkpoint_path": str(tmp_path / "checkpoint_2.pt")}), progress=False)
