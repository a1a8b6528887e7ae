"""Notebook 05's exercise checks (gigagpt.course.scaling): the reference passes, a stub is [todo], and the
classic mistakes fail with the hint that names them."""
import math

import numpy as np
import pytest

from gigagpt import scaling
from gigagpt.course import scaling as check
from gigagpt.model import Block


def line(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def stub(*args):
    raise NotImplementedError()


# --- flops_per_token -------------------------------------------------------------------------------------------

def test_flops_per_token_reference_passes(capsys):
    assert check.flops_per_token(check.flops_per_token.reference) is check.flops_per_token.reference
    assert line(capsys) == "[pass] flops_per_token"


def test_flops_per_token_stub_is_todo(capsys):
    assert check.flops_per_token(stub) is scaling.flops_per_token
    assert line(capsys).startswith("[todo] flops_per_token:")


@pytest.mark.parametrize("wrong, hint", [
    (lambda cfg, T: 6 * (scaling.param_count(cfg) - cfg.max_position_embeddings * cfg.width), "add attention's scores"),
    (lambda cfg, T: 6 * scaling.param_count(cfg) + 12 * cfg.depth * cfg.width * T, "position embeddings too"),
    (lambda cfg, T: 2 * (scaling.param_count(cfg) - cfg.max_position_embeddings * cfg.width)
     + 4 * cfg.depth * cfg.width * T, "forward pass only"),
    (lambda cfg, T: 6 * scaling.param_count(cfg, embeddings=False) + 12 * cfg.depth * cfg.width * T,
     "tied token embedding is missing"),
    (lambda cfg, T: 6 * (scaling.param_count(cfg) - cfg.max_position_embeddings * cfg.width)
     + 6 * cfg.depth * cfg.width * T, "full T x T square"),
    (lambda cfg, T: 6 * (scaling.param_count(cfg) - cfg.max_position_embeddings * cfg.width)
     + 12 * cfg.depth * cfg.width * 2048, "% too"),  # a fixed T: right only at 2048
])
def test_flops_per_token_mistakes_fail_with_their_hint(capsys, wrong, hint):
    check.flops_per_token(wrong)
    out = line(capsys)
    assert out.startswith("[fail] flops_per_token:") and hint in out, out


# --- fewest_h200s ----------------------------------------------------------------------------------------------

def test_fewest_h200s_reference_passes_and_is_plausible(capsys):
    n = check.fewest_h200s.reference()
    assert check.fewest_h200s(check.fewest_h200s.reference) is check.fewest_h200s.reference
    assert line(capsys) == "[pass] fewest_h200s"
    usable = 0.9 * scaling.ACCELERATORS["H200"]["memory"]  # n GPUs fit, one fewer does not
    assert scaling.fsdp_memory(check._seventy_b(), 1, 8192, gpus=n)["total"] <= usable
    assert scaling.fsdp_memory(check._seventy_b(), 1, 8192, gpus=n - 1)["total"] > usable


def test_fewest_h200s_stub_is_todo(capsys):
    check.fewest_h200s(stub)
    assert line(capsys).startswith("[todo] fewest_h200s:")


def test_fewest_h200s_state_only_is_too_few_without_the_answer(capsys):
    """A classic: divide 16 bytes per parameter by the GPU's memory, forgetting activations and gathered units."""
    wrong = math.ceil(16 * scaling.param_count(check._seventy_b()) / 141e9)
    check.fewest_h200s(lambda: wrong)
    out = line(capsys)
    assert out.startswith(f"[fail] fewest_h200s: {wrong} H200s is too few") and "activations" in out, out
    assert str(check.fewest_h200s.reference()) not in out.replace(str(wrong), "")


def test_fewest_h200s_not_an_int_fails(capsys):
    check.fewest_h200s(lambda: 10.3)
    assert "whole number" in line(capsys)


# --- block_shard_bytes -----------------------------------------------------------------------------------------

def test_block_shard_bytes_reference_matches_real_fsdp2_shards():
    cfg = check._small()
    for world, rank in check._SHARD_CASES:
        assert check.reference_block_shard_bytes(cfg, world, rank) == check.real_block_shard_bytes(cfg, world, rank)
    with pytest.importorskip("torch").device("meta"):
        per_block = sum(p.numel() for p in Block(cfg).parameters())
    assert sum(check.reference_block_shard_bytes(cfg, 7, r) for r in range(7)) == 16 * per_block


def test_block_shard_bytes_reference_passes(capsys):
    check.block_shard_bytes(check.reference_block_shard_bytes)
    assert line(capsys) == "[pass] block_shard_bytes"


def test_block_shard_bytes_stub_is_todo(capsys):
    assert check.block_shard_bytes(stub) is check.reference_block_shard_bytes
    assert line(capsys).startswith("[todo] block_shard_bytes:")


def block_bytes(cfg, world, rank, rows_of, bytes_per_param=16):
    import torch

    with torch.device("meta"):
        block = Block(cfg)
    return bytes_per_param * sum(rows_of(p.shape[0], rank) * (p.numel() // p.shape[0]) for p in block.parameters())


@pytest.mark.parametrize("rows_of, bytes_per_param, hint", [
    (lambda rows, rank: -(-rows // 5), 16, "not every rank gets a full"),  # forgot the short last chunk
    (lambda rows, rank: rows // 5, 16, "drops the remainder"),
    (lambda rows, rank: rows / 5, 16, "fractional rows"),
    (lambda rows, rank: max(0, min(-(-rows // 5), rows - rank * -(-rows // 5))), 4, "fp32 weights only"),
])
def test_block_shard_bytes_mistakes_fail_with_their_hint(capsys, rows_of, bytes_per_param, hint):
    def wrong(cfg, world, rank):  # the mistake, written for world == 5 (the first uneven case checked)
        if world != 5:
            return check.reference_block_shard_bytes(cfg, world, rank)
        return block_bytes(cfg, world, rank, rows_of, bytes_per_param)

    check.block_shard_bytes(wrong)
    out = line(capsys)
    assert out.startswith("[fail] block_shard_bytes:") and hint in out, out


# --- fsdp_traffic ----------------------------------------------------------------------------------------------

def test_fsdp_traffic_reference_passes(capsys):
    check.fsdp_traffic(scaling.fsdp_traffic)
    assert line(capsys) == "[pass] fsdp_traffic"


def test_fsdp_traffic_stub_is_todo(capsys):
    check.fsdp_traffic(stub)
    assert line(capsys).startswith("[todo] fsdp_traffic:")


def traffic(gathers_per_micro=2, per_micro=True, gather_bytes=2, reduce_bytes=4, reduce_per_micro=False, ring=True):
    def fn(cfg, gpus, micro):
        n, share = scaling.param_count(cfg), (gpus - 1) / gpus if ring else 1.0
        gathered = (micro if per_micro else 1) * gathers_per_micro * n * gather_bytes * share
        reduced = (micro if reduce_per_micro else 1) * n * reduce_bytes * share
        return {"all_gather": gathered, "reduce_scatter": reduced}
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (traffic(gathers_per_micro=1), "gathered twice per micro-batch"),
    (traffic(per_micro=False), "gathered again for every micro-batch"),
    (traffic(gather_bytes=4), "bf16 copies"),
    (traffic(reduce_per_micro=True), "reduce-scattered once per step"),
    (traffic(reduce_bytes=2), "reduced in fp32"),
    (traffic(ring=False), "(g-1)/g"),
])
def test_fsdp_traffic_mistakes_fail_with_their_hint(capsys, wrong, hint):
    check.fsdp_traffic(wrong)
    out = line(capsys)
    assert out.startswith("[fail] fsdp_traffic:") and hint in out, out


# --- fit_power_law ---------------------------------------------------------------------------------------------

def test_fit_power_law_reference_recovers_a_known_law(capsys):
    n = np.array([1e3, 1e4, 1e5])
    a, alpha = check.reference_fit_power_law(n, 5.0 * n ** -0.2)
    assert a == pytest.approx(5.0) and alpha == pytest.approx(0.2)
    check.fit_power_law(check.reference_fit_power_law)
    assert line(capsys) == "[pass] fit_power_law"


def test_fit_power_law_stub_is_todo(capsys):
    check.fit_power_law(stub)
    assert line(capsys).startswith("[todo] fit_power_law:")


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, L: (lambda s, i: (float(np.exp(i)), float(s)))(*np.polyfit(np.log(n), np.log(L), 1)), "wrong sign"),
    (lambda n, L: (lambda s, i: (float(i), float(-s)))(*np.polyfit(np.log(n), np.log(L), 1)), "a = e^intercept"),
    (lambda n, L: (lambda s, i: (float(np.exp(i)), float(-s)))(*np.polyfit(np.log10(n), np.log10(L), 1)), "10**intercept"),
    (lambda n, L: (lambda s, i: (float(i), float(-s)))(*np.polyfit(np.log(n), L, 1)), "alpha is"),  # fitted L, not ln L
])
def test_fit_power_law_mistakes_fail_with_their_hint(capsys, wrong, hint):
    check.fit_power_law(wrong)
    out = line(capsys)
    assert out.startswith("[fail] fit_power_law:") and hint in out, out
