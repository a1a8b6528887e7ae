"""FSDP2 on this machine: two CPU processes (gloo) under torchrun compute what one process computes."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import yaml

from gigagpt import GigaGPTError, load_config
from gigagpt.sample import load_model
from gigagpt.train import train

from conftest import REPO, tiny_overrides

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")

STEPS = 20


def torchrun(args, tmp_path, nproc=2):
    """Run `torchrun --standalone --nproc_per_node N ARGS`; fail with the tail of its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def write_config(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def losses(out_dir):
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.fixture(scope="module")
def runs(char_data, tmp_path_factory):
    """One process vs two (gradient accumulation and activation checkpointing on), same global batch;
    then the two-process run resumed from its step-10 distributed checkpoint."""
    root = tmp_path_factory.mktemp("fsdp")
    common = dict(num_steps=STEPS, batch_size=8, checkpoint_steps=10, gradient_accumulation_steps=2)
    one = tiny_overrides(char_data, root / "one", **common)
    train(load_config(None, **one), progress=False)
    two = tiny_overrides(char_data, root / "two", **common, activation_checkpointing=True)
    config = write_config(root / "two.yaml", two)
    torchrun(["-m", "gigagpt", "train", config], root)
    torchrun(["-m", "gigagpt", "train", config, "--out_dir", str(root / "resumed"),
              "--checkpoint_path", str(root / "two" / "checkpoint_10")], root)
    return root


def test_two_processes_match_one(runs):
    one, two = losses(runs / "one"), losses(runs / "two")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5
    assert two[STEPS] < two[1] - 0.2  # and it learns


def test_distributed_checkpoints_are_complete_folders(runs, tmp_path):
    from gigagpt.checkpoint import TRAINER_FILE, check_distributed

    for step in (10, STEPS):
        folder = runs / "two" / f"checkpoint_{step}"
        check_distributed(folder)  # .metadata and trainer.pt are there, and the metadata is plain
        trainer = torch.load(folder / TRAINER_FILE, weights_only=True)
        assert trainer["step"] == step and trainer["world_size"] == 2 and len(trainer["rng"]) == 2
    assert not list((runs / "two").glob("*.tmp"))
    partial = tmp_path / "checkpoint_3"  # what a crash before the rename would leave under the final name
    partial.mkdir()
    (partial / TRAINER_FILE).write_bytes((runs / "two" / "checkpoint_10" / TRAINER_FILE).read_bytes())
    with pytest.raises(GigaGPTError, match="not a complete distributed checkpoint"):
        check_distributed(partial)


def test_resume_from_distributed_checkpoint_is_exact(runs):
    two, resumed = losses(runs / "two"), losses(runs / "resumed")
    assert sorted(resumed) == list(range(11, STEPS + 1))
    assert [resumed[s] for s in resumed] == [two[s] for s in resumed]  # bit for bit


def test_convert_round_trip(runs, char_data):
    from gigagpt.cli import main

    out = runs / "converted_20.pt"
    main(["convert", str(runs / "two" / f"checkpoint_{STEPS}"), str(out)])
    converted = torch.load(out, weights_only=True)
    reference = torch.load(runs / "one" / f"checkpoint_{STEPS}.pt", weights_only=True)
    assert converted["step"] == STEPS and converted["config"]["model"] == reference["config"]["model"]
    assert converted["tokenizer"] == reference["tokenizer"]
    assert converted["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(converted["model"][name], tensor, rtol=0, atol=1e-5)
    model, encoding = load_model(out)  # what `gigagpt sample` and gigagpt.hf start from
    assert encoding.decode(encoding.encode("ROMEO:")) == "ROMEO:"
    assert model.lm_head.weight is model.wte.weight

    # The converted step-10 checkpoint continues on one process like the one-process run itself.
    main(["convert", str(runs / "two" / "checkpoint_10"), str(runs / "converted_10.pt")])
    cfg = load_config(None, **tiny_overrides(char_data, runs / "continued", num_steps=STEPS, batch_size=8,
                                             gradient_accumulation_steps=2,
                                             checkpoint_path=str(runs / "converted_10.pt")))
    continued = {row["step"]: row["loss"] for row in train(cfg, progress=False)}
    one = losses(runs / "one")
    assert sorted(continued) == list(range(11, STEPS + 1))
    assert max(abs(continued[s] - one[s]) for s in continued) < 1e-5


def test_init_from_meta_equals_one_process_init(tmp_path):
    """Every process's shard equals the same slice of GPT(config, seed) built whole (uneven shards too)."""
    script = tmp_path / "check_init.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist
        from gigagpt import load_config
        from gigagpt.backends.fsdp import FSDPBackend, local_shard
        from gigagpt.model import GPT

        cfg = load_config(None, width=24, depth=3, heads=2, vocab_size=67, max_position_embeddings=9,
                          backend="fsdp", device="cpu", dtype="float32", batch_size=2, seed=5)
        backend = FSDPBackend(cfg.run)
        model = backend.build_model(cfg.model)
        reference = dict(GPT(cfg.model, seed=5).named_parameters())
        for name, p in model.named_parameters():
            assert torch.equal(p.to_local(), local_shard(reference[name].detach(), p)), name
        assert model.lm_head.weight is model.wte.weight
        print(f"rank {backend.rank}: init ok")
        backend.finish()
    """))
    done = torchrun([str(script)], tmp_path)
    assert done.stdout.count("init ok") == 2


def test_one_file_checkpoint_continues_sharded(char_data, tmp_path):
    """A one-device checkpoint loads into FSDP (here a world of one process) and training goes on identically."""
    common = dict(num_steps=8, checkpoint_steps=4)
    one = {row["step"]: row["loss"] for row in train(load_config(None, **tiny_overrides(char_data, tmp_path / "a", **common)), progress=False)}
    cfg = load_config(None, **tiny_overrides(char_data, tmp_path / "b", **common, backend="fsdp",
                                             checkpoint_path=str(tmp_path / "a" / "checkpoint_4.pt")))
    sharded = {row["step"]: row["loss"] for row in train(cfg, progress=False)}
    assert not dist.is_initialized()  # finish() tore its process group down
    assert sorted(sharded) == [5, 6, 7, 8]
    assert max(abs(sharded[s] - one[s]) for s in sharded) < 1e-6
    assert (tmp_path / "b" / "checkpoint_8" / "trainer.pt").is_file()


def test_batch_must_split_evenly(monkeypatch):
    from gigagpt.backends.fsdp import FSDPBackend

    monkeypatch.setenv("WORLD_SIZE", "4")
    run = load_config(None, backend="fsdp", device="cpu", batch_size=6, gradient_accumulation_steps=3).run
    with pytest.raises(GigaGPTError, match=r"divisible by processes x gradient_accumulation_steps \(4 x 3 = 12\)"):
        FSDPBackend(run)


# --- the scaling arithmetic notebook 05 reads, checked against real (meta-device, FSDP-sharded) models ---

@pytest.fixture(scope="module")
def gpt3():
    return load_config(REPO / "configs" / "175b.yaml").model


def test_fsdp_units_and_shards_match_the_sharded_175b(gpt3):
    from gigagpt import scaling
    from gigagpt.course.sharding import shard_on_fake_ranks

    try:
        model = shard_on_fake_ranks(gpt3, world_size=8, rank=3)
    except GigaGPTError as e:
        pytest.skip(str(e))
    units = scaling.fsdp_units(gpt3)
    assert units["block"] == sum(p.numel() for p in model.blocks[0].parameters())
    in_blocks = {id(p) for p in model.blocks.parameters()}
    assert units["root"] == sum(p.numel() for p in model.parameters() if id(p) not in in_blocks)
    local = sum(p.to_local().numel() for p in model.parameters())  # this rank's fp32 weights
    memory = scaling.fsdp_memory(gpt3, 1, 2048, gpus=8)
    assert local * 4 == pytest.approx(memory["weights"], rel=1e-5)  # torch.chunk rounds rows up, a little
    assert memory["optimizer"] == 2 * memory["weights"] and model.blocks[0].attn.qkv.weight.to_local().shape == (4608, 12288)


def test_gpus_needed_is_the_fewest_that_fit(gpt3):
    from gigagpt import scaling

    h100 = scaling.ACCELERATORS["H100"]["memory"]
    n = scaling.gpus_needed(gpt3, 2048, h100)
    assert scaling.fsdp_memory(gpt3, 1, 2048, n)["total"] <= 0.9 * h100 < scaling.fsdp_memory(gpt3, 1, 2048, n - 1)["total"]
    assert scaling.gpus_needed(gpt3, 2048, scaling.ACCELERATORS["H200"]["memory"]) < n
    assert scaling.gpus_needed(gpt3, 2048, 10e9) is None  # activations + gathered blocks alone overflow 10 GB


def test_weight_streaming_and_time_to_train(gpt3):
    from gigagpt import scaling
    from gigagpt.model import GPT

    with torch.device("meta"):
        n = sum(p.numel() for p in GPT(gpt3).parameters())
    assert scaling.weight_streaming_memory(gpt3, 1, 2048)["memoryx"] == 12 * n
    assert scaling.weight_streaming_memory(gpt3, 1, 2048)["wafer_weights"] == 50257 * 12288 * 2  # the LM head
    # 300B tokens (GPT-3's budget) on 1024 H100s at 40% MFU: 6N·D / (1024 · 989.4e12 · 0.4) plus attention
    seconds = scaling.training_seconds(gpt3, 300e9, 2048, 1024, 989.4e12, 0.4)
    assert 6 * n * 300e9 / (1024 * 989.4e12 * 0.4) < seconds < 1.1 * 6 * n * 300e9 / (1024 * 989.4e12 * 0.4)
    plan = scaling.cluster_plan(gpt3, batch_size=1536, sequence_length=2048, gpus=1024, tokens=300e9)
    assert plan["parameters"] == n and plan["micro_batch"] == 1 and plan["fits"]
    assert plan["days"] == pytest.approx(seconds / 86400)


def test_fsdp_traffic_counts_the_collectives_of_a_real_step(tmp_path):
    """scaling.fsdp_traffic (notebook 05's communication per step) against the bytes FSDP2 really moves in one
    step of 2 processes with 2 micro-batches: every unit gathered twice per micro-batch, gradients
    reduce-scattered once (fp32 on CPUs: 4 bytes both ways)."""
    script = tmp_path / "count.py"
    script.write_text(textwrap.dedent("""
        import json, torch, torch.distributed as dist
        from gigagpt import load_config, scaling
        from gigagpt.backends.fsdp import FSDPBackend
        from gigagpt.train import make_training_step

        moved = {"all_gather": 0, "reduce_scatter": 0}
        def counting(kind, original):
            def collective(*args, **kwargs):
                tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
                moved[kind] += max(t.numel() * t.element_size() for t in tensors)  # the full (unsharded) side
                return original(*args, **kwargs)
            return collective
        for name, kind in (("all_gather_single", "all_gather"), ("all_gather_into_tensor", "all_gather"),
                           ("reduce_scatter_single", "reduce_scatter"), ("reduce_scatter_tensor", "reduce_scatter")):
            if hasattr(dist, name):
                setattr(dist, name, counting(kind, getattr(dist, name)))

        cfg = load_config(None, width=32, depth=3, heads=2, vocab_size=96, max_position_embeddings=16, backend="fsdp",
                          device="cpu", dtype="float32", batch_size=8, sequence_length=16, gradient_accumulation_steps=2)
        backend = FSDPBackend(cfg.run)
        model = backend.build_model(cfg.model)
        optimizer = backend.make_optimizer(model)
        step = make_training_step(backend, model, optimizer, backend.make_scheduler(optimizer))
        tokens = torch.randint(0, 96, (4096,)).numpy().astype("uint16")
        batches = backend.batches(tokens, 0)
        _, x, y = next(batches)
        step(x, y)  # warm-up: lazy initialisation of FSDP's state
        moved.update(all_gather=0, reduce_scatter=0)
        _, x, y = next(batches)
        step(x, y)
        predicted = scaling.fsdp_traffic(cfg.model, 2, micro_batches=2, gather_bytes=4, reduce_bytes=4)
        share = 1 / 2  # each of 2 processes sends half of a collective's full tensor
        if backend.rank == 0:
            print(json.dumps({k: [moved[k] * share, predicted[k]] for k in moved}))
        backend.finish()
    """))
    done = torchrun([str(script)], tmp_path)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    for kind, (real, predicted) in measured.items():
        assert real == pytest.approx(predicted, rel=0.02), (kind, real, predicted)  # FSDP pads shards a little
