"""FSDP2 under torchrun: the same model and the same loop, sharded over many GPUs (or CPU processes).

    torchrun --nproc_per_node 8 -m gigagpt train configs/1p3b.yaml                # one node, 8 GPUs
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m gigagpt train configs/13b.yaml        # every node runs this

Every process holds 1/N of each weight, gradient and AdamW moment. Before a block runs, its full weights are
all-gathered, used, and dropped again; after its backward pass, its gradients are reduce-scattered so each
process keeps only its shard's sum. That is the GPU counterpart of Cerebras' weight streaming: the model code
does not change. `batch_size` stays the global batch; each process takes its rows of the same global batch,
so N processes compute what one process would (up to float rounding).

Checkpoints are torch.distributed.checkpoint folders (out_dir/checkpoint_STEP/: every process writes its own
shards, so the run's out_dir must be on a filesystem all nodes share); `gigagpt convert` turns one into the
single-file checkpoint that `gigagpt sample` and `gigagpt.hf` read.
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_state_dict, set_model_state_dict, set_optimizer_state_dict, set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.overrides import TorchFunctionMode

try:  # torch >= 2.6
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
except ImportError:  # torch 2.4 and 2.5
    from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor
except ImportError:
    from torch.distributed._tensor import DTensor

from gigagpt.backends.plain import TorchBackend, apply_activation_checkpointing, atomic_save, load_checkpoint_file
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT

TRAINER_FILE = "trainer.pt"  # step, schedule, RNG, config, tokenizer: written last, by rank 0


class FSDPBackend(TorchBackend):
    def __init__(self, run):
        super().__init__(run)  # device type (cuda / cpu) and dtype, as for one process
        if self.device.type not in ("cuda", "cpu"):
            raise GigaGPTError(f"FSDP runs on CUDA GPUs or CPUs, not {self.device.type}: use --device cpu")
        world_size = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        check_batch(run.batch_size, world_size, run.gradient_accumulation_steps)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            device_id = self.device if self.device.type == "cuda" else None
            if "RANK" in os.environ:  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
                dist.init_process_group(backend, device_id=device_id)
            else:  # `--backend fsdp` in a plain process: a world of one
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.mesh = init_device_mesh(self.device.type, (self.world_size,))

    def build_model(self, model_config, seed):
        with torch.device("meta"):
            model = GPT(model_config)  # shapes only: no memory, no random numbers yet
        if self.run.activation_checkpointing:
            apply_activation_checkpointing(model)  # before sharding, so recomputation sits inside each FSDP unit
        # bf16 all-gathers and matmuls, fp32 gradient reduction and master weights (on GPUs; gloo lacks bf16)
        mixed = self.device.type == "cuda" and self.dtype == "bfloat16"
        shard(model, self.mesh, mixed_precision=mixed)
        model.to_empty(device=self.device)  # allocate this process's shards only
        init_like_one_process(model, seed)
        model.reshard()
        if self.run.compile:
            model.compile()
        # Dropout: a different stream on every process (their rows differ), reproducible from the seed.
        torch.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0]))
        return model

    def set_gradient_sync(self, model, enabled):
        model.set_requires_gradient_sync(enabled)  # accumulate locally; reduce-scatter on the last micro-batch

    def reduce_mean(self, value):
        t = torch.as_tensor(value).detach().to(self.device, torch.float64).reshape(1)
        dist.all_reduce(t)  # a sum (gloo has no average); every process has an equal share of the batch
        return t.item() / self.world_size

    # --- checkpoints: a torch.distributed.checkpoint folder, renamed into place once complete ---
    def save_checkpoint(self, out_dir, step, model, optimizer, scheduler, extra):
        final = Path(out_dir) / f"checkpoint_{step}"
        tmp = final.with_name(final.name + ".tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)  # left by a crash
        dist.barrier()
        model.reshard()  # after an evaluation the root stays gathered; save shards, not full tensors
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
        rng = [None] * self.world_size
        dist.all_gather_object(rng, rng_state(self.device))
        if self.is_main:
            trainer = {"step": step, "scheduler": scheduler.state_dict(), "rng": rng,
                       "world_size": self.world_size, **extra}
            torch.save(trainer, tmp / TRAINER_FILE)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # atomic: a folder named checkpoint_STEP is always complete
        dist.barrier()
        return final

    def load_checkpoint(self, path, model, optimizer, scheduler):
        path = Path(path)
        if path.is_file():  # a single-file checkpoint (one device, or `gigagpt convert`): continue it sharded
            state = load_checkpoint_file(path)
            full = StateDictOptions(full_state_dict=True)
            set_model_state_dict(model, state["model"], options=full)
            set_optimizer_state_dict(model, optimizer, optimizer_state_by_name(state["optimizer"], model, optimizer),
                                     options=full)
            scheduler.load_state_dict(state["scheduler"])
            return state
        check_complete(path)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=path)  # each process reads the pieces of its own shards
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=False)
        scheduler.load_state_dict(trainer["scheduler"])
        if trainer["world_size"] == self.world_size:  # same processes: continue their dropout streams
            set_rng_state(trainer["rng"][self.rank], self.device)
        return trainer

    def finish(self):
        if self.owns_group and dist.is_initialized():
            if sys.exc_info()[0] is None:  # on an error the others may never arrive: don't wait for them
                dist.barrier()  # a process that tears down while a peer still talks to it can abort the peer
            dist.destroy_process_group()


def check_batch(batch_size, world_size, accumulation_steps):
    if batch_size % (world_size * accumulation_steps):
        raise GigaGPTError(
            f"batch_size ({batch_size}) must be divisible by processes x gradient_accumulation_steps "
            f"({world_size} x {accumulation_steps} = {world_size * accumulation_steps}): every process "
            f"takes an equal share of each micro-batch"
        )


def shard(model, mesh, mixed_precision=False, reshard_after_forward=True):
    """FSDP2 on a GPT: one all-gather unit per block, and the root for embeddings, final norm and LM head.

    The tied wte / lm_head matrix must sit in one unit: sharding the root (not wte alone) keeps it there.
    """
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


class _InitShardsAsOneProcess(TorchFunctionMode):
    """Run in-place initialisers (normal_, uniform_, zeros_, ...) of a sharded parameter on a full-size CPU
    tensor instead, then keep this process's shard of it.

    The CPU random stream then advances exactly as when one process builds GPT(config), so every world size
    starts from the same weights, bit for bit. (Initialising the shards directly would not: on a CPU mesh,
    every process would draw the same numbers for its own shard.) Costs one full tensor at a time.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")
        if not (isinstance(target, DTensor) and name.endswith("_") and not name.startswith("__")):
            return func(*args, **kwargs)
        full = torch.empty(target.shape, dtype=target.dtype)  # on the CPU, like GPT(config)
        if args:
            args = (full, *args[1:])
        else:
            kwargs = {**kwargs, "tensor": full}
        func(*args, **kwargs)
        target.to_local().copy_(local_shard(full, target))
        return target


