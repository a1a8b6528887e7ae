"""Data: tokenize text once into uint16 train.bin / val.bin + meta.json, then sample batches from memmaps.

    prepare("data/tinyshakespeare.txt", "data/shakespeare_char", tokenizer="char")
    tokens = load_tokens("data/shakespeare_char", "train")          # np.memmap, nothing read yet
    x, y = get_batch(tokens, batch_size=8, seq_len=256, rng=np.random.default_rng(0))

As in nanoGPT, token ids are stored as raw uint16 (GPT-2's 50257 fit), so a 9B-token corpus is 18 GB on disk
and training reads only the pages it samples.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gigagpt import checkpoint
from gigagpt.errors import GigaGPTError
from gigagpt.tokenizer import get_encoding

PREPARE_HINT = "`gigagpt prepare data/tinyshakespeare.txt --tokenizer char --out {}` (or your own text; see data/README.md)"
# Cut text for parallel encoding only after "<non-space>\n" and before a non-space: GPT-2's pre-tokenizer
# always splits there, so encoding the pieces gives exactly the ids of encoding the whole text.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")


def _write_atomic(path: Path, write):
    """write(f) into a temp file, then rename: a crash never leaves a half-written file under `path`."""
    with checkpoint.atomic(path) as tmp, open(tmp, "wb") as f:
        return write(f)


def _write_meta(out_dir: Path, meta: dict):
    _write_atomic(out_dir / "meta.json", lambda f: f.write(json.dumps(meta, indent=2).encode() + b"\n"))


def _check_vocab(enc):
    if enc.n_vocab > 2**16:
        raise GigaGPTError(f"the tokenizer has {enc.n_vocab} tokens; ids above 65535 don't fit uint16 .bin files")


def _encode_to(f, enc, text: str, chunk_chars=1 << 16) -> int:
    """Encode `text` in parallel chunks and append its uint16 ids to file f; returns the token count."""
    chunks, start = [], 0
    while start < len(text):
        cut = _SAFE_CUT.search(text, start + chunk_chars)
        chunks.append(text[start:cut.start() if cut else len(text)])
        start += len(chunks[-1])
    n, threads = 0, os.cpu_count() or 1
    with tqdm(total=len(text), unit="char", unit_scale=True, disable=len(text) < 1 << 24) as bar:
        for i in range(0, len(chunks), 16 * threads):  # a batch per bar update, enough to keep threads busy
            batch = chunks[i:i + 16 * threads]
            for ids in enc.encode_ordinary_batch(batch, num_threads=threads):
                f.write(np.array(ids, dtype=np.uint16).tobytes())
                n += len(ids)
            bar.update(sum(map(len, batch)))
    return n


def _finished(out_dir: Path, **expected):
    """meta.json of an earlier complete run with the same inputs, else None (makes prepare idempotent)."""
    try:
        meta = load_meta(out_dir)
        load_tokens(out_dir, "train"), load_tokens(out_dir, "val")  # both present, sizes agree with meta
    except GigaGPTError:
        return None
    return meta if all(meta.get(k) == v for k, v in expected.items()) else None


def prepare(text_file, out_dir, tokenizer="gpt2", val_fraction=0.1) -> dict:
    """Tokenize a UTF-8 text file into out_dir/{train,val}.bin + meta.json: the first 1-val_fraction of the
    text is train, the rest val (as nanoGPT). Returns the meta dict; a re-run with the same inputs is a no-op."""
    text_file, out_dir = Path(text_file), Path(out_dir)
    if not text_file.is_file():
        raise GigaGPTError(f"input file not found: {text_file}")
    if not 0 < val_fraction < 1:
        raise GigaGPTError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    get_encoding(tokenizer)  # unknown name -> error listing the choices, before any work
    raw = text_file.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    done = _finished(out_dir, tokenizer=tokenizer, source_sha256=sha256, val_fraction=val_fraction)
    if done:
        return done

    if b"\0" in raw:
        raise GigaGPTError(f"{text_file} looks binary (it contains NUL bytes); prepare needs a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GigaGPTError(f"{text_file} is not UTF-8 text (invalid byte at offset {e.start})") from e
    if not text.strip():
        raise GigaGPTError(f"{text_file} is empty; prepare needs some text")
    enc = get_encoding(tokenizer, chars=text) if tokenizer == "char" else get_encoding(tokenizer)
    _check_vocab(enc)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # an interrupted rewrite must not look finished
    meta = {"tokenizer": tokenizer, "vocab_size": enc.n_vocab, "chars": getattr(enc, "chars", None),
            "source": text_file.name, "source_sha256": sha256, "val_fraction": val_fraction}
    split = int(len(text) * (1 - val_fraction))
    for name, part in (("train", text[:split]), ("val", text[split:])):
        n = meta[f"{name}_tokens"] = _write_atomic(out_dir / f"{name}.bin", lambda f: _encode_to(f, enc, part))
        if n < 2:  # get_batch needs at least one (input, target) pair
            raise GigaGPTError(f"the {name} split of {text_file} has only {n} token(s); "
                               f"use a longer text or another val_fraction (now {val_fraction})")
    _write_meta(out_dir, meta)
    return meta


def _tokenize_docs(batch, tokenizer, text_column):
    """datasets.map function: ids of each document followed by <|endoftext|>, which separates documents."""
    enc = get_encoding(tokenizer)
    ids = [doc + [enc.eot_token] for doc in enc.encode_ordinary_batch(batch[text_column])]
    return {"ids": ids, "len": [len(x) for x in ids]}


def _write_shards(f, tokenized) -> int:
    """Append the ids of a tokenized split to f shard by shard (OpenWebText's 9B ids don't fit in memory)."""
    n, num_shards = 0, min(1024, len(tokenized))
    for i in tqdm(range(num_shards), desc=f"writing {Path(f.name).stem}", disable=num_shards < 64):
        ids = np.concatenate(tokenized.shard(num_shards, i, contiguous=True).with_format("numpy")["ids"])
        f.write(ids.astype(np.uint16).tobytes())
        n += len(ids)
    return n


def prepare_dataset(dataset, out_dir, tokenizer="gpt2", text_column="text", *, num_proc=None, source=None) -> dict:
    """Tokenize a Hugging Face Dataset (split here into train/val as nanoGPT: 0.05% val, seed 2357) or a
    DatasetDict with "train" and "val"/"validation"/"test" splits, into out_dir/{train,val}.bin + meta.json."""
    import datasets  # only this path needs it: the package itself must import on a plain torch install

    if tokenizer == "char":
        raise GigaGPTError("prepare_dataset needs a tokenizer with an end-of-text token (gpt2); "
                           "for char-level data use prepare() on a text file")
    enc = get_encoding(tokenizer)
    _check_vocab(enc)
    if isinstance(dataset, datasets.Dataset):
        dataset = dataset.train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    val_name = next((s for s in ("val", "validation", "test") if s in dataset), None)
    if "train" not in dataset or val_name is None:
        raise GigaGPTError(f"dataset needs a 'train' and a 'val'/'validation'/'test' split, has {list(dataset)}")
    if text_column not in dataset["train"].column_names:
        raise GigaGPTError(f"dataset has no column {text_column!r}; its columns: {dataset['train'].column_names}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)
    meta = {"tokenizer": tokenizer, "vocab_size": enc.n_vocab}
    for name, split in (("train", dataset["train"]), ("val", dataset[val_name])):
        tokenized = split.map(_tokenize_docs, batched=True, num_proc=num_proc, remove_columns=split.column_names,
                              fn_kwargs={"tokenizer": tokenizer, "text_column": text_column},
                              desc=f"tokenizing {name}")
        n = meta[f"{name}_tokens"] = _write_atomic(out_dir / f"{name}.bin", lambda f: _write_shards(f, tokenized))
        if n < 2:
            raise GigaGPTError(f"the {name} split has only {n} token(s); the dataset is too small")
    meta["source"] = source or dataset["train"].info.dataset_name or "datasets"
    _write_meta(out_dir, meta)
    return meta


def prepare_openwebtext(out_dir, num_proc=8) -> dict:
    """nanoGPT's OpenWebText recipe (~9B train tokens, 17 GB train.bin). Downloads ~54 GB: needs the network."""
    done = _finished(Path(out_dir), tokenizer="gpt2", source="openwebtext")
    if done:
        return done
    import datasets

    dataset = datasets.load_dataset("openwebtext", num_proc=num_proc)
    return prepare_dataset(dataset["train"], out_dir, "gpt2", num_proc=num_proc, source="openwebtext")


