from pathlib import Path

import pytest

from gigagpt import tokenizer
from gigagpt.errors import GigaGPTError
from gigagpt.tokenizer import encoding_from_meta, get_encoding

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def test_gpt2_matches_known_ids():
    enc = get_encoding("gpt2")
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode(" the\n") == [262, 198]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert enc.encode_ordinary("<|endoftext|>") != [50256]  # in plain text it is just characters
    assert get_encoding("gpt2") is enc  # built once, then cached


def test_gpt2_round_trips_any_text():
    enc = get_encoding("gpt2")
    text = "  Hello\n\n\tworld  it's 1234 ünïcödé 日本語 🙂 \r\n"
    assert enc.decode(enc.encode(text)) == text


@pytest.fixture
def ranks_file(monkeypatch, tmp_path):
    """Point the loader at a temp copy of the ranks file; the cache is cleared before and after."""
    path = tmp_path / "gpt2.tiktoken"
    path.write_bytes(tokenizer.GPT2_RANKS.read_bytes())
    monkeypatch.setattr(tokenizer, "GPT2_RANKS", path)
    tokenizer._gpt2.cache_clear()
    yield path
    tokenizer._gpt2.cache_clear()


def test_corrupt_ranks_file_is_refused(ranks_file):
    ranks_file.write_bytes(ranks_file.read_bytes()[:-10])
    with pytest.raises(GigaGPTError, match="corrupt.*git checkout -- gigagpt/gpt2.tiktoken"):
        get_encoding("gpt2")


def test_missing_ranks_file_is_refused(ranks_file):
    ranks_file.unlink()
    with pytest.raises(GigaGPTError, match="cannot read .*restore it"):
        get_encoding("gpt2")


def test_char_default_is_tiny_shakespeare_vocabulary():
    enc = get_encoding("char")
    assert enc.n_vocab == 65 and enc.eot_token is None
    assert enc.chars == "".join(sorted(set(SHAKESPEARE.read_text())))
    assert enc.encode("\n ") == [0, 1] and enc.encode("z") == [64]
    assert enc.decode(enc.encode("First Citizen:\nHello!")) == "First Citizen:\nHello!"


def test_char_vocabulary_from_text_is_sorted_set():
    enc = get_encoding("char", chars="hello")
    assert enc.chars == "ehlo" and enc.n_vocab == 4
    assert enc.encode("hole") == [1, 3, 2, 0]


def test_char_errors():
    enc = get_encoding("char")
    with pytest.raises(GigaGPTError, match="character 'é' is not in this char vocabulary of 65"):
        enc.encode("café")
    with pytest.raises(GigaGPTError, match="token id 65 is outside"):
        enc.decode([0, 65])
    with pytest.raises(GigaGPTError, match="token id -1 is outside"):
        enc.decode([-1])
    with pytest.raises(GigaGPTError, match="at least one character"):
        get_encoding("char", chars="")


def test_unknown_tokenizer_lists_choices():
    with pytest.raises(GigaGPTError, match="unknown tokenizer 'bpe'; choose one of: gpt2, char"):
        get_encoding("bpe")


def test_encoding_from_meta():
    assert encoding_from_meta({"tokenizer": "gpt2", "vocab_size": 50257}) is get_encoding("gpt2")
    enc = encoding_from_meta({"tokenizer": "char", "vocab_size": 3, "chars": "abc"})
    assert enc.decode([2, 0]) == "ca"
    with pytest.raises(GigaGPTError, match="vocab_size 4 but tokenizer 'char' has 3"):
        encoding_from_meta({"tokenizer": "char", "vocab_size": 4, "chars": "abc"})
    with pytest.raises(GigaGPTError, match="no 'tokenizer'"):
        encoding_from_meta({})