def local_shard(full, dtensor):
    """This process's piece of `full`, laid out like `dtensor` (torch.chunk along each sharded dimension)."""
    for mesh_dim, placement in enumerate(dtensor.placements):
        if placement.is_shard():
            n, rank = dtensor.device_mesh.size(mesh_dim), dtensor.device_mesh.get_local_rank(mesh_dim)
            chunks = torch.chunk(full, n, dim=placement.dim)
            full = chunks[rank] if rank < len(chunks) else full.narrow(placement.dim, 0, 0)
    return full


@torch.no_grad()
def init_like_one_process(model, seed):
    """Initialise a sharded GPT (materialised from meta) exactly as `torch.manual_seed(seed); GPT(config)` does."""
    torch.manual_seed(seed)
    with _InitShardsAsOneProcess():
        # GPT(config) first runs each layer's own constructor init (consuming random numbers), then its
        # reset_parameters: replay both, in construction order (= module registration order).
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        model.reset_parameters()


def rng_state(device):
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def optimizer_state_by_name(state, model, optimizer):
    """A one-process optimizer.state_dict() (parameters numbered in group order) -> keyed by parameter name."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def optimizer_state_by_number(state):
    """The inverse: parameter names -> numbers in group order, as a one-process optimizer.state_dict()."""
    number = {name: i for i, name in enumerate(n for g in state["param_groups"] for n in g["params"])}
    return {
        "state": {number[name]: s for name, s in state["state"].items()},
        "param_groups": [{**g, "params": [number[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def check_complete(path):
    path = Path(path)
    if not (path / ".metadata").is_file() or not (path / TRAINER_FILE).is_file():
        raise GigaGPTError(
            f"{path} is not a complete distributed checkpoint (expected a checkpoint_STEP folder with "
            f".metadata and {TRAINER_FILE})"
        )


def convert_checkpoint(checkpoint_dir, out_path):
    """A distributed checkpoint folder -> the single-file checkpoint of the plain backend (no GPUs needed).

    The result loads with gigagpt.sample.load_model, converts with gigagpt.hf.to_hf, and resumes training on
    one device (`--checkpoint_path OUT.pt`) or sharded again. Needs the full model in CPU memory.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint_dir, out_path = Path(checkpoint_dir), Path(out_path)
    check_complete(checkpoint_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        dcp_to_torch_save(checkpoint_dir, Path(tmp) / "full.pt")  # gathers every shard into full tensors
        state = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=False)
    trainer = torch.load(checkpoint_dir / TRAINER_FILE, map_location="cpu", weights_only=False)
    model = state["model"]
    model.setdefault("lm_head.weight", model["wte.weight"])  # tied: one tensor under both names
    single = {
        "model": model,
        "optimizer": optimizer_state_by_number(state["optimizer"]),
        "scheduler": trainer["scheduler"],
        "step": trainer["step"],
        "rng": trainer["rng"][0]["cpu"],
        "config": trainer["config"],
        "tokenizer": trainer["tokenizer"],
    }
    atomic_save(single, out_path)
    return out_path


def shard_on_fake_ranks(model_config, world_size, rank=0):
    """GPT(model_config) on the meta device, sharded by FSDP2 exactly as for training over `world_size`
    processes, as seen by process `rank`: its parameters are DTensors whose .to_local() is that process's
    shard (shapes only, no memory). Simulated in this one process with torch's fake process group, an
    internal testing API that may move between torch versions.
    """
    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore
    except ImportError as e:
        raise GigaGPTError(f"this torch has no fake process group to simulate {world_size} processes ({e})") from None
    if dist.is_initialized():
        raise GigaGPTError("a process group is already running in this process: simulate sharding in a fresh one")
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)
    try:
        with torch.device("meta"):
            model = GPT(model_config)
        shard(model, init_device_mesh("cpu", (world_size,)))
    finally:
        dist.destroy_process_group()
    return model
