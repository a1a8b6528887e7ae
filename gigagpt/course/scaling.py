"""Checks for notebook 05 (scaling to 175B): FLOPs, GPUs, shards, FSDP traffic and a power-law fit.

    from gigagpt.course import scaling as check
    flops_per_token = check.flops_per_token(my_flops_per_token)

Each check compares the learner's function with gigagpt.scaling (or with the real FSDP2 shards) and prints
one line; hints say what is off and by how much, never the number itself for "compute a number" exercises.
"""
import dataclasses
import math

import numpy as np
import torch

from gigagpt import load_config, scaling
from gigagpt.course import Wrong, compare, exercise
from gigagpt.model import Block, GPTConfig

H200_MEMORY = scaling.ACCELERATORS["H200"]["memory"]


def _small(**changes):
    """A small GPT-2-shaped config for checks (fast, and with row counts that do not divide evenly)."""
    fields = dict(width=48, depth=3, heads=3, vocab_size=65, max_position_embeddings=256)
    return GPTConfig(**{**fields, **changes})


def _config(name, **changes):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml").model
    return dataclasses.replace(cfg, **changes)


# --- training FLOPs per token ----------------------------------------------------------------------------------

def _flops_cases():
    return [(_small(), 128), (_config("1p3b"), 2048), (_config("175b"), 2048), (_config("70b", max_position_embeddings=8192), 8192)]


@exercise("flops_per_token", scaling.flops_per_token)
def flops_per_token(fn):
    for cfg, T in _flops_cases():
        got, want = fn(cfg, T), scaling.flops_per_token(cfg, T)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise Wrong(f"return a number of FLOPs, got {type(got).__name__}")
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        n, wpe = scaling.param_count(cfg), cfg.max_position_embeddings * cfg.width
        attention = 12 * cfg.depth * cfg.width * T
        where = f"for width {cfg.width}, depth {cfg.depth}, T {T}"
        if math.isclose(got, 6 * (n - wpe), rel_tol=1e-9) or math.isclose(got, 6 * n, rel_tol=1e-9):
            raise Wrong(f"{where} you count only the weights' matmuls: add attention's scores (Q·Kᵀ) and weighted "
                        "sums (scores·V), which grow with the sequence length")
        if math.isclose(got, 6 * n + attention, rel_tol=1e-9):
            raise Wrong(f"{where} you multiply the position embeddings too: they are looked up, not multiplied "
                        "(the token embedding does count, as the tied LM head)")
        if math.isclose(got, 6 * scaling.param_count(cfg, embeddings=False) + attention, rel_tol=1e-9):
            raise Wrong(f"{where} the tied token embedding is missing: as the LM head it is a (width x vocabulary) matmul")
        if math.isclose(got / want, 1 / 3, rel_tol=1e-3):
            raise Wrong(f"{where} that is the forward pass only: the backward pass costs twice the forward")
        if math.isclose(got, 6 * (n - wpe) + attention / 2, rel_tol=1e-9):
            raise Wrong(f"{where} attention is half what it should be: count the full T x T square "
                        "(2 matmuls of 2·T·width FLOPs per token and layer, x3 for training)")
        compare(f"FLOPs per token {where}", float(got), float(want), atol=0, rtol=1e-6)


# --- the fewest H200s for 70B at T = 8192 ----------------------------------------------------------------------

def _seventy_b():
    return _config("70b", max_position_embeddings=8192)


def reference_fewest_h200s():
    return scaling.gpus_needed(_seventy_b(), 8192, H200_MEMORY)


@exercise("fewest_h200s", reference_fewest_h200s)
def fewest_h200s(fn):
    got = fn()
    want = reference_fewest_h200s()
    if not isinstance(got, int) or isinstance(got, bool):
        raise Wrong(f"return a whole number of GPUs (math.ceil), got {got!r:.40}")
    if got == want:
        return
    if got < want:
        raise Wrong(f"{got} H200s is too few: each GPU must hold its 1/N share of 16 bytes per parameter PLUS, "
                    "unsharded, one sequence's activations (with checkpointing) and the gathered units, all within "
                    "90% of its 141 GB (1 GB = 1e9 bytes)")
    raise Wrong(f"{got} H200s is more than needed: count 16 bytes per parameter (not more), the activations of ONE "
                "8192-token sequence with checkpointing (not the whole batch), and 90% of 141e9 bytes per GPU")


