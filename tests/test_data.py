import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gigagpt import data
from gigagpt.errors import GigaGPTError
from gigagpt.tokenizer import encoding_from_meta, get_encoding

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
TEXT = SHAKESPEARE.read_text()[:20_000]  # a slice keeps every test fast


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT)
    return path


def decoded(out_dir):
    enc = encoding_from_meta(data.load_meta(out_dir))
    return [enc.decode(data.load_tokens(out_dir, split).tolist()) for split in ("train", "val")]


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_prepare_round_trip(text_file, tmp_path, tokenizer):
    out = tmp_path / "out"
    meta = data.prepare(text_file, out, tokenizer)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert json.loads((out / "meta.json").read_text()) == meta == data.load_meta(out)
    assert meta["source"] == "input.txt" and meta["tokenizer"] == tokenizer
    train, val = decoded(out)
    assert train == TEXT[:18_000] and val == TEXT[18_000:]  # first 90% train, last 10% val
    assert (out / "train.bin").stat().st_size == 2 * meta["train_tokens"]
    if tokenizer == "char":
        assert meta["chars"] == "".join(sorted(set(TEXT))) and meta["vocab_size"] == len(meta["chars"])
        assert (meta["train_tokens"], meta["val_tokens"]) == (18_000, 2_000)
    else:
        enc = get_encoding("gpt2")
        assert data.load_tokens(out, "train").tolist() == enc.encode_ordinary(TEXT[:18_000])


def test_chunked_encoding_equals_whole_text_encoding():
    # Cutting text into chunks for parallel encoding must not change a single id.
    enc, f = get_encoding("gpt2"), io.BytesIO()
    text = TEXT + "odd   spacing  \n\n   here\n \nx\n\n\ny"
    n = data._encode_to(f, enc, text, chunk_chars=50)
    assert np.frombuffer(f.getvalue(), np.uint16).tolist() == enc.encode_ordinary(text) and n > 100


def test_prepare_is_idempotent(text_file, tmp_path):
    out = tmp_path / "out"
    meta = data.prepare(text_file, out, "char")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert data.prepare(text_file, out, "char") == meta
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # nothing rewritten
    assert data.prepare(text_file, out, "gpt2")["tokenizer"] == "gpt2"  # another tokenizer: rewritten
    text_file.write_text(TEXT[:5_000])
    assert data.prepare(text_file, out, "gpt2")["source_sha256"] != meta["source_sha256"]  # new text: rewritten
    assert decoded(out) == [TEXT[:4_500], TEXT[4_500:5_000]]


@pytest.mark.parametrize("content, tokenizer, message", [
    (b"", "gpt2", "is empty"),
    (b" \n\n ", "char", "is empty"),
    (b"text\0with NUL\0bytes", "gpt2", "looks binary"),
    ("caf\u00e9 au lait".encode("latin-1"), "gpt2", "is not UTF-8 text"),
    (b"hello", "char", "the val split .* has only 1 token"),
    ("".join(map(chr, range(0x10000, 0x10000 + 70_000))).encode(), "char", "70000 tokens; ids above 65535"),
    (b"hello world", "sentencepiece", "unknown tokenizer 'sentencepiece'; choose one of: gpt2, char"),
])
def test_prepare_rejects_bad_input(tmp_path, content, tokenizer, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(GigaGPTError, match=message):
        data.prepare(path, tmp_path / "out", tokenizer)


def test_prepare_rejects_missing_file_and_bad_fraction(text_file, tmp_path):
    with pytest.raises(GigaGPTError, match="input file not found: .*nope.txt"):
        data.prepare(tmp_path / "nope.txt", tmp_path / "out")
    with pytest.raises(GigaGPTError, match="val_fraction must be between 0 and 1"):
        data.prepare(text_file, tmp_path / "out", val_fraction=1.0)


@pytest.fixture
def char_dir(text_file, tmp_path):
    data.prepare(text_file, tmp_path / "char", "char")
    return tmp_path / "char"


def test_load_errors_say_how_to_create_the_data(tmp_path, char_dir):
    hint = "gigagpt prepare data/tinyshakespeare.txt --tokenizer char --out"
    with pytest.raises(GigaGPTError, match=f"data directory .*missing not found; create it with `{hint}"):
        data.load_tokens(tmp_path / "missing", "train")
    (char_dir / "val.bin").unlink()
    with pytest.raises(GigaGPTError, match=f"val.bin not found; re-create it with `{hint}"):
        data.load_tokens(char_dir, "val")
    with pytest.raises(GigaGPTError, match="split must be 'train' or 'val'"):
        data.load_tokens(char_dir, "test")
    (char_dir / "meta.json").write_text("{not json")
    with pytest.raises(GigaGPTError, match="meta.json is corrupt"):
        data.load_meta(char_dir)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1], "corrupt: 35999 bytes, but meta.json says 18000"),  # odd size
    (lambda b: b + b"\0\0", "corrupt: 36002 bytes, but meta.json says 18000"),  # count disagrees
    (lambda b: b"\xff" * len(b), "corrupt: token id 65535 >= vocab_size"),  # ids beyond the vocabulary
])
def test_load_tokens_detects_corrupt_files(char_dir, damage, message):
    path = char_dir / "train.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GigaGPTError, match=message):
        data.load_tokens(char_dir, "train")


