"""Notebook 02's checks (gigagpt.course.building): each passes the reference, says [todo] for the stub the
learners' notebook ships, and rejects classic mistakes with the hint a learner needs."""
import math

import pytest
import torch
import torch.nn.functional as F

from gigagpt.course import building as check


def stub(*args):
    raise NotImplementedError()


def verdict(capsys, check_fn, fn):
    """(the one line the check printed, what it returned)."""
    returned = check_fn(fn)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0], returned


NAMES = ["attention", "gelu_tanh", "layer_norm", "param_count", "initial_loss"]


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_and_is_returned(capsys, name):
    reference = getattr(check, f"reference_{name}")
    line, returned = verdict(capsys, getattr(check, name), reference)
    assert line == f"[pass] {name}"
    assert returned is reference


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_todo_and_the_notebook_goes_on_with_the_reference(capsys, name):
    line, returned = verdict(capsys, getattr(check, name), stub)
    assert line.startswith(f"[todo] {name}: ")
    assert returned is getattr(check, f"reference_{name}")


def test_a_learner_function_that_passes_is_returned(capsys):
    def mine(vocab_size, sigma):
        return math.log(vocab_size) + sigma**2 / 2

    line, returned = verdict(capsys, check.initial_loss, mine)
    assert line == "[pass] initial_loss" and returned is mine


# --- attention: hand-written mistakes, not the check's own variants ----------------------------------------------

def attention_by_hand(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads, mask=True, scale=True, detach=False):
    B, T, C = x.shape
    q, k, v = (x @ qkv_weight.T + qkv_bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(C // heads)
    if mask:
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    y = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, C)
    y = y @ proj_weight.T + proj_bias
    return y.detach() if detach else y


def test_attention_by_hand_passes(capsys):
    assert verdict(capsys, check.attention, attention_by_hand)[0] == "[pass] attention"


@pytest.mark.parametrize("mistake, hint", [
    ({"mask": False}, "[fail] attention: position 0 attends to position 1 (its output changes when the input at 1 "
                      "does): the causal mask is missing"),
    ({"scale": False}, "[fail] attention: the scores are too large by a factor sqrt(head_dim) = sqrt(12)"),
    ({"detach": True}, "[fail] attention: the output carries no gradient"),
])
def test_attention_mistakes(capsys, mistake, hint):
    line, returned = verdict(capsys, check.attention, lambda *a: attention_by_hand(*a, **mistake))
    assert line.startswith(hint), line
    assert returned is check.reference_attention


def test_attention_mask_on_the_wrong_side(capsys):
    def future_only(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
        B, T, C = x.shape
        q, k, v = (x @ qkv_weight.T + qkv_bias).split(C, dim=-1)
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // heads)
        scores = scores.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool), -1), float("-inf"))
        return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, C) @ proj_weight.T + proj_bias

    line, _ = verdict(capsys, check.attention, future_only)
    assert line.startswith("[fail] attention: position 0 attends to position 1"), line


def test_attention_mask_after_the_softmax(capsys):
    def zeroed_after(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
        B, T, C = x.shape
        q, k, v = (x @ qkv_weight.T + qkv_bias).split(C, dim=-1)
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // heads), -1) * torch.tril(torch.ones(T, T))
        return (weights @ v).transpose(1, 2).reshape(B, T, C) @ proj_weight.T + proj_bias

    line, _ = verdict(capsys, check.attention, zeroed_after)
    assert line.startswith("[fail] attention: the mask is applied after the softmax"), line


def test_attention_heads_reshaped_without_transpose(capsys):
    def straight_reshape(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
        B, T, C = x.shape
        q, k, v = (x @ qkv_weight.T + qkv_bias).split(C, dim=-1)
        q, k, v = (t.reshape(B, heads, T, C // heads) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, C) @ proj_weight.T + proj_bias

    line, _ = verdict(capsys, check.attention, straight_reshape)
    assert line.startswith("[fail] attention: the heads are cut wrongly"), line


def test_attention_mask_hiding_the_diagonal(capsys):
    def no_self(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
        B, T, C = x.shape
        q, k, v = (x @ qkv_weight.T + qkv_bias).split(C, dim=-1)
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // heads)
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
        return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, C) @ proj_weight.T + proj_bias

    line, _ = verdict(capsys, check.attention, no_self)
    assert line.startswith("[fail] attention: output[0, 0, 0] is nan: a row of scores is all -inf"), line


# --- GELU ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2))), "[fail] gelu_tanh: this is the exact GELU"),
    (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x)), "[fail] gelu_tanh: the cubic term is missing"),
    (lambda x: 0.5 * x * (1 + torch.tanh(2 / math.pi * (x + 0.044715 * x**3))),
     "[fail] gelu_tanh: the factor inside tanh is sqrt(2/π)"),
    (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.0447 * x**3))),
     "[fail] gelu_tanh: gelu_tanh(-1.85) is -0.0595265, expected -0.0595178"),
    (lambda x: torch.tensor([0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
                             for v in x.tolist()], dtype=x.dtype), "[fail] gelu_tanh: the output carries no gradient"),
])
def test_gelu_tanh_mistakes(capsys, wrong, hint):
    line, returned = verdict(capsys, check.gelu_tanh, wrong)
    assert line.startswith(hint), line
    assert returned is check.reference_gelu_tanh