# --- what one rank holds of one block -------------------------------------------------------------------------

def reference_block_shard_bytes(cfg, world_size, rank):
    """Bytes of training state (fp32 weight, gradient, AdamW's two moments: 16 per parameter) that process
    `rank` of `world_size` holds for one block: FSDP2 splits each tensor's first dimension like torch.chunk."""
    with torch.device("meta"):
        block = Block(cfg)
    total = 0
    for p in block.parameters():
        rows, chunk = p.shape[0], -(-p.shape[0] // world_size)
        mine = max(0, min(chunk, rows - rank * chunk))
        total += mine * (p.numel() // rows)
    return 16 * total


def real_block_shard_bytes(cfg, world_size, rank):
    """The same, read from a real FSDP2-sharded model on the fake process group (DTensor.to_local())."""
    from gigagpt.course.sharding import shard_on_fake_ranks

    model = shard_on_fake_ranks(dataclasses.replace(cfg, depth=1), world_size, rank)
    return 16 * sum(p.to_local().numel() for p in model.blocks[0].parameters())


_SHARD_CASES = [(1, 0), (4, 1), (5, 0), (5, 4), (7, 6), (64, 63)]  # (processes, rank): most do not divide evenly


def _split_bytes(cfg, world_size, rows_of):
    """16 bytes per parameter of a block, each tensor's rows counted by rows_of(rows): wrong answers' shapes."""
    with torch.device("meta"):
        block = Block(cfg)
    return 16 * sum(rows_of(p.shape[0]) * (p.numel() // p.shape[0]) for p in block.parameters())


@exercise("block_shard_bytes", reference_block_shard_bytes)
def block_shard_bytes(fn):
    cfg = _small()
    for world, rank in _SHARD_CASES:
        got, want = fn(cfg, world, rank), real_block_shard_bytes(cfg, world, rank)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise Wrong(f"return a number of bytes, got {got!r:.40}")
        if got == want:
            continue
        where = f"(width {cfg.width}, {world} processes, rank {rank})"
        if want and math.isclose(4 * got, want, rel_tol=1e-9):
            raise Wrong(f"{where} that is the fp32 weights only: count the gradient and AdamW's two moments too")
        if math.isclose(got, _split_bytes(cfg, world, lambda rows: rows / world), rel_tol=1e-9):
            raise Wrong(f"{where} a tensor cannot be split into fractional rows: FSDP2 cuts its first dimension "
                        "into chunks of ceil(rows / N), so the last ranks get fewer rows, or none")
        if math.isclose(got, _split_bytes(cfg, world, lambda rows: rows // world), rel_tol=1e-9):
            raise Wrong(f"{where} rows // N drops the remainder: FSDP2's chunks are ceil(rows / N) rows, "
                        "and the last ranks get what is left")
        if math.isclose(got, _split_bytes(cfg, world, lambda rows: -(-rows // world)), rel_tol=1e-9):
            raise Wrong(f"{where} not every rank gets a full ceil(rows / N) chunk: the last ones get what is "
                        "left of each tensor (rows - rank·chunk, at least 0)")
        compare(f"bytes {where}", got, want, atol=0)


# --- FSDP2 communication per step -----------------------------------------------------------------------------

def _hint(ratio, hints):
    """The hint whose ratio (got / expected) matches, or None."""
    return next((hint for r, hint in hints if math.isclose(ratio, r, rel_tol=1e-6)), None)


@exercise("fsdp_traffic", scaling.fsdp_traffic)
def fsdp_traffic(fn):
    for cfg, gpus, micro in [(_config("175b"), 8, 4), (_config("13b"), 64, 1), (_small(), 2, 3)]:
        got, want = fn(cfg, gpus, micro), scaling.fsdp_traffic(cfg, gpus, micro)
        if not isinstance(got, dict) or not {"all_gather", "reduce_scatter"} <= set(got):
            raise Wrong("return a dict with the bytes per GPU per step under 'all_gather' and 'reduce_scatter'")
        where = f"({gpus} GPUs, {micro} micro-batch{'es' if micro > 1 else ''} per step)"
        ring = (gpus / (gpus - 1), "in a ring each GPU sends (g-1)/g of the full tensor, not all of it")
        gather, reduce = float(got["all_gather"]), float(got["reduce_scatter"])
        if not math.isclose(gather, want["all_gather"], rel_tol=1e-6):
            hint = _hint(gather / want["all_gather"], [
                (0.5, "each unit is gathered twice per micro-batch: for the forward pass and again for the backward "
                      "pass (FSDP2 frees a unit's full weights after its forward)"),
                (1 / micro, "with gradient accumulation the weights are gathered again for every micro-batch"),
                (0.5 / micro, "gathers happen for every micro-batch, twice each (forward and backward)"),
                (2.0, "gathers move bf16 copies of the weights: 2 bytes per parameter"), ring])
            if hint:
                raise Wrong(f"all_gather {where}: {hint}")
            compare(f"all_gather bytes {where}", gather, want["all_gather"], atol=0, rtol=1e-6)
        if not math.isclose(reduce, want["reduce_scatter"], rel_tol=1e-6):
            hint = _hint(reduce / want["reduce_scatter"], [
                (float(micro), "gradients are reduce-scattered once per step: accumulation syncs only the last "
                               "micro-batch"),
                (0.5, "gradients are reduced in fp32: 4 bytes per parameter"), ring])
            if hint:
                raise Wrong(f"reduce_scatter {where}: {hint}")
            compare(f"reduce_scatter bytes {where}", reduce, want["reduce_scatter"], atol=0, rtol=1e-6)


# --- the power-law fit ----------------------------------------------------------------------------------------

def reference_fit_power_law(n, loss):
    """(a, alpha) of loss ≈ a · n^(-alpha): a straight line fitted by least squares to (ln n, ln loss)."""
    slope, intercept = np.polyfit(np.log(np.asarray(n, dtype=float)), np.log(np.asarray(loss, dtype=float)), 1)
    return float(np.exp(intercept)), float(-slope)


def _power_law_cases():
    rng = np.random.default_rng(0)
    n = np.array([6e3, 2.5e4, 8e4, 2e5, 4.5e5, 8e5])
    exact = 9.0 * n ** -0.11
    noisy = exact * np.exp(rng.normal(0, 0.02, n.size))
    return [(n, exact), (n, noisy), (n[:3], 3.0 * n[:3] ** -0.3)]


@exercise("fit_power_law", reference_fit_power_law)
def fit_power_law(fn):
    for n, loss in _power_law_cases():
        got = fn(n.copy(), loss.copy())
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(f"return the pair (a, alpha), got {got!r:.60}")
        a, alpha = (float(v) for v in got)
        want_a, want_alpha = reference_fit_power_law(n, loss)
        if math.isclose(alpha, -want_alpha, rel_tol=1e-4):
            raise Wrong("alpha has the wrong sign: the loss falls as N grows, and L = a·N^(-alpha) with alpha > 0")
        if math.isclose(alpha, want_alpha, rel_tol=1e-4) and math.isclose(a, math.log(want_a), rel_tol=1e-4):
            raise Wrong("alpha is right; a is the intercept itself: the line is ln L = ln a - alpha·ln N, so a = e^intercept")
        if math.isclose(alpha, want_alpha, rel_tol=1e-4) and not math.isclose(a, want_a, rel_tol=1e-4):
            raise Wrong(f"alpha is right but a = {a:.4g} does not reproduce the data: with log10 use a = 10**intercept, "
                        "with ln use e**intercept")
        compare("alpha", torch.tensor(alpha), torch.tensor(want_alpha), atol=1e-4 * abs(want_alpha))
        compare("a", torch.tensor(a), torch.tensor(want_a), atol=1e-4 * abs(want_a))
