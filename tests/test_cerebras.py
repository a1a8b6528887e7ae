"""The Cerebras backends (cerebras.pytorch 2.10.0 on torch 2.4.0), checked from the main test run.

cstorch lives in its own environment, .venv-cerebras (scripts/cerebras_env.sh), so each check runs the real
`gigagpt` command there in a subprocess and compares what it wrote with plain gigagpt here.
"""
import json
import os
import platform
import subprocess

import pytest
import yaml

from gigagpt import load_config
from gigagpt.data import load_meta
from gigagpt.sample import load_model, sample
from gigagpt.train import train

from conftest import REPO, tiny_overrides

CEREBRAS_PYTHON = REPO / ".venv-cerebras" / "bin" / "python"


def why_unavailable():
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return f"cerebras-pytorch 2.10.0 ships wheels for Linux x86_64 only (this is {platform.system()} {platform.machine()})"
    if not CEREBRAS_PYTHON.exists():
        return "no .venv-cerebras here: build it with `make cerebras-env` (scripts/cerebras_env.sh, Python 3.11)"
    return None


pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))

# Losses of cstorch's CPU backend vs plain torch, same seed and batches, fp32, 12 steps with clipping active on
# every step. They differ only in AdamW's epsilon placement (cstorch adds eps before the bias correction).
LOSS_TOLERANCE = 1e-4


