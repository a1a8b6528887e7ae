"""The optimizer recipe, in one place for the loop and every backend: gigaGPT's (as GPT-3's) AdamW settings,
weight decay on matrices only, and a linear warmup followed by a cosine decay to 10% of the peak rate."""
import math

BETAS = (0.9, 0.95)  # a shorter memory for the second moment than Adam's default 0.999: steadier at scale
MIN_LR_RATIO = 0.1  # the cosine ends at 10% of the peak learning rate


def param_groups(model, weight_decay):
    """Weight decay on matrices (≥2-D: linear layers, embeddings) only; biases and LayerNorm gains are left
    alone, since pulling them towards 0 only fights what they are for."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_at(step, run):
    """Learning rate for optimizer step `step` (0-based): linear warmup from 0, then cosine decay to 10% of peak."""
    if step < run.warmup_steps:
        return run.learning_rate * step / run.warmup_steps
    progress = min((step - run.warmup_steps) / run.decay_steps, 1.0)
    return run.learning_rate * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress)))
