"""Checks for notebook 02 (building the model): attention, GPT-2's GELU, LayerNorm, parameter count, initial loss.

    from gigagpt.course import building as check
    attention = check.attention(my_attention)   # one line: [pass], [fail] with a hint, or [todo]

Each check runs the learner's function on small inputs against the package's real modules (CausalSelfAttention,
MLP, nn.LayerNorm, a GPT built on the meta device) and, when it is wrong, tries the classic mistakes one by one
to say which was made.
"""
import functools
import math

import torch
import torch.nn.functional as F

from gigagpt import scaling
from gigagpt.course import Wrong, compare, exercise
from gigagpt.model import GPT, MLP, CausalSelfAttention, GPTConfig


# --- attention --------------------------------------------------------------------------------------------------

def reference_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
    """Causal multi-head self-attention of x (B, T, C) with the weights of a CausalSelfAttention."""
    return _attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads)


def _attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads, scale="sqrt_hd", causal=True,
               diagonal=1, softmax_dim=-1, split="view_transpose", merge="transpose", project=True,
               mask_after_softmax=False):
    """The reference, and (through its options) the classic mistakes the check recognises."""
    B, T, C = x.shape
    hd = C // heads
    q, k, v = F.linear(x, qkv_weight, qkv_bias).split(C, dim=-1)
    if split == "view_transpose":
        q, k, v = (t.view(B, T, heads, hd).transpose(1, 2) for t in (q, k, v))
    else:  # (B, T, C) reshaped straight to (B, heads, T, hd): mixes positions and heads
        q, k, v = (t.reshape(B, heads, T, hd) for t in (q, k, v))
    divisor = {"sqrt_hd": math.sqrt(hd), "none": 1.0, "hd": hd, "sqrt_C": math.sqrt(C)}[scale]
    scores = q @ k.transpose(-2, -1) / divisor
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal)
    if causal and not mask_after_softmax:
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask_after_softmax:
        weights = weights.masked_fill(future, 0.0)
    y = weights @ v
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "transpose" else y.reshape(B, T, C)
    return F.linear(y, proj_weight, proj_bias) if project else y


_ATTENTION_MISTAKES = [  # (options of _attention, hint)
    ({"scale": "none"}, "the scores are too large by a factor sqrt(head_dim) = sqrt({hd}): divide q·kᵀ by sqrt(head_dim)"),
    ({"scale": "sqrt_C"}, "you divided the scores by sqrt(C) = sqrt({C}), the model's width: divide by sqrt(head_dim) "
                          "= sqrt({hd}), one head's width"),
    ({"scale": "hd"}, "you divided the scores by head_dim = {hd}: divide by its square root, sqrt({hd})"),
    ({"softmax_dim": -2}, "the softmax runs over the wrong axis: each query's row of scores (the last axis, over "
                          "keys) must sum to 1"),
    ({"split": "reshape"}, "the heads are cut wrongly: view q, k, v as (B, T, heads, head_dim), then transpose(1, 2); "
                           "reshaping (B, T, C) straight to (B, heads, T, head_dim) mixes positions into heads"),
    ({"merge": "reshape"}, "the heads are joined wrongly: transpose (B, heads, T, head_dim) back to (B, T, heads, "
                           "head_dim) before reshaping to (B, T, C)"),
    ({"heads": 1}, "you computed one head of width C = {C}: split q, k and v into {heads} heads of {hd}"),
    ({"project": False}, "the output projection is missing: finish with y @ proj_weight.T + proj_bias"),
    ({"mask_after_softmax": True}, "the mask is applied after the softmax, so the rows no longer sum to 1: set the "
                                   "future scores to -inf before the softmax"),
]


def _leak(fn, x, weights):
    """(i, j) with j > i where the output at position i changes when the input at j does, or None."""
    with torch.no_grad():
        base = fn(x, *weights)
        for j in range(1, x.size(1)):
            bumped = x.clone()
            bumped[:, j] += 1.0
            changed = (fn(bumped, *weights) - base)[:, :j].abs().amax(dim=(0, 2)) > 1e-6
            if changed.any():
                return int(torch.nonzero(changed)[0]), j
    return None


def _attention_case(seed=0, B=2, T=9, C=48, heads=4):
    g = torch.Generator().manual_seed(seed)
    module = CausalSelfAttention(GPTConfig(width=C, heads=heads, attention="explicit"))
    with torch.no_grad():  # weights of std 1/sqrt(C): scores of unit scale, so attention patterns are not flat
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(C))
    x = torch.randn(B, T, C, generator=g)
    return module, x, torch.randn(B, T, C, generator=g)  # and an upstream gradient


