"""The chunked LM head + cross-entropy: the same loss and gradients as the plain path, without the logits."""
import pytest
import torch

from gigagpt import GPT, GPTConfig, lm_loss
from gigagpt.lm_loss import lm_head_loss


@pytest.mark.parametrize("vocab_size, rows", [(100, 128), (1000, 1000)])  # padded weight rows; one slice or many
def test_chunked_equals_plain_loss_and_gradients(monkeypatch, vocab_size, rows):
    monkeypatch.setattr(lm_loss, "CHUNK_BYTES", 4 * vocab_size * 7)  # 7 rows a slice: 10 slices for 2 x 35
    torch.manual_seed(0)
    hidden = torch.randn(2, 35, 16, requires_grad=True)
    weight = (0.3 * torch.randn(rows, 16)).requires_grad_()
    labels = torch.randint(0, vocab_size, (2, 35))
    results = {}
    for mode in ("plain", "chunked"):
        loss = lm_head_loss(hidden, weight, labels, vocab_size, mode)
        loss.backward()
        results[mode] = loss.detach(), hidden.grad, weight.grad
        hidden.grad = weight.grad = None
    (plain_loss, plain_dh, plain_dw), (loss, dh, dw) = results["plain"], results["chunked"]
    assert abs(loss - plain_loss) < 1e-5
    torch.testing.assert_close(dh, plain_dh, rtol=0, atol=1e-5)
    torch.testing.assert_close(dw, plain_dw, rtol=0, atol=1e-5)
    assert not dw[vocab_size:].any()  # padding rows are never predicted: no gradient
    with torch.no_grad():  # evaluation: the loss alone
        assert abs(lm_head_loss(hidden, weight, labels, vocab_size, "chunked") - plain_loss) < 1e-5


def test_auto_chunks_only_large_vocabularies():
    assert lm_loss.use_chunked("auto", 50257) and not lm_loss.use_chunked("auto", 65)
    assert lm_loss.use_chunked("chunked", 65) and not lm_loss.use_chunked("plain", 50257)


def test_training_steps_match_with_the_chunked_loss(monkeypatch):
    """A few AdamW steps of a whole model: the chunked loss trains exactly like the plain one (fp32)."""
    monkeypatch.setattr(lm_loss, "CHUNK_BYTES", 4 * 300 * 16)
    x, y = torch.randint(0, 300, (4, 24)), torch.randint(0, 300, (4, 24))
    losses = {}
    for mode in ("plain", "chunked"):
        model = GPT(GPTConfig(width=32, depth=2, heads=2, vocab_size=300, max_position_embeddings=24, loss=mode))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses[mode] = []
        for _ in range(4):
            loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[mode].append(loss.item())
    assert losses["chunked"] == pytest.approx(losses["plain"], abs=1e-5) and losses["plain"][-1] < losses["plain"][0]
