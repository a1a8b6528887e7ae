"""Notebook 01's exercise checks (gigagpt/course/tokenization.py): each reference passes, an unwritten stub is
[todo], and a classic mistake is [fail] with the hint that points at it. Also: the references are right
(the BPE encoder against tiktoken, the gradient against autograd, get_batch's reference is data.get_batch)."""
import math
from collections import Counter

import numpy as np
import pytest
import regex
import torch
import torch.nn.functional as F

from gigagpt import data
from gigagpt.course import tokenization as check
from gigagpt.tokenizer import GPT2_PATTERN, get_encoding

CHECKS = ["bpe_encode", "train_bpe", "bits_per_character", "cross_entropy_grad", "get_batch"]


def verdict(capsys, check_fn, fn):
    """(the one line the check printed, what it returned)"""
    returned = check_fn(fn)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return lines[0], returned


@pytest.mark.parametrize("name", CHECKS)
def test_reference_passes(capsys, name):
    check_fn = getattr(check, name)
    line, returned = verdict(capsys, check_fn, check_fn.reference)
    assert line == f"[pass] {name}" and returned is check_fn.reference


@pytest.mark.parametrize("name", CHECKS)
def test_stub_is_todo_and_carries_on_with_the_reference(capsys, name):
    def stub(*args):
        raise NotImplementedError()

    check_fn = getattr(check, name)
    line, returned = verdict(capsys, check_fn, stub)
    assert line.startswith(f"[todo] {name}: ") and returned is check_fn.reference


def test_a_learner_answer_that_passes_is_returned(capsys):
    def mine(loss, tokens, characters):
        return loss / math.log(2) * tokens / characters

    line, returned = verdict(capsys, check.bits_per_character, mine)
    assert line == "[pass] bits_per_character" and returned is mine


# ---- the references are right ----

def test_encode_piece_is_tiktokens_gpt2():
    enc = get_encoding("gpt2")
    ranks = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i != enc.eot_token}
    text = check.CORPUS.read_text(encoding="utf-8")[:20_000] + " naïve 🌹 東京 It's 2024!"
    ids = [i for piece in regex.findall(GPT2_PATTERN, text) for i in check.encode_piece(piece.encode(), ranks)]
    assert ids == enc.encode_ordinary(text)


def test_learn_merges_on_small_texts():
    assert check.learn_merges("ab ab cd cd", 3) == [(b" ", b"c"), (b" c", b"d"), (b"a", b"b")]
    assert check.learn_merges("aaaa aaa", 2) == [(b"a", b"a"), (b" ", b"aa")]  # (aa, aa), not (a, aa, a)
    assert check.learn_merges("ab", 5) == [(b"a", b"b")]  # stops when no pair is left
    merges = check.learn_merges(check.CORPUS.read_text(encoding="utf-8")[:20_000], 20)
    assert merges[0] == (b" ", b"t") and len(merges) == 20


def test_softmax_cross_entropy_grad_is_autograds():
    logits = torch.randn(6, 11, requires_grad=True)
    targets = torch.randint(0, 11, (6,))
    F.cross_entropy(logits, targets).backward()
    torch.testing.assert_close(check.softmax_cross_entropy_grad(logits.detach(), targets), logits.grad)


def test_get_batch_reference_is_the_packages():
    assert check.get_batch.reference is data.get_batch


# ---- a classic mistake each, and the hint it gets ----

def leftmost_first(piece, ranks):
    """Merges the first adjacent pair that is in the table, ignoring the ranks."""
    parts = [bytes([b]) for b in piece]
    merged = True
    while merged:
        merged = False
        for i in range(len(parts) - 1):
            if parts[i] + parts[i + 1] in ranks:
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
                merged = True
                break
    return [ranks[p] for p in parts]


def byte_values_as_ids(piece, ranks):
    """Right merges, but a single byte's id taken to be its value."""
    vocab = {i: token for token, i in ranks.items()}
    return [vocab[i][0] if len(vocab[i]) == 1 else i for i in check.encode_piece(piece, ranks)]