# --- LayerNorm ----------------------------------------------------------------------------------------------------

def layer_norm_by_hand(x, weight, bias, eps, unbiased=False, eps_outside=False):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=unbiased)
    return (x - mean) / (var.sqrt() + eps if eps_outside else torch.sqrt(var + eps)) * weight + bias


def test_layer_norm_by_hand_passes(capsys):
    assert verdict(capsys, check.layer_norm, layer_norm_by_hand)[0] == "[pass] layer_norm"


@pytest.mark.parametrize("mistake, hint", [
    ({"unbiased": True}, "[fail] layer_norm: you divided the variance by C − 1 (torch.var's default, unbiased=True)"),
    ({"eps_outside": True}, "[fail] layer_norm: eps goes inside the square root"),
])
def test_layer_norm_mistakes(capsys, mistake, hint):
    line, _ = verdict(capsys, check.layer_norm, lambda *a: layer_norm_by_hand(*a, **mistake))
    assert line.startswith(hint), line


# --- parameter count ----------------------------------------------------------------------------------------------

def count(c, head_twice=False, ignore_bias=False, positions=True):
    C, L, bias = c.width, c.depth, True if ignore_bias else c.bias  # ignore_bias: biases always
    vectors = 13 * C if bias else 2 * C
    total = L * (12 * C * C + vectors) + (2 * C if bias else C) + c.padded_vocab_size * C
    return total + (c.max_position_embeddings * C if positions else 0) + (c.padded_vocab_size * C if head_twice else 0)


def test_param_count_by_hand_passes(capsys):
    assert verdict(capsys, check.param_count, count)[0] == "[pass] param_count"


@pytest.mark.parametrize("mistake, hint", [
    ({"head_twice": True}, "[fail] param_count: this notebook's small model (width 64, depth 2, bias=True): you "
                           "counted the tied LM head twice: 3,216,448 too many"),
    ({"ignore_bias": True}, "[fail] param_count: GPT-2 small with bias=False (width 768, depth 12, bias=False): with "
                            "bias=False there are no biases, neither in the linear layers nor in the LayerNorms: "
                            "102,144 too many"),
    ({"positions": False}, "[fail] param_count: this notebook's small model (width 64, depth 2, bias=True): the "
                           "position embeddings (max_position_embeddings × width = 4,096) are missing"),
])
def test_param_count_mistakes(capsys, mistake, hint):
    line, _ = verdict(capsys, check.param_count, lambda c: count(c, **mistake))
    assert line.startswith(hint), line


def test_param_count_of_gpt2_small_head_twice_is_the_embedding(capsys):
    """The hint's number for GPT-2 small is V·C = 38,597,376: what the notebook's prose says the tie saves."""
    gpt2 = check.PARAM_COUNT_CASES["GPT-2 small"]

    def twice_for_gpt2_only(c):
        return count(c, head_twice=c is gpt2)

    line, _ = verdict(capsys, check.param_count, twice_for_gpt2_only)
    assert "you counted the tied LM head twice: 38,597,376 too many" in line, line


def test_param_count_wants_a_whole_number(capsys):
    line, _ = verdict(capsys, check.param_count, lambda c: count(c) / 1e6)
    assert line.startswith("[fail] param_count: this notebook's small model: return a whole number"), line


# --- the untrained model's loss -----------------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda V, s: math.log(V), "[fail] initial_loss: V = 50,257, σ = 0.25: you returned ln V, right only for σ = 0"),
    (lambda V, s: math.log(V) + s**2, "[fail] initial_loss: V = 50,257, σ = 0.25: the σ term is twice too big"),
    (lambda V, s: math.log2(V) + s**2 / 2, "[fail] initial_loss: V = 65, σ = 0.0: the loss is in nats"),
    (lambda V, s: 1 / V, "[fail] initial_loss: V = 65, σ = 0.0: that is the probability 1/V"),
    (lambda V, s: math.log(V) + 0.1, "[fail] initial_loss: initial loss for V = 65, σ = 0.0 is 4.27439: 2% too high"),
])
def test_initial_loss_mistakes(capsys, wrong, hint):
    line, _ = verdict(capsys, check.initial_loss, wrong)
    assert line == hint or line.startswith(hint), line


def test_initial_loss_formula_matches_a_measured_cross_entropy():
    """The reference is what it claims: N(0, σ²) logits give log Σ exp = ln V + σ²/2 (tightly, V is large) and a
    target logit of mean 0, so a cross-entropy within sampling error of the formula."""
    g = torch.Generator().manual_seed(0)
    V, sigma, rows = 50257, 0.5, 256
    logits = torch.randn(rows, V, generator=g) * sigma
    targets = torch.randint(0, V, (rows,), generator=g)
    want = check.reference_initial_loss(V, sigma)
    assert torch.logsumexp(logits, -1).mean().item() == pytest.approx(want, abs=0.005)
    assert F.cross_entropy(logits, targets).item() == pytest.approx(want, abs=4 * sigma / math.sqrt(rows))
