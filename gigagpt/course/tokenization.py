"""Notebook 01's exercise checks (tokenization), and the references the notebook carries on with.

    from gigagpt.course import tokenization as check
    bpe_encode = check.bpe_encode(my_bpe_encode)    # prints [pass] / [fail] ... / [todo] ...

| check | the learner writes | checked against |
|---|---|---|
| bpe_encode | encode one pre-tokenized piece with a rank table | tiktoken's GPT-2 ids (via `encode_piece`) |
| train_bpe | learn byte-level BPE merges from text | `learn_merges`, merge by merge |
| bits_per_character | a loss in nats per token -> bits per character | `to_bits_per_character` |
| cross_entropy_grad | d(mean cross-entropy)/d(logits) | torch autograd |
| get_batch | random windows x and y = x shifted by one | `gigagpt.data.get_batch`, same rng |
"""
import math
from collections import Counter
from pathlib import Path

import numpy as np
import regex
import torch
import torch.nn.functional as F

from gigagpt import data
from gigagpt.course import Wrong, compare, exercise
from gigagpt.shipped import SHAKESPEARE_PATH
from gigagpt.tokenizer import GPT2_PATTERN, get_encoding

CORPUS = Path(__file__).resolve().parents[2] / SHAKESPEARE_PATH


# ---- references: what each check compares with, and what the notebook goes on with after [todo]/[fail] ----

def encode_piece(piece: bytes, ranks: dict) -> list[int]:
    """BPE-encode one pre-tokenized piece: start from its bytes, repeatedly merge the adjacent pair whose
    merged bytes have the lowest rank, until no adjacent pair is in `ranks`; the ids are the parts' ranks."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        rank, i = min((ranks.get(a + b, math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
        if rank == math.inf:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def _merge(word: tuple, pair: tuple) -> tuple:
    """`word` (a tuple of tokens) with every occurrence of `pair` merged, left to right, not overlapping."""
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def pieces_of(text: str) -> Counter:
    """How often each pre-tokenized piece of `text` occurs, each piece as a tuple of single bytes."""
    return Counter(tuple(bytes([b]) for b in piece.encode("utf-8")) for piece in regex.findall(GPT2_PATTERN, text))


def pair_counts(words: Counter) -> Counter:
    """Adjacent pairs within each piece, weighted by how often the piece occurs."""
    pairs = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    return pairs


def learn_merges(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """Byte-level BPE training: n_merges times, merge the most frequent adjacent pair (ties: the smallest
    pair, comparing bytes) within GPT-2's pre-tokenized pieces. Fewer merges if no pair is left."""
    words, merges = pieces_of(text), []
    for _ in range(n_merges):
        pairs = pair_counts(words)
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = Counter({_merge(word, best): n for word, n in words.items()})
    return merges


def to_bits_per_character(loss_nats_per_token: float, n_tokens: int, n_characters: int) -> float:
    """Cross-entropy in nats per token -> bits per character of the text those tokens encode."""
    return loss_nats_per_token * n_tokens / n_characters / math.log(2)