def test_bpe_encode_hints(capsys):
    line, _ = verdict(capsys, check.bpe_encode, leftmost_first)
    assert line.startswith("[fail] bpe_encode: with GPT-2's ranks, b'First' encodes to [10547, 3808, 83] = "
                           "[b'Fi', b'rs', b't'], expected [5962] = [b'First']: merge the adjacent pair whose")
    line, _ = verdict(capsys, check.bpe_encode, byte_values_as_ids)
    assert line == ("[fail] bpe_encode: bpe_encode(b':') gives id 58 for the byte b':', whose id is ranks[b':'] = "
                    "25: look every part up in ranks, single bytes too")


def bpe_variant(pretokenize=True, tie_break=True, weighted=True):
    """train_bpe with one of the classic mistakes switched on."""

    def train(text, n_merges):
        if pretokenize:
            words = check.pieces_of(text)
        else:
            words = Counter({tuple(bytes([b]) for b in text.encode()): 1})
        if not weighted:
            words = Counter(dict.fromkeys(words, 1))
        merges = []
        for _ in range(n_merges):
            pairs = check.pair_counts(words)
            if not pairs:
                break
            best = min(pairs, key=lambda p: (-pairs[p], p)) if tie_break else max(pairs, key=pairs.get)
            merges.append(best)
            words = Counter({check._merge(word, best): n for word, n in words.items()})
        return merges

    return train


def test_train_bpe_hints(capsys):
    line, _ = verdict(capsys, check.train_bpe, bpe_variant(pretokenize=False))
    assert line == ("[fail] train_bpe: merge 0 is (b'e', b' '), a pair that never occurs inside one pre-tokenized "
                    "piece: count pairs within the pieces of regex.findall(GPT2_PATTERN, text), never across two of "
                    "them (on the first 10,000 characters of tiny Shakespeare, 30 merges)")
    line, _ = verdict(capsys, check.train_bpe, bpe_variant(tie_break=False))
    assert line.startswith("[fail] train_bpe: merge 8: (b'i', b't') and (b' ', b's') are equally frequent (96 times); "
                           "break ties by taking the smaller pair")
    line, _ = verdict(capsys, check.train_bpe, bpe_variant(weighted=False))
    assert line.startswith("[fail] train_bpe: merge 0 is (b'e', b'r'), which occurs 91 times before any merge, but "
                           "(b' ', b't') occurs 240 times: merge the most frequent pair")


def test_train_bpe_shape_hints(capsys):
    line, _ = verdict(capsys, check.train_bpe, lambda text, n: [a + b for a, b in check.learn_merges(text, n)])
    assert line.startswith("[fail] train_bpe: merge 0 is b' t': each merge should be a tuple of two bytes objects")
    line, _ = verdict(capsys, check.train_bpe, lambda text, n: check.learn_merges(text, n)[:-1])
    assert line.startswith("[fail] train_bpe: train_bpe(text, 30) returned 29 merges, expected 30 (on the first")


def test_train_bpe_right_to_left_merge_hint(capsys):
    def right_to_left(word, pair):  # (a, a, a) -> (a, aa) instead of (aa, a)
        out, i = [], len(word)
        while i > 0:
            if i >= 2 and word[i - 2:i] == pair:
                out.insert(0, pair[0] + pair[1])
                i -= 2
            else:
                out.insert(0, word[i - 1])
                i -= 1
        return tuple(out)

    def train(text, n_merges):
        words, merges = check.pieces_of(text), []
        for _ in range(n_merges):
            pairs = check.pair_counts(words)
            if not pairs:
                break
            best = min(pairs, key=lambda p: (-pairs[p], p))
            merges.append(best)
            words = Counter({right_to_left(word, best): n for word, n in words.items()})
        return merges

    line, _ = verdict(capsys, check.train_bpe, train)
    assert line == ("[fail] train_bpe: merge 1 is (b' ', b'a'), but after merges 0..0 the pieces hold no such pair: in "
                    "every piece, merge each occurrence of the chosen pair from left to right (a, a, a -> aa, a) "
                    "(on 'aaaa aaa', 4 merges)")