def gigagpt_cerebras(*args, cwd, expect_ok=True):
    """`gigagpt ARGS` in .venv-cerebras; returns the finished process."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(CEREBRAS_PYTHON), "-m", "gigagpt", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"gigagpt {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def python_cerebras(code, cwd):
    proc = subprocess.run([str(CEREBRAS_PYTHON), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"cerebras env python failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def write_config(path, data_dir, out_dir, **extra):
    values = tiny_overrides(data_dir, out_dir, **extra)
    path.write_text(yaml.safe_dump(values))
    return path


def metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_cpu_backend_trains_like_plain_torch(char_data, tmp_path):
    """Same GPT, loop, seed and batches: cstorch's CPU backend (traced step, DataExecutor, cstorch AdamW and
    schedule) against the plain torch backend, on torch 2.4.0 beside it and on this environment's torch. A tight
    max_gradient_norm makes clipping act on every step, so a step that clipped only once (gigaGPT's generator of
    parameters) would drift apart."""
    settings = dict(num_steps=12, learning_rate=3e-3, warmup_steps=3, max_gradient_norm=0.05, checkpoint_steps=0)
    config = write_config(tmp_path / "tiny.yaml", char_data, tmp_path / "cpu", **settings)
    gigagpt_cerebras("train", config, "--backend", "CPU", "--artifact_dir", tmp_path / "artifacts", cwd=tmp_path)
    cstorch_rows = metrics(tmp_path / "cpu")
    # plain torch twice: torch 2.4.0 beside cstorch (the package on cstorch's pin), and this environment's torch
    gigagpt_cerebras("train", config, "--backend", "torch", "--out_dir", tmp_path / "torch24", cwd=tmp_path)
    torch24_rows = metrics(tmp_path / "torch24")
    torch_rows = train(load_config(None, **tiny_overrides(char_data, tmp_path / "torch", **settings)), progress=False)

    assert [r["step"] for r in cstorch_rows] == list(range(1, 13))
    assert cstorch_rows[0]["loss"] == pytest.approx(torch24_rows[0]["loss"], abs=1e-6)  # same weights, same batch
    for a, b, c in zip(cstorch_rows, torch24_rows, torch_rows):
        assert a["loss"] == pytest.approx(b["loss"], abs=LOSS_TOLERANCE), a["step"]
        assert b["loss"] == pytest.approx(c["loss"], abs=LOSS_TOLERANCE), b["step"]
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)  # clipping sees every gradient every step
    assert cstorch_rows[-1]["loss"] < cstorch_rows[0]["loss"]


def test_cpu_backend_resumes_exactly_and_its_checkpoints_sample_in_plain_gigagpt(char_data, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", char_data, tmp_path / "a", num_steps=6, checkpoint_steps=3)
    art = tmp_path / "artifacts"
    gigagpt_cerebras("train", config, "--backend", "CPU", "--artifact_dir", art, cwd=tmp_path)
    straight = metrics(tmp_path / "a")
    assert {p.name for p in (tmp_path / "a").glob("checkpoint_*")} == {
        "checkpoint_3.mdl", "checkpoint_3.pt", "checkpoint_6.mdl", "checkpoint_6.pt"}

    # Resume from step 3, checkpointing every 2 steps: the saves land on global steps 4 and 6.
    gigagpt_cerebras("train", config, "--backend", "CPU", "--artifact_dir", art, "--out_dir", tmp_path / "b",
                     "--checkpoint_path", tmp_path / "a" / "checkpoint_3.mdl", "--checkpoint_steps", 2, cwd=tmp_path)
    resumed = metrics(tmp_path / "b")
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[3:]]
    assert sorted(p.name for p in (tmp_path / "b").glob("*.mdl")) == ["checkpoint_4.mdl", "checkpoint_6.mdl"]

    # The .pt beside each .mdl is plain gigagpt's checkpoint format: it loads and samples without cstorch.
    model, encoding = load_model(tmp_path / "a" / "checkpoint_6.pt")
    assert model.config.width == 32 and encoding.n_vocab == load_meta(char_data)["vocab_size"]
    assert len(sample(model, encoding, "ROMEO:", max_new_tokens=20, seed=0)) == len("ROMEO:") + 20


def test_validate_only_lowers_the_training_step_to_cirh(char_data, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", char_data, tmp_path / "out", num_steps=5, dtype="auto")
    art = tmp_path / "artifacts"
    proc = gigagpt_cerebras("train", config, "--backend", "CSX", "--validate_only", "true", "--artifact_dir", art,
                            cwd=tmp_path)
    assert "cirh.mlir" in proc.stdout
    summary = json.loads(python_cerebras(
        "import json; from gigagpt.cirh import compiled_graph, graph_summary\n"
        f"g = graph_summary(compiled_graph({str(art)!r}))\n"
        "print(json.dumps({'ops': g['ops'], 'phases': sorted({p for p, _ in g['phases']}),\n"
        "  'matmul_dtypes': sorted({t['dtype'] for t in g['tensors'] if 'cirh.MatMul' in t['ops']}),\n"
        "  'state': [s[0] for s in g['state']]}))", cwd=tmp_path))
    assert summary["ops"]["cirh.MatMul"] > 0 and summary["ops"]["cirh.SparseSoftmaxCrossEntropyWithLogits"] == 1
    # forward, backward, clipping, AdamW and the schedule are all one graph
    assert summary["phases"] == ["backward", "forward", "gradient clipping", "lr schedule", "optimizer"]
    assert summary["matmul_dtypes"] == ["bf16"]  # CSX runs matmuls in bfloat16
    assert "model.blocks.0.attn.qkv.weight" in summary["state"] and "input_0" in summary["state"]
    assert any(name.startswith("optimizer.state.") and name.endswith("exp_avg_sq") for name in summary["state"])
    assert not list((tmp_path / "out").glob("checkpoint_*"))  # nothing ran: no checkpoint


def test_what_needs_a_cluster_fails_with_one_clear_line(char_data, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", char_data, tmp_path / "out", num_steps=2, dtype="auto")
    proc = gigagpt_cerebras("train", config, "--backend", "CPU", "--validate_only", "true", cwd=tmp_path,
                            expect_ok=False)
    assert proc.returncode == 1 and "use them with backend CSX" in proc.stderr
    proc = gigagpt_cerebras("train", config, "--backend", "CSX", "--compile_only", "true", "--artifact_dir",
                            tmp_path / "artifacts", cwd=tmp_path, expect_ok=False)
    assert proc.returncode == 1
    assert "needs a Cerebras cluster" in proc.stderr and "mgmt_address" in proc.stderr
    assert "Traceback" not in proc.stderr
