"""Scaling arithmetic from the config alone: parameters, memory and FLOPs (no tensors are built).

`gigagpt info`, the memory guard in `train` and notebook 05 all read these functions, and the tests check
them against real (meta-device) models.
"""
import math
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
        total += (cfg.padded_vocab_size + cfg.max_position_embeddings) * d
    return total


def param_breakdown(cfg):
    """Where the parameters live: embeddings, attention, MLP, LayerNorms."""
    d, L, b = cfg.width, cfg.depth, int(cfg.bias)
    return {
        "embeddings": (cfg.padded_vocab_size + cfg.max_position_embeddings) * d,
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

    Per block 34·s·b·d bytes with 16-bit activations (their count is already in bytes: 17 values of 2 bytes
    per position and width, dropout masks included), doubled for fp32; explicit attention also keeps the
    (b, heads, s, s) scores and softmax, 5·heads·s²·b bytes. The logits (and their fp32 copy for the loss)
    are added once. An estimate, good to ~20%.
    """
    b, s, d, bytes_ = batch_size, sequence_length, cfg.width, BYTES[dtype]
    per_block = b * s * d * 34 * bytes_ / 2
    if cfg.attention == "explicit" or (cfg.attention == "auto" and s <= 512):  # see CausalSelfAttention
        per_block += 5 * b * cfg.heads * s * s * bytes_ / 2
    if checkpointing:  # keep only each block's input, recompute one block at a time
        blocks = cfg.depth * b * s * d * bytes_ + per_block
    else:
        blocks = cfg.depth * per_block
    logits = b * s * cfg.padded_vocab_size * (bytes_ + 8)
    return int(blocks + logits)


def training_memory(cfg, batch_size, sequence_length, dtype="bfloat16", shards=1, checkpointing=False):
    """Bytes to train with AdamW: weights, gradients and optimizer state (sharded over `shards`), activations.

    16 bytes per parameter either way: gigagpt's autocast keeps fp32 weights (4) and gradients (4) and AdamW's
    two fp32 moments (8), casting to bf16 only inside the matmuls; the usual mixed-precision account (ZeRO,
    Rajbhandari et al. 2020) is bf16 weights (2) and gradients (2) plus 12 of fp32 optimizer state (master
    weights and two moments). Only pure bf16 training (`dtype='pure_bfloat16'`) has 12.
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
    from gigagpt.doctor import memory_bytes  # standard library only; counts a container's or hub's limit

    try:
        measured = memory_bytes()
    except (OSError, ValueError, KeyError):
        measured = None
    return measured[0] if measured else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg, batch_size, sequence_length, dtype, device, shards=1, checkpointing=False):
    """Raise a clear error, before anything is allocated, if training cannot fit on this machine."""
    need = training_memory(cfg, batch_size, sequence_length, dtype, shards, checkpointing)
    have = available_memory(device)
    if need["total"] > 0.9 * have:
        parts = ", ".join(f"{k} {v / GiB:,.1f}" for k, v in need.items() if k != "total")
        gpus = gpus_needed(cfg, sequence_length, ACCELERATORS["H100"]["memory"])
        fsdp = f"{gpus:,} H100s with FSDP" if gpus else "GPUs with FSDP plus tensor parallelism"
        raise GigaGPTError(
            f"{param_count(cfg) / 1e9:,.2f}B parameters need ~{need['total'] / GiB:,.0f} GiB to train "
            f"({parts} GiB; batch {batch_size} x {sequence_length}) but {device} has {have / GiB:,.0f} GiB free: "
            f"shrink the model or batch, or go to at least {fsdp} "
            f"(torchrun --nproc_per_node 8 -m gigagpt train ...) or a Cerebras cluster (--backend CSX)"
        )
    return need


# --- Scaling out: FSDP over many GPUs, Cerebras weight streaming, time to train (notebook 05) ---