def load_meta(data_dir) -> dict:
    """The meta.json that prepare wrote in data_dir."""
    data_dir = Path(data_dir)
    path = data_dir / "meta.json"
    if not path.is_file():
        what = "data directory" if not data_dir.is_dir() else "meta.json in"
        raise GigaGPTError(f"{what} {data_dir} not found; create it with {PREPARE_HINT.format(data_dir)}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise GigaGPTError(f"{path} is corrupt (not JSON); re-create it with {PREPARE_HINT.format(data_dir)}") from e


def load_tokens(data_dir, split) -> np.memmap:
    """data_dir/{split}.bin as a read-only uint16 memmap, checked against meta.json."""
    data_dir = Path(data_dir)
    if split not in ("train", "val"):
        raise GigaGPTError(f"split must be 'train' or 'val', got {split!r}")
    meta, path = load_meta(data_dir), data_dir / f"{split}.bin"
    redo = f"re-create it with {PREPARE_HINT.format(data_dir)}"
    if not path.is_file():
        raise GigaGPTError(f"{path} not found; {redo}")
    size = path.stat().st_size
    if size % 2 or size // 2 != meta.get(f"{split}_tokens") or size == 0:
        raise GigaGPTError(f"{path} is corrupt: {size} bytes, but meta.json says "
                           f"{meta.get(f'{split}_tokens')} uint16 tokens; {redo}")
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    # Reading every token of a 17 GB file is too slow here; ~4k evenly spaced ones catch a wrong file.
    sample = tokens[:: max(1, len(tokens) // 4096)]
    if sample.max() >= meta.get("vocab_size", 2**16):
        raise GigaGPTError(f"{path} is corrupt: token id {sample.max()} >= vocab_size {meta['vocab_size']}; {redo}")
    return tokens


def get_batch(tokens, batch_size: int, seq_len: int, rng: np.random.Generator):
    """batch_size random windows of tokens: inputs x and next-token targets y, int64 tensors (B, T)."""
    if len(tokens) < seq_len + 1:
        raise GigaGPTError(f"only {len(tokens)} tokens, need at least sequence_length + 1 = {seq_len + 1}; "
                           f"use a shorter sequence_length or more data")
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    # One fancy-index gather of all B windows (T+1 long: y is x shifted by one), then one uint16 -> int64
    # copy each for x and y (contiguous, as .view() needs): 2-4x faster than nanoGPT's loop over rows.
    windows = tokens[starts[:, None] + np.arange(seq_len + 1)]
    return torch.from_numpy(windows[:, :-1].astype(np.int64)), torch.from_numpy(windows[:, 1:].astype(np.int64))
