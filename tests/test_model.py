import dataclasses
import math

import pytest
import torch

from gigagpt import GPT, GPTConfig, GigaGPTError, load_config
from gigagpt.scaling import param_breakdown, param_count

from conftest import REPO

SMALL = GPTConfig(width=64, depth=2, heads=4, vocab_size=100, max_position_embeddings=32)
EXPECTED = {"111m": 111_050_496, "1p3b": 1_315_723_264, "13b": 12_853_386_240,
            "70b": 64_861_528_064, "175b": 174_604_259_328}


def test_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(SMALL)
    x = torch.randint(0, 100, (3, 10))
    assert model(x).shape == (3, 10, 100)
    loss = model(x, torch.randint(0, 100, (3, 10)))
    assert loss.ndim == 0
    # An untrained model's prediction is near uniform: loss ≈ ln(vocab).
    assert abs(loss.item() - math.log(100)) < 0.1


def test_lm_head_is_tied_to_token_embedding():
    model = GPT(SMALL)
    assert model.lm_head.weight is model.wte.weight


def test_init_follows_gigagpt():
    torch.manual_seed(0)
    config = GPTConfig(width=256, depth=8, heads=4, vocab_size=1000, init_std=0.02)
    model = GPT(config)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    proj = model.blocks[0].mlp.proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)
    assert torch.all(model.blocks[0].ln_1.weight == 1)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_causal(attention):
    """Changing a future token never changes the logits of earlier positions."""
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(SMALL, attention=attention)).eval()
    x = torch.randint(0, 100, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 100
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_sdpa_and_explicit_attention_agree():
    torch.manual_seed(0)
    sdpa = GPT(SMALL).eval()
    explicit = GPT(dataclasses.replace(SMALL, attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    x = torch.randint(0, 100, (2, 32))
    assert torch.allclose(sdpa(x), explicit(x), atol=1e-5)
    # ... and so do their gradients
    sdpa(x, x).backward()
    explicit(x, x).backward()
    assert torch.allclose(sdpa.blocks[0].attn.qkv.weight.grad, explicit.blocks[0].attn.qkv.weight.grad, atol=1e-5)


@pytest.mark.parametrize("name", EXPECTED)
def test_exact_parameter_counts_on_meta(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml").model
    with torch.device("meta"):
        model = GPT(cfg)
    assert all(p.is_meta for p in model.parameters())  # shapes only: nothing allocated, nothing drawn
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[name] == param_count(cfg)
    assert sum(param_breakdown(cfg).values()) == EXPECTED[name]


def test_param_count_without_bias():
    cfg = dataclasses.replace(SMALL, bias=False)
    assert sum(p.numel() for p in GPT(cfg).parameters()) == param_count(cfg)


def test_bad_model_configs():
    with pytest.raises(GigaGPTError, match="heads .5. must divide width .64."):
        GPTConfig(width=64, heads=5)
    with pytest.raises(GigaGPTError, match="attention"):
        GPTConfig(attention="flash")
    with pytest.raises(GigaGPTError, match="max_position_embeddings"):
        GPT(SMALL)(torch.zeros(1, 33, dtype=torch.long))


def test_weights_depend_only_on_the_seed_and_each_tensors_name():
    """Per-tensor generators: a tensor's values do not depend on what was built before it (a deeper model,
    another process's shard), only on (seed, name); another seed gives other weights."""
    shallow, deep = GPT(SMALL, seed=3), GPT(dataclasses.replace(SMALL, depth=5), seed=3)
    for name, tensor in shallow.state_dict().items():
        if not name.endswith("proj.weight"):  # residual projections' std depends on the depth, by design
            assert torch.equal(tensor, deep.state_dict()[name]), name
    assert not torch.equal(GPT(SMALL, seed=4).wte.weight, shallow.wte.weight)
    assert not torch.equal(shallow.blocks[0].mlp.fc.weight[:64], shallow.blocks[0].attn.qkv.weight[:64])


def test_backend_builds_the_same_tied_model(tmp_path):
    """The backend builds on meta, materialises, then draws: the same weights as GPT(config, seed), tied."""
    from gigagpt.backends.plain import TorchBackend

    run = load_config(None, device="cpu", seed=7).run
    model = TorchBackend(run).build_model(SMALL)
    assert model.lm_head.weight is model.wte.weight
    reference = GPT(SMALL, seed=7).state_dict()
    assert all(torch.equal(t, reference[name]) for name, t in model.state_dict().items())


def test_gpt2_tanh_gelu():
    """activation: gelu_tanh is GPT-2's 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))); gelu is the exact x Phi(x)."""
    def tanh_gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    mlp = GPT(dataclasses.replace(SMALL, activation="gelu_tanh")).blocks[0].mlp
    x = 3 * torch.randn(5, 64)
    assert torch.allclose(mlp(x), mlp.proj(tanh_gelu(mlp.fc(x))), atol=1e-5)
    exact = GPT(SMALL).blocks[0].mlp  # the same weights: only the activation differs
    assert torch.allclose(exact(x), mlp.proj(torch.nn.functional.gelu(mlp.fc(x))), atol=1e-5)
    grid = torch.linspace(-4, 4, 101)
    assert 1e-4 < (torch.nn.functional.gelu(grid) - tanh_gelu(grid)).abs().max() < 1e-3  # small, not nothing
    with pytest.raises(GigaGPTError, match="activation must be one of gelu, gelu_tanh"):
        GPTConfig(activation="relu")


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_kv_cache_gives_the_same_logits_and_tokens(attention):
    from gigagpt.model import KVCache
    from gigagpt.sample import generate

    model = GPT(dataclasses.replace(SMALL, attention=attention)).eval()
    x = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = KVCache()
        steps = [model(x[:, :12], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(12, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    # greedy, past the 32-position context (each step then recomputes the window): the same tokens
    cached = generate(model, x[:, :5], 40, temperature=0)
    assert torch.equal(cached, generate(model, x[:, :5], 40, temperature=0, use_cache=False))