def softmax_cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d F.cross_entropy(logits, targets) / d logits (the mean over N rows): (softmax - one-hot) / N."""
    grad = logits.softmax(dim=-1)
    grad[torch.arange(len(targets)), targets] -= 1
    return grad / len(targets)


# ---- checks ----

def _tokens(ids, vocab):
    return [vocab.get(i, f"<id {i}?>") for i in ids]


@exercise("bpe_encode", encode_piece)
def bpe_encode(fn):
    enc = get_encoding("gpt2")
    gpt2 = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i != enc.eot_token}
    toy = {bytes([b]): b for b in range(256)} | {b"bc": 256, b"ab": 257}  # "abc": bc first, by rank
    text = CORPUS.read_text(encoding="utf-8")[:3000] + " naïve 🌹 東京 wherefore"
    cases = [(piece.encode("utf-8"), gpt2) for piece in dict.fromkeys(regex.findall(GPT2_PATTERN, text))]
    for piece, ranks in cases + [(b"abc", toy), (b"xabcabc", toy)]:
        got, want = fn(piece, ranks), encode_piece(piece, ranks)
        if not isinstance(got, list) or not all(isinstance(i, int) for i in got):
            raise Wrong(f"bpe_encode({piece!r}, ranks) should return a list of int ids, got {got!r:.80}")
        if got == want:
            continue
        vocab = {i: b for b, i in ranks.items()}
        name = "GPT-2's ranks" if ranks is gpt2 else "the ranks {b'bc': 256, b'ab': 257, single bytes: their value}"
        byte_ids = [i for i in got if i < 256 and bytes([i]) in piece and ranks[bytes([i])] != i]
        if b"".join(vocab.get(i, b"?") for i in got) != piece and byte_ids:
            b = bytes([byte_ids[0]])
            raise Wrong(f"bpe_encode({piece!r}) gives id {byte_ids[0]} for the byte {b!r}, whose id is "
                        f"ranks[{b!r}] = {ranks[b]}: look every part up in ranks, single bytes too")
        raise Wrong(f"with {name}, {piece!r} encodes to {got} = {_tokens(got, vocab)}, expected "
                    f"{want} = {_tokens(want, vocab)}: merge the adjacent pair whose merged bytes have the "
                    f"LOWEST rank, one pair at a time, until no adjacent pair is in ranks")


def _diagnose_merge(text, i, got, want_merges):
    """Why the learner's merge number i (got) is not want_merges[i]: a hint about counting or tie-breaking."""
    if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(t, bytes) for t in got)):
        return f"merge {i} is {got!r:.60}: each merge should be a tuple of two bytes objects, like (b' ', b't')"
    words = pieces_of(text)
    for pair in want_merges[:i]:
        words = Counter({_merge(word, pair): n for word, n in words.items()})
    pairs, want = pair_counts(words), want_merges[i]
    after = f"after merges 0..{i - 1}" if i else "before any merge"
    if pairs[got] == 0:
        if not any(got[0] + got[1] in b"".join(word) for word in words):
            return (f"merge {i} is {got}, a pair that never occurs inside one pre-tokenized piece: count pairs "
                    f"within the pieces of regex.findall(GPT2_PATTERN, text), never across two of them")
        return (f"merge {i} is {got}, but {after} the pieces hold no such pair: in every piece, merge each "
                f"occurrence of the chosen pair from left to right (a, a, a -> aa, a)")
    if pairs[got] < pairs[want]:
        return (f"merge {i} is {got}, which occurs {pairs[got]} times {after}, but {want} "
                f"occurs {pairs[want]} times: merge the most frequent pair (count each piece as often as it "
                f"occurs in the text)")
    return (f"merge {i}: {got} and {want} are equally frequent ({pairs[want]} times); break ties by taking "
            f"the smaller pair, comparing bytes: min(tied pairs)")


@exercise("train_bpe", learn_merges)
def train_bpe(fn):
    cases = [(CORPUS.read_text(encoding="utf-8")[:10_000], 30),
             ("ab ab cd cd", 3),  # a three-way tie first
             ("aaaa aaa", 4)]  # overlapping pairs: "aaaa" -> (aa, aa), not (a, aa, a)
    for text, n in cases:
        got, want = fn(text, n), learn_merges(text, n)
        where = f"on {text!r}" if len(text) < 40 else f"on the first {len(text):,} characters of tiny Shakespeare"
        if not isinstance(got, (list, tuple)):
            raise Wrong(f"train_bpe should return a list of (bytes, bytes) pairs, got {type(got).__name__}")
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise Wrong(_diagnose_merge(text, i, g, want) + f" ({where}, {n} merges)")
        if len(got) != len(want):
            raise Wrong(f"train_bpe(text, {n}) returned {len(got)} merges, expected {len(want)} ({where}): "
                        f"stop after n_merges, or earlier only when no adjacent pair is left")