@exercise("attention", reference_attention)
def attention(fn):
    """The learner's attention against CausalSelfAttention: outputs, then gradients of qkv.weight and of x."""
    module, x, grad_out = _attention_case()
    weights = [t.detach().clone().requires_grad_() for t in
               (module.qkv.weight, module.qkv.bias, module.proj.weight, module.proj.bias)]
    mine_x, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = fn(mine_x, *weights, module.heads)
    want = module(x_ref)
    if isinstance(y, torch.Tensor) and y.shape == want.shape and not torch.allclose(y, want, atol=1e-5):
        _explain_attention(fn, x, weights, module.heads, y)
    compare("output", y, want, atol=1e-5)
    if not y.requires_grad:
        raise Wrong("the output carries no gradient: no torch.no_grad(), .detach() or .data inside your function")
    (y * grad_out).sum().backward()
    (want * grad_out).sum().backward()
    for what, got, want_grad in (("gradient of qkv_weight", weights[0].grad, module.qkv.weight.grad),
                                 ("gradient of x", mine_x.grad, x_ref.grad)):
        if got is None:
            raise Wrong(f"no {what} reached it: no .detach(), .data or torch.no_grad() inside your function")
        compare(what, got, want_grad, atol=1e-4)


def _explain_attention(fn, x, weights, heads, y):
    """Raise Wrong naming the mistake, if it is one the check knows; else return (and compare says where)."""
    B, T, C = x.shape
    with torch.no_grad():
        for options, hint in _ATTENTION_MISTAKES:
            options = dict(options)
            wrong_heads = options.pop("heads", heads)
            if torch.allclose(y, _attention(x, *weights, wrong_heads, **options), atol=1e-5):
                raise Wrong(hint.format(hd=C // heads, C=C, heads=heads))
    leak = _leak(fn, x, weights + [heads])
    if leak:
        i, j = leak
        raise Wrong(f"position {i} attends to position {j} (its output changes when the input at {j} does): the "
                    f"causal mask is missing, on the wrong side, or fills with 0 instead of -inf; position t may see "
                    f"positions 0…t only")
    if not torch.isfinite(y).all():
        index = [int(i) for i in torch.nonzero(~torch.isfinite(y))[0]]
        raise Wrong(f"output{index} is {y[tuple(index)].item()}: a row of scores is all -inf (does the mask hide "
                    f"the diagonal too? triu(..., diagonal=1): position t attends to itself)")


# --- GELU, tanh approximation -----------------------------------------------------------------------------------

def reference_gelu_tanh(x):
    """GPT-2's GELU: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))."""
    return F.gelu(x, approximate="tanh")


def _gelu_tanh_variant(x, k=math.sqrt(2 / math.pi), cubic=0.044715, half=0.5):
    return half * x * (1 + torch.tanh(k * (x + cubic * x**3)))


_GELU_MISTAKES = [
    (lambda x: F.gelu(x), "this is the exact GELU x·Φ(x) (gigaGPT's, PyTorch's default); GPT-2 uses the tanh "
                          "approximation of Φ"),
    (lambda x: _gelu_tanh_variant(x, cubic=0.0), "the cubic term is missing: tanh(sqrt(2/π)·(x + 0.044715·x³))"),
    (lambda x: _gelu_tanh_variant(x, k=2 / math.pi), "the factor inside tanh is sqrt(2/π) ≈ 0.798, not 2/π ≈ 0.637"),
    (lambda x: _gelu_tanh_variant(x, half=1.0), "off by a factor 2: the 0.5 in front is missing"),
    (lambda x: x * torch.sigmoid(1.702 * x), "this is the sigmoid approximation x·σ(1.702x); GPT-2 uses the tanh one"),
]


def _compare_curve(what, x, got, want, atol=1e-6):
    """compare(), with the worst point named by its x rather than its index."""
    compare(what, got, want, atol=float("inf"))  # type, shape, finiteness
    error = (got - want).abs()
    if error.max() > atol:
        i = int(error.argmax())
        raise Wrong(f"{what}({x[i].item():.3g}) is {got[i].item():.6g}, expected {want[i].item():.6g} "
                    f"(off by {error[i].item():.3g}; tolerance {atol:g})")


@exercise("gelu_tanh", reference_gelu_tanh)
def gelu_tanh(fn):
    """Values and slopes on [-6, 6] against F.gelu(approximate="tanh"), then inside the package's MLP."""
    x = torch.linspace(-6, 6, 241, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    want = F.gelu(x, approximate="tanh")
    if isinstance(y, torch.Tensor) and y.shape == want.shape and not torch.allclose(y, want, atol=1e-6):
        for mistake, hint in _GELU_MISTAKES:
            if torch.allclose(y, mistake(x), atol=1e-6):
                raise Wrong(hint)
    _compare_curve("gelu_tanh", x, y, want)
    if not y.requires_grad:
        raise Wrong("the output carries no gradient: use torch operations (torch.tanh), not math or numpy")
    (slope,) = torch.autograd.grad(y.sum(), x)
    (want_slope,) = torch.autograd.grad(want.sum(), x)
    _compare_curve("the slope of gelu_tanh", x, slope, want_slope)
    g = torch.Generator().manual_seed(0)
    mlp = MLP(GPTConfig(width=32, heads=1, activation="gelu_tanh"))
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        z = torch.randn(5, 32, generator=g)
        compare("the package's MLP(activation='gelu_tanh') with your GELU: output",
                mlp.proj(fn(mlp.fc(z))), mlp(z), atol=1e-5)


# --- LayerNorm --------------------------------------------------------------------------------------------------

def reference_layer_norm(x, weight, bias, eps):
    """LayerNorm over the last axis: (x − mean) / sqrt(variance + eps) · weight + bias, variance dividing by C."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def _layer_norm_variant(x, weight, bias, eps, unbiased=False, eps_outside=False, std_for_var=False, dim=-1,
                        affine=True):
    mean = x.mean(dim, keepdim=True)
    var = x.var(dim, keepdim=True, unbiased=unbiased)
    spread = var.sqrt() if std_for_var else var
    y = (x - mean) / (var.sqrt() + eps if eps_outside else torch.sqrt(spread + eps))
    return y * weight + bias if affine else y


_LAYER_NORM_MISTAKES = [
    ({"unbiased": True}, "you divided the variance by C − 1 (torch.var's default, unbiased=True): LayerNorm divides "
                         "by C (unbiased=False)"),
    ({"eps_outside": True}, "eps goes inside the square root: sqrt(variance + eps), not sqrt(variance) + eps (it "
                            "matters where a row's variance is near eps)"),
    ({"std_for_var": True}, "you put the standard deviation where the variance goes: sqrt(variance + eps)"),
    ({"dim": -2}, "you normalised over positions (axis -2): LayerNorm normalises each token's C features, the last axis"),
    ({"affine": False}, "the learned gain and bias are missing: finish with · weight + bias"),
]


@exercise("layer_norm", reference_layer_norm)
def layer_norm(fn):
    """The learner's LayerNorm against nn.LayerNorm: rows of ordinary and of tiny variance (where eps matters)."""
    g = torch.Generator().manual_seed(0)
    C = 32
    x = torch.randn(2, 6, C, generator=g) * 3 + 1
    x[:, 1] = x[:, 1] * 1e-3  # row 1: variance ~1e-5, the size of eps
    module = torch.nn.LayerNorm(C)
    with torch.no_grad():
        module.weight.copy_(torch.rand(C, generator=g) + 0.5)
        module.bias.copy_(torch.randn(C, generator=g))
    args = (x, module.weight.detach(), module.bias.detach(), module.eps)
    y = fn(*args)
    want = module(x).detach()
    if isinstance(y, torch.Tensor) and y.shape == want.shape and not torch.allclose(y, want, atol=1e-4):
        for options, hint in _LAYER_NORM_MISTAKES:
            if torch.allclose(y, _layer_norm_variant(*args, **options), atol=1e-4):
                raise Wrong(hint)
    compare("output", y, want, atol=1e-4)


# --- parameter count --------------------------------------------------------------------------------------------

def reference_param_count(c):
    """Parameters of GPT(c), the tied LM head counted once (gigagpt.scaling.param_count)."""
    return scaling.param_count(c)


PARAM_COUNT_CASES = {  # name -> the config the learner's formula must count exactly
    "this notebook's small model": GPTConfig(width=64, depth=2, heads=4, max_position_embeddings=64),
    "GPT-2 small": GPTConfig(width=768, depth=12, heads=12, max_position_embeddings=1024),
    "GPT-2 small with bias=False": GPTConfig(width=768, depth=12, heads=12, max_position_embeddings=1024, bias=False),
    "GPT-2 small, vocabulary padded to 64": GPTConfig(width=768, depth=12, heads=12, max_position_embeddings=1024,
                                                      pad_vocab_multiple=64),
    "gigaGPT 175B": GPTConfig(width=12288, depth=96, heads=96, max_position_embeddings=2048),
}


@functools.lru_cache(maxsize=None)
def _counted(name):
    """Parameters of a real GPT(c) built on the meta device (shapes only), tied head once."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(PARAM_COUNT_CASES[name]).parameters())


def _explain_count(c, got, want):
    C, L, V, P = c.width, c.depth, c.padded_vocab_size, c.max_position_embeddings
    diff = got - want
    pieces = [
        (V * C, f"you counted the tied LM head twice: {V * C:,} too many (lm_head.weight is wte.weight: one tensor)"),
        (-P * C, f"the position embeddings (max_position_embeddings × width = {P * C:,}) are missing"),
        (-V * C, f"the token embedding (vocabulary × width = {V * C:,}) is missing"),
        (-(V - c.vocab_size) * C, f"use c.padded_vocab_size: the embedding has {V - c.vocab_size} padding rows "
                                  f"({(V - c.vocab_size) * C:,} parameters missing)"),
        (L * 9 * C + (2 * L + 1) * C, f"with bias=False there are no biases, neither in the linear layers nor in "
                                      f"the LayerNorms: {diff:,} too many"),
        (L * 9 * C, f"with bias=False the linear layers have no biases ({diff:,} too many; the LayerNorms lose "
                    f"theirs too)"),
        ((2 * L + 1) * C, f"with bias=False the LayerNorms have no bias either: {diff:,} too many"),
        (-2 * C if c.bias else -C, f"the final LayerNorm ln_f is missing ({abs(diff):,})"),
        (-L * 4 * C if c.bias else -L * 2 * C, f"each block's two LayerNorms are missing ({abs(diff):,})"),
        (-L * 9 * C, f"the linear layers' biases are missing (3C + C + 4C + C per block: {abs(diff):,})"),
        (L * C * C, f"{diff:,} too many: exactly C² = {C * C:,} per block; the four matrices hold 3C² + C² + 4C² + 4C² "
                    f"= 12C²"),
        (-L * C * C, f"{abs(diff):,} too few: exactly C² = {C * C:,} per block; the four matrices hold 3C² + C² + "
                     f"4C² + 4C² = 12C²"),
    ]
    for amount, hint in pieces:
        if amount and diff == amount:
            return hint
    more = f"{abs(diff):,} too {'many' if diff > 0 else 'few'}"
    if abs(diff) < C * C and diff % C == 0:  # a multiple of C smaller than one matrix: the vectors are off
        vectors = ("biases (3C + C + 4C + C per block) and LayerNorms (weight and bias, 2C each: ln_1, ln_2 and ln_f)"
                   if c.bias else "LayerNorms (a weight only with bias=False: C each, ln_1, ln_2 and ln_f)")
        return f"{more} (= {abs(diff) // C}·C): the matrices are right, the vectors are not: count the {vectors}"
    return f"{more} ({diff / C:+g}·C, {diff / (C * C):+.3g}·C²)"


@exercise("param_count", reference_param_count)
def param_count(fn):
    """The learner's formula against scaling.param_count and a meta-device GPT, for several configs."""
    for name, c in PARAM_COUNT_CASES.items():
        want = scaling.param_count(c)
        assert want == _counted(name), f"{name}: scaling.param_count disagrees with the model itself"
        got = fn(c)
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, int) or isinstance(got, bool):
            if isinstance(got, float) and got.is_integer():
                got = int(got)
            else:
                raise Wrong(f"{name}: return a whole number of parameters (an int), got {got!r:.60}")
        if got != want:
            raise Wrong(f"{name} (width {c.width}, depth {c.depth}, bias={c.bias}): {_explain_count(c, got, want)}")


# --- the untrained model's loss ---------------------------------------------------------------------------------

def reference_initial_loss(vocab_size, sigma):
    """Expected cross-entropy when every logit is an independent N(0, σ²) draw: ln V + σ²/2 (large V)."""
    return math.log(vocab_size) + sigma**2 / 2


INITIAL_LOSS_CASES = [(65, 0.0), (50257, 0.25), (50257, 1.0), (256, 0.5)]


@exercise("initial_loss", reference_initial_loss)
def initial_loss(fn):
    """The learner's formula for several (V, σ), with a hint from the classic slips."""
    for V, sigma in INITIAL_LOSS_CASES:
        got = fn(V, sigma)
        if isinstance(got, torch.Tensor):
            got = got.item()
        want = reference_initial_loss(V, sigma)
        if isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) > 1e-4:
            where = f"V = {V:,}, σ = {sigma}"
            slips = [
                (math.log(V), f"{where}: you returned ln V, right only for σ = 0: logits spread by σ raise "
                              f"log Σ exp(logits) (what is the mean of e^z for z ~ N(0, σ²)?)"),
                (math.log(V) + sigma**2, f"{where}: the σ term is twice too big (E[e^z] = e^(σ²/2))"),
                (math.log(V) + sigma, f"{where}: the correction grows with the variance σ², not with σ"),
                (math.log2(V) + sigma**2 / 2, f"{where}: the loss is in nats: use the natural log"),
                (math.log(V) - sigma**2 / 2, f"{where}: the correction has the wrong sign: spread-out logits make "
                                             f"the loss larger"),
                (1 / V, f"{where}: that is the probability 1/V; the loss is its negative log"),
            ]
            for value, hint in slips:
                if abs(got - value) < 1e-4:
                    raise Wrong(hint)
        compare(f"initial loss for V = {V:,}, σ = {sigma}", got, want, atol=1e-4)
