"""gigagpt bench: what it measures and how long it may take (correctness only: no speed is asserted)."""
import json
import math
import time

import pytest
import torch
import yaml

from gigagpt import GPT, GPTConfig, GigaGPTError, bench, scaling
from gigagpt.bench import MatmulPeak, Variant, bench_data, default_variants, format_table, nominal_peak, run_bench
from gigagpt.cli import main
from gigagpt.sample import generate
from gigagpt.scaling import param_count

from conftest import REPO

TINY = dict(width=32, depth=2, heads=2, vocab_size=65, max_position_embeddings=128, dropout=0.0,
            batch_size=4, sequence_length=128, device="cpu", dtype="auto")
CONFIG_111M = dict(width=768, depth=10, heads=12, vocab_size=50257, max_position_embeddings=2048)
FAST = dict(seconds=0.2, max_steps=3, warmup=1, matmul_size=128)


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_variant_names():
    assert Variant.parse("bf16+compile+explicit") == Variant(
        "bf16+compile+explicit", dtype="bfloat16", attention="explicit", compile=True)
    assert Variant.parse("fp32+foreach+chunked") == Variant("fp32+foreach+chunked", "float32", loss="chunked",
                                                            adamw="foreach")
    assert Variant.parse("bf16+pad64").pad_vocab_multiple == 64
    for bad in ("fp16", "fp32+flash", "bf16+", "bf16+pad0"):
        with pytest.raises(GigaGPTError):
            Variant.parse(bad)


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_only_where_the_cpu_has_it(monkeypatch, tiny_config, fast):
    """Without AMX or AVX512-BF16, bf16 is emulated: no bf16 variant by default and no bf16 peak matmul (at
    2048^2 it takes about a minute there), unless one is asked for."""
    monkeypatch.setattr(bench, "cpu_has_fast_bf16", lambda: fast)
    names = default_variants(torch.device("cpu"))
    assert any(n.startswith("bf16") for n in names) == fast and "fp32" in names
    result = run_bench([tiny_config], {"dtype": "float32"}, variants=["fp32"], log=lambda msg: None, **FAST)
    assert (result["peak"]["measured"]["bfloat16"] is not None) == fast
    assert result["machine"]["fast_bf16"] == fast
    if not fast:
        assert "bf16 matmul: not measured" in format_table(result)
        asked = run_bench([], variants=["bf16"], log=lambda msg: None, **FAST)  # asked for: measured anyway
        assert asked["peak"]["measured"]["bfloat16"]["median"] > 0


def test_peak_matmul_size_follows_the_time_it_takes():
    """Unless given, the matmul's size is what takes ~`seconds` here: a fast dtype gets a bigger one."""
    small = MatmulPeak(torch.device("cpu"), "float32", seconds=0.001)
    large = MatmulPeak(torch.device("cpu"), "float32", seconds=0.2)
    assert 128 <= small.size < large.size <= 2048 and large.size % 64 == 0
    small.measure(3)
    assert small.summary()["samples"] == 3 and small.summary()["median"] > 1e8  # > 0.1 GFLOP/s on any CPU


def test_measurements_are_bounded_by_time():
    calls = []
    slow_step = lambda n: (calls.append(n), time.sleep(0.05))  # noqa: E731
    start = time.perf_counter()
    bench._time_until(0.3, 100, [slow_step], [])
    assert 0.3 <= time.perf_counter() - start < 1.0 and 5 <= len(calls) <= 8  # not 100 steps
    calls.clear()
    bench._time_until(0.0, 100, [slow_step], [])
    assert len(calls) == 2  # at least two, for a median