def test_bits_per_character_hints(capsys):
    line, _ = verdict(capsys, check.bits_per_character, lambda loss, tokens, chars: loss * tokens / chars)
    assert line == ("[fail] bits_per_character: bits_per_character(1.5, 1,000 tokens, 1,000 characters) is in nats, "
                    "not bits: 1 nat is 1/ln(2) = 1.443 bits")
    line, _ = verdict(capsys, check.bits_per_character, lambda loss, tokens, chars: loss * chars / tokens / math.log(2))
    assert line == ("[fail] bits_per_character: bits_per_character(4.2, 300 tokens, 1,000 characters) is too high: "
                    "the loss is per token, so multiply by tokens per character (= 300 / 1,000), not characters "
                    "per token")
    line, _ = verdict(capsys, check.bits_per_character, lambda loss, tokens, chars: loss * tokens / chars / 0.6)
    assert line == "[fail] bits_per_character: bits_per_character(1.5, 1,000 tokens, 1,000 characters) is 2.5: 16% too high"
    assert "2.16" not in line  # how far off, never the answer (1.5 / ln 2 = 2.164)


def test_cross_entropy_grad_hints(capsys):
    line, _ = verdict(capsys, check.cross_entropy_grad, lambda z, y: (z.softmax(-1) - F.one_hot(y, z.size(-1))))
    assert line == ("[fail] cross_entropy_grad: your gradient is 5 times autograd's: the loss is the MEAN over the "
                    "5 rows: divide by N")
    line, _ = verdict(capsys, check.cross_entropy_grad, lambda z, y: z.softmax(-1) / len(y))
    assert line.startswith("[fail] cross_entropy_grad: row 0 of your gradient sums to 0.2; every row should sum to 0")
    line, _ = verdict(capsys, check.cross_entropy_grad, lambda z, y: (F.one_hot(y, z.size(-1)) - z.softmax(-1)) / len(y))
    assert line.endswith("the sign is flipped: the gradient is softmax minus one-hot")


def windows(tokens, batch_size, seq_len, starts, shift=1, dtype=np.int64):
    x = np.stack([tokens[s:s + seq_len] for s in starts]).astype(dtype)
    y = np.stack([tokens[s + shift:s + shift + seq_len] for s in starts]).astype(dtype)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_get_batch_hints(capsys):
    def not_shifted(tokens, batch_size, seq_len, rng):
        return windows(tokens, batch_size, seq_len, rng.integers(0, len(tokens) - seq_len, size=batch_size), shift=0)

    def off_by_one_high(tokens, batch_size, seq_len, rng):
        return windows(tokens, batch_size, seq_len, rng.integers(0, len(tokens) - seq_len - 1, size=batch_size))

    def int32(tokens, batch_size, seq_len, rng):
        starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
        return windows(tokens, batch_size, seq_len, starts, dtype=np.int32)

    line, _ = verdict(capsys, check.get_batch, not_shifted)
    assert line == ("[fail] get_batch: y is not x shifted by one: y[0, 0] is 843, but the token after x[0, 0] = 843 "
                    "is 844 (y[b, t] = tokens[start + t + 1])")
    line, _ = verdict(capsys, check.get_batch, off_by_one_high)
    assert line == ("[fail] get_batch: row 0 starts at token 842, expected 843 for the same rng: draw all starts with "
                    "one call, rng.integers(0, len(tokens) - seq_len, size=batch_size)")
    line, _ = verdict(capsys, check.get_batch, int32)
    assert line.startswith("[fail] get_batch: x has dtype torch.int32; embedding lookups and cross-entropy want int64")


def test_a_learner_error_is_reported_not_raised(capsys):
    line, returned = verdict(capsys, check.train_bpe, lambda text, n: text.no_such_method())
    assert line.startswith("[fail] train_bpe: your code raised AttributeError") and returned is check.learn_merges