# Peak dense matmul FLOP/s (bf16 on tensor cores; fp32 without them) and memory per device, as their makers
# publish them. `gigagpt bench` finds a GPU here by name (the longest key its device name contains).
# - NVIDIA H100 SXM5 datasheet: 989.4 TFLOPS BF16 Tensor Core dense (1,979 "with sparsity"), 67 TFLOPS FP32,
#   80 GB HBM3; H200 SXM: the same Hopper tensor cores with 141 GB HBM3e. The other GPUs: their datasheets.
# - Cerebras CS-3 (WSE-3) announcement, 13 March 2024: "125 petaflops of peak AI" compute, 44 GB of on-wafer
#   SRAM, MemoryX external memory of 1.5 TB, 12 TB or 1.2 PB. "Peak AI" is not a dense bf16 matmul figure:
#   Cerebras states neither its precision nor whether it counts sparsity, and publishes no dense figure, so it
#   is not comparable with a GPU's dense 989 TFLOP/s, and time estimates from it are optimistic.
ACCELERATORS = {
    "H100": {"peak_flops": 989.4e12, "fp32_flops": 66.9e12, "memory": 80e9},
    "H100 PCIe": {"peak_flops": 756e12, "fp32_flops": 51.2e12, "memory": 80e9},
    "H100 NVL": {"peak_flops": 835e12, "fp32_flops": 60e12, "memory": 94e9},
    "H200": {"peak_flops": 989.4e12, "fp32_flops": 66.9e12, "memory": 141e9},
    "GH200": {"peak_flops": 989.4e12, "fp32_flops": 66.9e12, "memory": 96e9},
    "A100": {"peak_flops": 312e12, "fp32_flops": 19.5e12, "memory": 80e9},
    "L40S": {"peak_flops": 362.1e12, "fp32_flops": 91.6e12, "memory": 48e9},
    "L40": {"peak_flops": 181e12, "fp32_flops": 90.5e12, "memory": 48e9},
    "L4": {"peak_flops": 121e12, "fp32_flops": 30.3e12, "memory": 24e9},
    "A10": {"peak_flops": 125e12, "fp32_flops": 31.2e12, "memory": 24e9},
    "RTX 4090": {"peak_flops": 165.2e12, "fp32_flops": 82.6e12, "memory": 24e9},
    "RTX 3090": {"peak_flops": 71e12, "fp32_flops": 35.6e12, "memory": 24e9},
    "CS-3": {"peak_flops": 125e15, "memory": 44e9, "memoryx": 1.2e15},
}


def accelerator(device_name):
    """The ACCELERATORS entry whose name `device_name` contains (the longest match), e.g. 'NVIDIA H100 PCIe'."""
    matches = [name for name in ACCELERATORS if name in device_name]
    return ACCELERATORS[max(matches, key=len)] if matches else None


def fsdp_units(cfg):
    """Parameters in FSDP's all-gather units as gigagpt shards them: one block each, and the root
    (token and position embeddings, which the LM head shares, and the final LayerNorm)."""
    final_norm = cfg.width * (1 + int(cfg.bias))
    return {
        "block": (param_count(cfg, embeddings=False) - final_norm) // cfg.depth,
        "root": (cfg.padded_vocab_size + cfg.max_position_embeddings) * cfg.width + final_norm,
    }


def fsdp_memory(cfg, micro_batch, sequence_length, gpus, dtype="bfloat16", checkpointing=True):
    """Bytes per GPU when FSDP shards weights, gradients and AdamW state over `gpus` GPUs, each running
    `micro_batch` sequences at a time.

    On top of its shards, a GPU holds the gathered weights of the unit it computes and of the one it
    prefetches (in the compute dtype), and in the backward pass that unit's full fp32 gradient before the
    reduce-scatter. An estimate, like activation_bytes.
    """
    memory = training_memory(cfg, micro_batch, sequence_length, dtype, shards=gpus, checkpointing=checkpointing)
    del memory["total"]
    unit = max(fsdp_units(cfg).values())
    memory["gathered"] = unit * (2 * (4 if dtype == "float32" else 2) + 4)
    memory["total"] = sum(memory.values())
    return memory


