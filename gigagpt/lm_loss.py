"""The LM head and its cross-entropy, in one piece.

With GPT-2's 50,257-token vocabulary the logits of a batch are the largest tensor of a training step: batch x
sequence x 50,257 floats (1.6 GB for 8 x 1,024 tokens in fp32), plus their softmax and gradient. The chunked
loss never holds them all: it takes a slice of rows at a time, computes the slice's logits, its loss and,
right away, its gradients (softmax minus one-hot: what backward would compute), and keeps only those, as
Liger-Kernel's fused linear cross-entropy does. Loss and gradients equal the plain path's (tests/test_lm_loss.py).
"""
import torch
import torch.nn.functional as F

CHUNK_BYTES = 2**28  # fp32 logits per slice: 256 MiB (1,335 rows at GPT-2's vocabulary)


def use_chunked(mode, vocab_size):
    """'auto' chunks large vocabularies only: for 65 characters the logits are small."""
    return mode == "chunked" or (mode == "auto" and vocab_size >= 8192)


def lm_head_loss(hidden, weight, labels, vocab_size, mode="auto"):
    """Mean cross-entropy of logits = hidden @ weight.T (its first vocab_size columns; any further rows are
    padding) against labels. hidden (B, T, C), weight (V', C), labels (B, T)."""
    hidden, labels = hidden.flatten(0, 1), labels.flatten()
    if not use_chunked(mode, vocab_size):
        return F.cross_entropy(F.linear(hidden, weight)[:, :vocab_size].float(), labels)
    rows = max(1, CHUNK_BYTES // (4 * vocab_size))
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return ChunkedLoss.apply(hidden, weight, labels, vocab_size, rows)
    return chunked_loss(hidden, weight, labels, vocab_size, rows)[0]


def chunked_loss(hidden, weight, labels, vocab_size, rows, grads=False):
    """(mean loss, d loss / d hidden, d loss / d weight), one slice of `rows` rows at a time."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    n, w = hidden.size(0), weight[:vocab_size].to(dtype)  # under autocast: cast the weight once, not per slice
    total = torch.zeros((), device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros_like(weight) if grads else None
    with torch.autocast(device, enabled=False):
        for start in range(0, n, rows):
            h, y = hidden[start:start + rows].to(dtype), labels[start:start + rows]
            log_probs = torch.log_softmax((h @ w.T).float(), dim=-1)
            total -= log_probs.gather(1, y[:, None]).sum()
            if grads:
                g = log_probs.exp_()  # softmax ...
                g[torch.arange(len(y), device=g.device), y] -= 1  # ... minus one-hot
                g = g.div_(n).to(dtype)
                grad_hidden[start:start + rows] = g @ w
                if dtype == grad_weight.dtype:
                    grad_weight[:vocab_size].addmm_(g.T, h)  # in place: no second (V, C) tensor per slice
                else:
                    grad_weight[:vocab_size] += g.T @ h
    return total / n, grad_hidden, grad_weight


class ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, vocab_size, rows):
        loss, grad_hidden, grad_weight = chunked_loss(hidden, weight, labels, vocab_size, rows, grads=True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None
