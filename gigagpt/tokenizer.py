"""Tokenizers: GPT-2's byte-level BPE (offline, from the shipped ranks file) and a character-level one.

    enc = get_encoding("gpt2")                 # tiktoken.Encoding, identical to tiktoken's "gpt2"
    enc = get_encoding("char", chars=text)     # vocabulary = sorted set of the characters of `text`
    enc.encode("Hello world"), enc.decode(ids), enc.n_vocab, enc.eot_token
"""

import base64
import functools
import hashlib
from pathlib import Path

import tiktoken

from gigagpt.errors import GigaGPTError
from gigagpt.shipped import GPT2_SHA256

GPT2_RANKS = Path(__file__).with_name("gpt2.tiktoken")  # "<base64 token bytes> <rank>" per line
# GPT-2's pre-tokenizer (from its encoder.py) splits text into contractions, words, numbers, punctuation
# runs and whitespace; BPE merges never cross these pieces, so they must match GPT-2's exactly.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
# The 65 characters of data/tinyshakespeare.txt (a test checks this), so "char" works without the corpus.
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ENCODINGS = ("gpt2", "char")


class CharTokenizer:
    """One token per character, as nanoGPT's shakespeare_char. No end-of-text token."""

    name = "char"
    eot_token = None

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))  # sorted: the same text always gives the same ids
        if not self.chars:
            raise GigaGPTError("char tokenizer needs at least one character")
        self.n_vocab = len(self.chars)
        self._ids = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise GigaGPTError(f"character {e.args[0]!r} is not in this char vocabulary of {self.n_vocab} "
                               f"characters; prepare your text with `gigagpt prepare FILE --tokenizer char`") from e

    encode_ordinary = encode  # tiktoken's names too, so data.py treats both tokenizers alike

    def encode_ordinary_batch(self, texts, num_threads=None) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids) -> str:
        ids = list(ids)
        bad = [i for i in ids if not 0 <= i < self.n_vocab]
        if bad:
            raise GigaGPTError(f"token id {bad[0]} is outside this char vocabulary (0..{self.n_vocab - 1})")
        return "".join(self.chars[i] for i in ids)

    def __repr__(self):
        return f"CharTokenizer(n_vocab={self.n_vocab})"


@functools.lru_cache(maxsize=None)
def _gpt2() -> tiktoken.Encoding:
    """Build GPT-2's encoding from the shipped ranks file; tiktoken.get_encoding("gpt2") would download."""
    try:
        raw = GPT2_RANKS.read_bytes()
    except OSError as e:
        raise GigaGPTError(f"cannot read {GPT2_RANKS} ({e.strerror}); restore it with "
                           f"`git checkout -- gigagpt/gpt2.tiktoken` or reinstall gigagpt") from e
    if hashlib.sha256(raw).hexdigest() != GPT2_SHA256:
        raise GigaGPTError(f"{GPT2_RANKS} is corrupt (sha256 mismatch); restore it with "
                           f"`git checkout -- gigagpt/gpt2.tiktoken` or reinstall gigagpt")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines())}
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


def get_encoding(name: str = "gpt2", chars=None):
    """"gpt2" -> tiktoken.Encoding (cached); "char" -> CharTokenizer over `chars` (default: tiny Shakespeare's)."""
    if name == "gpt2":
        return _gpt2()
    if name == "char":
        return CharTokenizer(SHAKESPEARE_CHARS if chars is None else chars)
    raise GigaGPTError(f"unknown tokenizer {name!r}; choose one of: {', '.join(ENCODINGS)}")


def encoding_from_meta(meta: dict):
    """Rebuild the tokenizer a dataset was prepared with, from its meta.json contents."""
    if "tokenizer" not in meta:
        raise GigaGPTError("meta.json has no 'tokenizer' entry; re-run `gigagpt prepare`")
    enc = get_encoding(meta["tokenizer"], meta.get("chars"))
    if meta.get("vocab_size", enc.n_vocab) != enc.n_vocab:
        raise GigaGPTError(f"meta.json says vocab_size {meta['vocab_size']} but tokenizer "
                           f"{meta['tokenizer']!r} has {enc.n_vocab} tokens; re-run `gigagpt prepare`")
    return enc
