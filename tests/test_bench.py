"""gigagpt bench: well-formed, self-consistent results on a tiny config (correctness only, nothing timed)."""
import json
import math

import pytest
import torch
import yaml

from gigagpt import GPT, GPTConfig, GigaGPTError
from gigagpt.bench import (bench_data, default_variants, format_table, gpu_peak, nominal_peak, parse_variant,
                           run_bench)
from gigagpt.cli import main
from gigagpt.sample import generate
from gigagpt.scaling import param_count

from conftest import REPO

TINY = dict(width=32, depth=2, heads=2, vocab_size=65, max_position_embeddings=128, dropout=0.0,
            batch_size=4, sequence_length=128, device="cpu", dtype="auto")
CONFIG_111M = dict(width=768, depth=10, heads=12, vocab_size=50257, max_position_embeddings=2048)
FAST = dict(steps=2, warmup=1, matmul_size=128)


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_variant_names():
    assert parse_variant("bf16+compile+explicit") == {
        "name": "bf16+compile+explicit", "dtype": "bfloat16", "attention": "explicit", "compile": True,
        "optimizer": None, "pad_vocab_multiple": None}
    assert parse_variant("fp32+foreach")["optimizer"] == "foreach"
    assert parse_variant("bf16+pad64")["pad_vocab_multiple"] == 64
    for device in ("cpu", "cuda"):
        assert all(parse_variant(v) for v in default_variants(torch.device(device)))
    for bad in ("fp16", "fp32+flash", "bf16+", "bf16+pad0"):
        with pytest.raises(GigaGPTError):
            parse_variant(bad)


def test_gpu_peaks_by_device_name():
    assert gpu_peak("NVIDIA H100 80GB HBM3") == pytest.approx((66.9e12, 989.4e12))
    assert gpu_peak("NVIDIA H200")[1] == gpu_peak("NVIDIA GH200 480GB")[1] == pytest.approx(989.4e12)
    assert gpu_peak("NVIDIA H100 PCIe")[1] == pytest.approx(756e12)
    assert gpu_peak("NVIDIA A100-SXM4-80GB")[1] == pytest.approx(312e12)
    assert gpu_peak("NVIDIA A10")[1] == pytest.approx(125e12) and gpu_peak("NVIDIA L4")[1] == pytest.approx(121e12)
    assert gpu_peak("Some Future GPU") == (None, None)


