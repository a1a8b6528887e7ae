"""Scaling arithmetic from the config alone: parameters, memory and FLOPs (no tensors are built).

`gigagpt info`, the memory guard in `train` and notebook 05 all read these functions, and the tests check
them against real (meta-device) models.
"""
import os

from gigagpt.errors import GigaGPTError

GiB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def param_count(cfg, embeddings=True):
    """Exact parameter count of GPT(cfg); tied LM head counted once. embeddings=False drops wte and wpe."""
    d, biases = cfg.width, cfg.bias
    per_block = 12 * d * d + (13 * d if biases else 2 * d)  # 4 linears (+ their biases) and 2 LayerNorms
    total = cfg.depth * per_block + (2 * d if biases else d)  # + final LayerNorm
    if embeddings:
        total += (cfg.vocab_size + cfg.max_position_embeddings) * d
    return total


def param_breakdown(cfg):
    """Where the parameters live: embeddings, attention, MLP, LayerNorms."""
    d, L, b = cfg.width, cfg.depth, int(cfg.bias)
    return {
        "embeddings": (cfg.vocab_size + cfg.max_position_embeddings) * d,
        "attention": L * (4 * d * d + 4 * d * b),
        "mlp": L * (8 * d * d + 5 * d * b),
        "layernorm": (2 * L + 1) * d * (1 + b),
    }


def flops_per_token(cfg, sequence_length):
    """Training FLOPs per token: 6 per parameter in matmuls (2 forward + 4 backward) plus attention.

    Position embeddings are lookups, not matmuls; the tied token embedding is counted once, for the LM head.
    Attention scores and weighted sums add 12 * depth * width * T (counting the full T x T square, as
    PaLM's MFU does, although causal kernels skip half of it).
    """
    matmul_params = param_count(cfg) - cfg.max_position_embeddings * cfg.width
    return 6 * matmul_params + 12 * cfg.depth * cfg.width * sequence_length


def activation_bytes(cfg, batch_size, sequence_length, dtype="bfloat16", checkpointing=False):
    """Activations kept for the backward pass (Korthikanti et al. 2022, 'Reducing Activation Recomputation').

    Per block ~34·b·s·d values at 2 bytes; explicit attention also keeps the (b, heads, s, s) scores.
    The logits (and their fp32 copy for the loss) are added once. An estimate, good to ~20%.
    """
    b, s, d, bytes_ = batch_size, sequence_length, cfg.width, BYTES[dtype]
    per_block = b * s * d * 34 * bytes_ / 2
    if cfg.attention == "explicit":
        per_block += 5 * b * cfg.heads * s * s * bytes_ / 2
    if checkpointing:  # keep only each block's input, recompute one block at a time
        blocks = cfg.depth * b * s * d * bytes_ + per_block
    else:
        blocks = cfg.depth * per_block
    logits = b * s * cfg.vocab_size * (bytes_ + 8)
    return int(blocks + logits)


def training_memory(cfg, batch_size, sequence_length, dtype="bfloat16", shards=1, checkpointing=False):
    """Bytes to train with AdamW: weights, gradients and optimizer state (sharded over `shards`), activations.

    Mixed precision keeps fp32 master weights and gradients (bf16 only in the matmuls), so only pure
    bf16 training (`dtype='pure_bfloat16'`) halves weights and gradients; AdamW's two moments stay fp32.
    """
    n = param_count(cfg)
    weight_bytes = 2 if dtype == "pure_bfloat16" else 4
    act_dtype = "float32" if dtype == "float32" else "bfloat16"
    memory = {
        "weights": n * weight_bytes / shards,
        "gradients": n * weight_bytes / shards,
        "optimizer": n * 8 / shards,
        "activations": activation_bytes(cfg, batch_size, sequence_length, act_dtype, checkpointing),
    }
    memory["total"] = sum(memory.values())
    return memory


def available_memory(device):
    """Bytes free on `device` ('cpu', 'cuda', ...)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg, batch_size, sequence_length, dtype, device, shards=1, checkpointing=False):
    """Raise a clear error, before anything is allocated, if training cannot fit on this machine."""
    need = training_memory(cfg, batch_size, sequence_length, dtype, shards, checkpointing)
    have = available_memory(device)
    if need["total"] > 0.9 * have:
        parts = ", ".join(f"{k} {v / GiB:,.1f}" for k, v in need.items() if k != "total")
        gpus = -(-need["total"] // (70 * GiB))
        raise GigaGPTError(
            f"{param_count(cfg) / 1e9:,.2f}B parameters need ~{need['total'] / GiB:,.0f} GiB to train "
            f"({parts} GiB; batch {batch_size} x {sequence_length}) but {device} has {have / GiB:,.0f} GiB free: "
            f"shrink the model or batch, or go to ~{gpus:,.0f} 80 GB GPUs with FSDP "
            f"(torchrun --nproc_per_node 8 -m gigagpt train ...) or a Cerebras cluster (--backend CSX)"
        )
    return need
