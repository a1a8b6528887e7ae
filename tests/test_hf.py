import subprocess
import sys

import pytest
import torch

from gigagpt import GPT, GPTConfig, GigaGPTError

from conftest import REPO

transformers = pytest.importorskip("transformers", reason="Hugging Face interop needs: pip install -e .[hf]")


def perturbed(model):
    """Non-trivial LayerNorms and biases, so that a mapping mistake cannot hide behind zeros and ones."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_round_trip_through_hugging_face(bias, activation):
    from gigagpt.hf import from_hf, to_hf

    model = perturbed(GPT(GPTConfig(width=64, depth=2, heads=4, vocab_size=300, max_position_embeddings=64,
                                    bias=bias, activation=activation)))
    x = torch.randint(0, 300, (2, 40))
    hf = to_hf(model)
    assert isinstance(hf, transformers.GPT2LMHeadModel)
    assert hf.config.activation_function == {"gelu": "gelu", "gelu_tanh": "gelu_new"}[activation]
    with torch.no_grad():
        ours = model(x)
        assert (ours - hf(x).logits).abs().max() < 1e-5
        back = from_hf(hf)
        assert back.config.activation == activation and (back(x) - ours).abs().max() < 1e-5
    assert back.lm_head.weight is back.wte.weight


def test_gpt2_itself_both_ways():
    """transformers' default GPT2Config is GPT-2 124M (tanh GELU, "gelu_new"): converted both ways, the
    logits agree to 1e-5 in fp32."""
    from gigagpt.hf import from_hf, to_hf

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    x = torch.randint(0, 50257, (1, 64))
    with torch.no_grad():
        theirs = hf(x).logits
        ours = from_hf(hf)
        assert ours.config.activation == "gelu_tanh" and (ours(x) - theirs).abs().max() < 1e-5
        again = to_hf(ours)
        assert again.config.activation_function == "gelu_new" and (again(x).logits - theirs).abs().max() < 1e-5


def test_what_gigagpt_cannot_reproduce_is_refused():
    from gigagpt.hf import from_hf

    small = dict(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    for setting in ({"activation_function": "relu"}, {"layer_norm_epsilon": 1e-6}, {"n_inner": 64}):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**small, **setting))
        with pytest.raises(GigaGPTError, match=f"gigagpt has no {next(iter(setting))}"):
            from_hf(hf)


def test_pretrained_from_a_local_folder(tmp_path):
    """What `from_pretrained("gpt2")` does online, offline from a folder written by save_pretrained."""
    from gigagpt.hf import from_pretrained

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64))
    hf.save_pretrained(tmp_path / "tiny-gpt2")
    model = from_pretrained(tmp_path / "tiny-gpt2")
    x = torch.randint(0, 50257, (1, 20))
    with torch.no_grad():
        assert (model(x) - hf.eval()(x).logits).abs().max() < 1e-5
    with pytest.raises(GigaGPTError, match="cannot load GPT-2 .*no-such-model"):
        from_pretrained(tmp_path / "no-such-model")

    # gigagpt sample --pretrained: GPT-2's tokenizer, the same text for the same seed
    args = [sys.executable, "-m", "gigagpt", "sample", "--pretrained", str(tmp_path / "tiny-gpt2"), "--prompt",
            "Hello", "--max_new_tokens", "8", "--seed", "1"]
    runs = [subprocess.run(args, capture_output=True, text=True, cwd=REPO, env={"HF_HUB_OFFLINE": "1",
                                                                                  "PATH": "/usr/bin:/bin"})
            for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout.startswith("Hello") and runs[0].stdout == runs[1].stdout


def test_package_imports_without_optional_dependencies():
    code = "import gigagpt, gigagpt.train, gigagpt.hf, gigagpt.data, sys; " \
           "print(sorted(m for m in ('transformers', 'datasets', 'cerebras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
