import sys

import pytest
import torch

from gigagpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers", reason="Hugging Face interop needs: pip install -e .[hf]")


@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_through_hugging_face(bias):
    from gigagpt.hf import from_hf, to_hf

    torch.manual_seed(0)
    model = GPT(GPTConfig(width=64, depth=2, heads=4, vocab_size=300, max_position_embeddings=64, bias=bias)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a mapping mistake cannot hide
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randint(0, 300, (2, 40))
    hf = to_hf(model)
    assert isinstance(hf, transformers.GPT2LMHeadModel)
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
        assert (ours - theirs).abs().max() < 1e-4
        back = from_hf(hf)
        assert (back(x) - ours).abs().max() < 1e-4
    assert back.lm_head.weight is back.wte.weight


def test_package_imports_without_optional_dependencies():
    import subprocess

    code = "import gigagpt, gigagpt.train, gigagpt.hf, gigagpt.data, sys; " \
           "print(sorted(m for m in ('transformers', 'datasets', 'cerebras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