@exercise("bits_per_character", to_bits_per_character)
def bits_per_character(fn):
    for loss, tokens, chars in [(1.5, 1000, 1000), (4.2, 300, 1000), (10.8, 2_000, 7_000)]:
        got, want = fn(loss, tokens, chars), to_bits_per_character(loss, tokens, chars)
        what = f"bits_per_character({loss}, {tokens:,} tokens, {chars:,} characters)"
        if isinstance(got, (int, float)) and want and not isinstance(got, bool):
            ratio = got / want
            if math.isclose(ratio, math.log(2), rel_tol=1e-3):
                raise Wrong(f"{what} is in nats, not bits: 1 nat is 1/ln(2) = 1.443 bits")
            if math.isclose(ratio, math.log(2) ** 2, rel_tol=1e-3):
                raise Wrong(f"{what} is ln(2)² times too small: divide nats by ln(2) to get bits, don't multiply")
            if tokens != chars and math.isclose(ratio, (chars / tokens) ** 2, rel_tol=1e-3):
                raise Wrong(f"{what} is too high: the loss is per token, so multiply by tokens per character "
                            f"(= {tokens:,} / {chars:,}), not characters per token")
        compare(what, got, want, atol=1e-9, rtol=1e-6)


@exercise("cross_entropy_grad", softmax_cross_entropy_grad)
def cross_entropy_grad(fn):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 7, generator=generator) * 2
    targets = torch.tensor([3, 0, 6, 3, 1])
    leaf = logits.clone().requires_grad_()
    F.cross_entropy(leaf, targets).backward()
    got, want = fn(logits.clone(), targets), leaf.grad
    if isinstance(got, torch.Tensor) and got.shape == want.shape:
        sums = got.detach().double().sum(dim=1)
        if sums.abs().max() > 1e-5:
            raise Wrong(f"row 0 of your gradient sums to {sums[0].item():.4g}; every row should sum to 0 "
                        f"(softmax sums to 1, minus the one-hot of the target): did you subtract the one-hot?")
        scale = (got.detach().double() * want.double()).sum() / want.double().pow(2).sum()
        for factor, hint in [(len(targets), "the loss is the MEAN over the 5 rows: divide by N"),
                             (-1.0, "the sign is flipped: the gradient is softmax minus one-hot")]:
            if math.isclose(scale.item(), factor, rel_tol=1e-3):
                raise Wrong(f"your gradient is {factor:g} times autograd's: {hint}")
    compare("gradient (5 rows x 7 logits)", got, want, atol=1e-6)


@exercise("get_batch", data.get_batch)
def get_batch(fn):
    tokens = np.arange(1000, dtype=np.uint16)  # token i sits at position i: a window shows where it starts
    B, T = 4, 8
    got = fn(tokens, B, T, np.random.default_rng(0))
    want_x, want_y = data.get_batch(tokens, B, T, np.random.default_rng(0))
    if not (isinstance(got, tuple) and len(got) == 2):
        raise Wrong(f"get_batch should return a pair (x, y), got {type(got).__name__}")
    x, y = got
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise Wrong(f"{name} should be a torch tensor, got {type(t).__name__}: use torch.from_numpy")
        if tuple(t.shape) != (B, T):
            raise Wrong(f"{name} has shape {tuple(t.shape)} for batch_size={B}, seq_len={T}; expected ({B}, {T})")
        if t.dtype != torch.int64:
            raise Wrong(f"{name} has dtype {t.dtype}; embedding lookups and cross-entropy want int64 "
                        f"(torch.long): convert with .astype(np.int64) before torch.from_numpy")
    steps = x[:, 1:] - x[:, :-1]
    if (steps != 1).any():
        b = int(torch.nonzero(steps != 1)[0, 0])
        raise Wrong(f"row {b} of x is {x[b].tolist()}: not a contiguous window of tokens (tokens[s:s + seq_len])")
    if (y != x + 1).any():
        b, t = (int(i) for i in torch.nonzero(y != x + 1)[0])
        raise Wrong(f"y is not x shifted by one: y[{b}, {t}] is {int(y[b, t])}, but the token after "
                    f"x[{b}, {t}] = {int(x[b, t])} is {int(x[b, t]) + 1} (y[b, t] = tokens[start + t + 1])")
    if (x[:, 0] != want_x[:, 0]).any():
        b = int(torch.nonzero(x[:, 0] != want_x[:, 0])[0, 0])
        raise Wrong(f"row {b} starts at token {int(x[b, 0])}, expected {int(want_x[b, 0])} for the same rng: draw "
                    f"all starts with one call, rng.integers(0, len(tokens) - seq_len, size=batch_size)")