def test_get_batch_shapes_shift_and_determinism():
    tokens = np.arange(1000, dtype=np.uint16)  # token i at position i: windows are easy to check
    x, y = data.get_batch(tokens, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()  # the training loop .view()s them
    assert torch.equal(y, x + 1)  # targets are the inputs shifted by one token
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(4, 16))  # each row is one contiguous window
    starts = np.random.default_rng(0).integers(0, 1000 - 16, size=4)
    assert x[:, 0].tolist() == starts.tolist()
    x2, _ = data.get_batch(tokens, 4, 16, np.random.default_rng(0))
    x3, _ = data.get_batch(tokens, 4, 16, np.random.default_rng(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_get_batch_edges(char_dir):
    tokens = data.load_tokens(char_dir, "val")  # a real memmap
    x, y = data.get_batch(tokens, 2, len(tokens) - 1, np.random.default_rng(0))  # the only possible window
    assert x[0].tolist() == tokens[:-1].tolist() and y[1].tolist() == tokens[1:].tolist()
    with pytest.raises(GigaGPTError, match=f"only {len(tokens)} tokens, need at least"):
        data.get_batch(tokens, 2, len(tokens), np.random.default_rng(0))


def test_package_imports_without_datasets():
    code = "import sys, gigagpt.data, gigagpt.tokenizer; assert 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


DOCS = [TEXT[i:i + 500] for i in range(0, 20_000, 500)]


def test_prepare_dataset_single_split_appends_eot(tmp_path):
    datasets = pytest.importorskip("datasets")
    meta = data.prepare_dataset(datasets.Dataset.from_dict({"text": DOCS, "id": range(40)}), tmp_path)
    enc = get_encoding("gpt2")
    train, val = (data.load_tokens(tmp_path, s) for s in ("train", "val"))
    assert meta["val_tokens"] == len(val) and meta["train_tokens"] == len(train)
    assert len(train) + len(val) == sum(len(enc.encode_ordinary(d)) + 1 for d in DOCS)
    assert train[-1] == val[-1] == enc.eot_token  # every document ends with <|endoftext|>
    docs = enc.decode(train.tolist() + val.tolist()).split("<|endoftext|>")[:-1]
    assert sorted(docs) == sorted(DOCS) and len(val) < len(train)  # ~0.05% val: one document


def test_prepare_dataset_dict_splits_and_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": DOCS[:30]}),
                               "validation": datasets.Dataset.from_dict({"content": DOCS[30:]})})
    data.prepare_dataset(ds, tmp_path, text_column="content")
    assert get_encoding("gpt2").decode(data.load_tokens(tmp_path, "val").tolist()).split("<|endoftext|>")[:-1] == DOCS[30:]
    with pytest.raises(GigaGPTError, match="no column 'text'; its columns: \\['content'\\]"):
        data.prepare_dataset(ds, tmp_path)
    with pytest.raises(GigaGPTError, match="needs a 'train' and a 'val'/'validation'/'test' split, has \\['train'\\]"):
        data.prepare_dataset(datasets.DatasetDict({"train": ds["train"]}), tmp_path, text_column="content")
    with pytest.raises(GigaGPTError, match="prepare\\(\\) on a text file"):
        data.prepare_dataset(ds, tmp_path, tokenizer="char")