def test_nominal_peak_of_a_gpu_and_of_this_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak = nominal_peak(torch.device("cuda"))
    assert peak["bfloat16"] == pytest.approx(989.4e12) and "datasheet" in peak["source"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert nominal_peak(torch.device("cuda"))["bfloat16"] is None
    cpu = nominal_peak(torch.device("cpu"))  # an estimate from /proc/cpuinfo (Linux), else unknown
    assert cpu["float32"] is None or cpu["bfloat16"] >= cpu["float32"] > 1e9


def test_bench_result_is_consistent(tiny_config, tmp_path):
    out = tmp_path / "bench.json"
    variants = ["fp32+loop", "fp32+fused", "fp32+explicit", "bf16"]
    result = run_bench([tiny_config], variants=variants, json_path=out, log=lambda msg: None, **FAST)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    for dtype in ("float32", "bfloat16"):
        peak = result["peak"]["measured"][dtype]
        assert peak["size"] == 128 and 0 < peak["median"] <= peak["best"]

    c = result["configs"][str(tiny_config)]
    assert c["interleaved"] and c["peak"]["float32"]["samples"] == c["peak"]["bfloat16"]["samples"] == 2
    assert c["tokens_per_step"] == 4 * 128 and c["parameters"] == 32 * (65 + 128) + 2 * (12 * 32**2 + 13 * 32) + 64
    rows = {r["variant"].rstrip("*"): r for r in c["variants"]}
    assert set(rows) == set(variants)  # the default (auto: fp32 on a CPU without AMX, or bf16) is one of them
    assert sum(r["variant"].endswith("*") for r in c["variants"]) == 1
    assert rows["fp32+loop"]["speedup"] == 1.0 and c["baseline"] == c["variants"][0]["variant"]
    assert (rows["fp32+fused"]["optimizer"], rows["fp32+explicit"]["attention"]) == ("fused", "explicit")
    assert rows["bf16"]["dtype"] == "bfloat16"
    for r in rows.values():
        assert 0 < r["step_s_best"] <= r["step_s"] and r["first_step_s"] > 0 and r["data_s"] >= 0
        assert r["tokens_per_s"] == pytest.approx(c["tokens_per_step"] / r["step_s"])
        assert r["flops_per_s"] == pytest.approx(c["flops_per_step"] / r["step_s"])
        peak = c["peak"][r["dtype"]]["median"]  # measured in the same turns as the steps
        assert r["mfu_measured"] == pytest.approx(r["flops_per_s"] / peak)
        assert math.isfinite(r["loss"]) and abs(r["loss"] - math.log(65)) < 1.0
        # weights + AdamW state alone are 3 x 4 bytes per parameter
        assert r["peak_memory_bytes"] > 12 * c["parameters"]
    # explicit attention keeps the (batch, heads, T, T) scores for the backward pass; SDPA does not
    scores = 4 * 2 * 128 * 128 * 4
    assert rows["fp32+explicit"]["peak_memory_bytes"] > rows["fp32+fused"]["peak_memory_bytes"] + scores

    table = format_table(result)
    assert str(tiny_config) in table and "MFU" in table and all(v in table for v in variants)


def test_bench_skips_what_does_not_fit(tiny_config):
    result = run_bench([REPO / "configs" / "175b.yaml"], {"device": "cpu", "batch_size": 1},
                       variants=["fp32"], log=lambda msg: None, **FAST)
    rows = result["configs"][str(REPO / "configs" / "175b.yaml")]["variants"]
    assert all("GiB" in r["skipped"] for r in rows)
    assert "skipped" in format_table(result)


def test_bench_data(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text((REPO / "data" / "tinyshakespeare.txt").read_text()[:50_000])
    d = bench_data(text)
    assert d["tokens"] > 10_000 and d["characters"] == 50_000
    for key in ("tiktoken_1_thread_tokens_per_s", "tiktoken_batch_tokens_per_s", "prepare_tokens_per_s"):
        assert d[key] > 0


def test_cli_bench(tiny_config, tmp_path, capsys):
    out = tmp_path / "b.json"
    main(["bench", str(tiny_config), "--width", "64", "--variants", "fp32", "--steps", "1",
          "--warmup", "1", "--text", "", "--json", str(out), "--matmul_size", "128"])
    printed = capsys.readouterr().out
    assert "peak fp32 matmul" in printed and str(tiny_config) in printed
    result = json.loads(out.read_text())
    assert result["overrides"] == {"width": 64}
    assert result["configs"][str(tiny_config)]["model"]["width"] == 64
    with pytest.raises(SystemExit):
        main(["bench", str(tiny_config), "--variants", "fp64"])


def test_vocabulary_padding_changes_speed_not_results():
    """pad_vocab_multiple adds embedding rows that are never predicted: loss, gradients and samples are those
    of the unpadded model with the same weights, and the padding rows learn nothing."""
    plain_cfg = GPTConfig(width=32, depth=1, heads=2, vocab_size=100, max_position_embeddings=16)
    padded_cfg = GPTConfig(**{**plain_cfg.__dict__, "pad_vocab_multiple": 64})
    assert (plain_cfg.padded_vocab_size, padded_cfg.padded_vocab_size) == (100, 128)
    torch.manual_seed(0)
    plain, padded = GPT(plain_cfg), GPT(padded_cfg)
    state = plain.state_dict()
    state["wte.weight"] = state["lm_head.weight"] = torch.cat([state["wte.weight"], torch.randn(28, 32)])
    padded.load_state_dict(state)
    assert sum(p.numel() for p in padded.parameters()) == param_count(padded_cfg) == param_count(plain_cfg) + 28 * 32

    x, y = torch.randint(0, 100, (2, 16)), torch.randint(0, 100, (2, 16))
    assert padded(x).shape == (2, 16, 100)
    plain(x, y).backward()
    padded(x, y).backward()
    assert torch.allclose(padded(x, y), plain(x, y))
    assert torch.allclose(padded.wte.weight.grad[:100], plain.wte.weight.grad, atol=1e-6)
    assert not padded.wte.weight.grad[100:].any()
    out = generate(padded, x[:, :1], 15, generator=torch.Generator().manual_seed(0))
    assert out.max() < 100
    with torch.device("meta"):  # nanoGPT's 50304 rows for 111m; its shipped config (no padding) stays exact
        big = GPT(GPTConfig(**CONFIG_111M, pad_vocab_multiple=64))
    assert sum(p.numel() for p in big.parameters()) == param_count(big.config) == 111_050_496 + 47 * 768


def test_padded_model_exports_to_hugging_face():
    pytest.importorskip("transformers")
    from gigagpt.hf import to_hf

    model = GPT(GPTConfig(width=32, depth=1, heads=2, vocab_size=100, max_position_embeddings=16,
                          pad_vocab_multiple=64)).eval()
    x = torch.randint(0, 100, (1, 16))
    with torch.no_grad():
        assert torch.allclose(to_hf(model)(x).logits, model(x), atol=1e-5)