def test_accelerators_by_device_name(monkeypatch):
    assert scaling.accelerator("NVIDIA H100 80GB HBM3")["peak_flops"] == 989.4e12
    assert scaling.accelerator("NVIDIA H100 PCIe")["peak_flops"] == 756e12  # the longest name that matches
    assert scaling.accelerator("NVIDIA GH200 480GB")["memory"] == 96e9  # not the H200
    assert scaling.accelerator("Some Future GPU") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak = nominal_peak(torch.device("cuda"))
    assert (peak["float32"], peak["bfloat16"]) == (66.9e12, 989.4e12) and "datasheet" in peak["source"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert nominal_peak(torch.device("cuda"))["bfloat16"] is None


def test_bench_runs_what_each_variant_names(tiny_config, tmp_path, monkeypatch):
    from gigagpt import hardware

    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)  # dtype auto: bf16, whatever this CPU has
    out = tmp_path / "bench.json"
    variants = ["fp32+loop", "fp32+fused", "fp32+explicit", "bf16+explicit"]
    result = run_bench([tiny_config], variants=variants, json_path=out, log=lambda msg: None, **FAST)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    c = result["configs"][str(tiny_config)]
    rows = {r["variant"].split(" = ")[0].rstrip("*"): r for r in c["variants"]}
    assert set(rows) == set(variants)  # the default (bf16 auto here; auto attention: explicit at T=128) is one
    assert [r["variant"] for r in c["variants"]].count("bf16+explicit*") == 1  # of them: timed once
    # the settings are read back from what was built, not from the name
    assert (rows["fp32+loop"]["optimizer"], rows["fp32+fused"]["optimizer"]) == ("loop", "fused")
    assert rows["fp32+explicit"]["attention"] == "explicit" and rows["bf16+explicit"]["dtype"] == "bfloat16"
    assert (rows["fp32+loop"]["attention"], rows["fp32+loop"]["loss"]) == ("sdpa", "plain")  # what auto ran
    assert c["interleaved"] and c["peak"]["float32"]["samples"] == c["peak"]["bfloat16"]["samples"] >= 2
    for r in rows.values():
        assert 2 <= r["steps"] <= 3 and 0 < r["step_s_best"] <= r["step_s"]
        # every variant trains the same model on the same batches: an untrained loss, and the same one
        assert abs(r["train_loss"] - math.log(65)) < 0.5
        assert r["train_loss"] == pytest.approx(rows["fp32+loop"]["train_loss"], abs=0.02)
        assert r["peak_memory_bytes"] > 12 * c["parameters"]  # weights + AdamW state alone are 12 bytes/param
    # explicit attention keeps the (batch, heads, T, T) scores for the backward pass; SDPA does not
    assert rows["fp32+explicit"]["peak_memory_bytes"] > rows["fp32+fused"]["peak_memory_bytes"] + 4 * 2 * 128 * 128 * 4
    table = format_table(result)
    assert str(tiny_config) in table and "MFU meas" in table and all(v in table for v in variants)


def test_bench_skips_what_does_not_fit():
    result = run_bench([REPO / "configs" / "175b.yaml"], {"device": "cpu", "batch_size": 1},
                       variants=["fp32"], log=lambda msg: None, **FAST)
    rows = result["configs"][str(REPO / "configs" / "175b.yaml")]["variants"]
    assert rows and all("GiB" in r["skipped"] for r in rows)
    assert "skipped" in format_table(result)


def test_bench_data(tmp_path):
    from gigagpt.tokenizer import get_encoding

    text = (REPO / "data" / "tinyshakespeare.txt").read_text()[:50_000]
    (tmp_path / "text.txt").write_text(text)
    d = bench_data(tmp_path / "text.txt")
    assert d["tokens"] == len(get_encoding("gpt2").encode_ordinary(text)) and d["characters"] == 50_000


def test_cli_bench(tiny_config, tmp_path, capsys):
    out = tmp_path / "b.json"
    main(["bench", str(tiny_config), "--width", "64", "--variants", "fp32", "--seconds", "0.1", "--steps", "2",
          "--warmup", "0", "--text", "", "--json", str(out), "--matmul_size", "128"])
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