def fsdp_traffic(cfg, gpus, micro_batches=1, gather_bytes=2, reduce_bytes=4):
    """Bytes each GPU sends per optimizer step with FSDP2 as gigagpt shards (ring collectives: each of g GPUs
    sends (g-1)/g of a tensor). Every micro-batch all-gathers every unit's weights twice, for the forward pass
    and again for the backward pass (each unit frees them after its forward); gradients are reduce-scattered
    once per step (accumulation syncs the last micro-batch only). On GPUs gigagpt gathers bf16 copies
    (2 bytes) and reduces in fp32 (4)."""
    share = (gpus - 1) / gpus
    gathered = micro_batches * 2 * param_count(cfg) * gather_bytes * share
    reduced = param_count(cfg) * reduce_bytes * share
    return {"all_gather": gathered, "reduce_scatter": reduced, "total": gathered + reduced}


def gpus_needed(cfg, sequence_length, gpu_memory, dtype="bfloat16", checkpointing=True, usable=0.9):
    """Fewest GPUs with `gpu_memory` bytes each (of which `usable` is usable) that can train `cfg` with FSDP
    at one sequence per GPU (gradient accumulation makes up the batch).

    None when no number can: one sequence's activations plus the gathered units overflow a GPU by
    themselves, and only splitting layers or sequences (tensor / sequence parallelism) would help.
    """
    one = fsdp_memory(cfg, 1, sequence_length, 1, dtype, checkpointing)
    state = one["weights"] + one["gradients"] + one["optimizer"]
    room = usable * gpu_memory - one["activations"] - one["gathered"]
    return max(1, math.ceil(state / room)) if room > 0 else None


def weight_streaming_memory(cfg, micro_batch, sequence_length, dtype="bfloat16", checkpointing=False):
    """Cerebras weight streaming: bytes in MemoryX and on the wafer.

    MemoryX, outside the wafer, keeps the fp32 weights and AdamW's two moments and applies the update; the
    wafer receives the weights one layer at a time, sends gradients back, and keeps the activations of the
    micro-batch in flight (the compiler picks the micro-batch). Model size is bounded by MemoryX, not the wafer.
    """
    n, d = param_count(cfg), cfg.width
    largest_matrix = max(4 * d * d, 3 * d * d, cfg.padded_vocab_size * d)  # MLP fc, attention qkv, LM head
    return {
        "memoryx": 12 * n,
        "wafer_weights": largest_matrix * BYTES[dtype],
        "wafer_activations": activation_bytes(cfg, micro_batch, sequence_length, dtype, checkpointing),
    }


def training_seconds(cfg, tokens, sequence_length, devices, peak_flops, utilization):
    """Wall-clock seconds to train on `tokens` tokens with `devices` devices of `peak_flops` each.

    `utilization` is the model FLOPs utilization (MFU): the share of the peak that training really reaches.
    """
    return flops_per_token(cfg, sequence_length) * tokens / (devices * peak_flops * utilization)


def cluster_plan(cfg, batch_size, sequence_length, gpus, gpu="H100", tokens=None, utilization=0.4,
                 checkpointing=True):
    """One look at training `cfg` with FSDP on `gpus` GPUs of kind `gpu` (notebook 05's explorer).

    The global batch is split evenly (batch_size / gpus sequences per GPU at once, no accumulation);
    `tokens` defaults to 20 per parameter (Hoffmann et al. 2022, 'Chinchilla').
    """
    spec = ACCELERATORS[gpu]
    n = param_count(cfg)
    tokens = 20 * n if tokens is None else tokens
    micro_batch = max(1, batch_size // gpus)
    per_gpu = fsdp_memory(cfg, micro_batch, sequence_length, gpus, checkpointing=checkpointing)
    seconds = training_seconds(cfg, tokens, sequence_length, gpus, spec["peak_flops"], utilization)
    return {
        "parameters": n,
        "training_state_bytes": 16 * n,  # fp32 weights and gradients, AdamW's two moments
        "micro_batch": micro_batch,
        "per_gpu_bytes": per_gpu["total"],
        "fits": per_gpu["total"] <= 0.9 * spec["memory"] and batch_size >= gpus,
        "gpus_needed": gpus_needed(cfg, sequence_length, spec["memory"], checkpointing=checkpointing),
        "tokens": tokens,
        "flops": flops_per_token(cfg, sequence_length) * tokens,
        "days": seconds / 86400,
    }
