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
shards, so the run's out_dir must be on a filesystem all nodes share); `gigagpt convert`
(`checkpoint.convert_distributed`) turns one into the single-file checkpoint that `gigagpt sample` reads.
"""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_state_dict, set_model_state_dict, set_optimizer_state_dict, set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh

try:  # torch >= 2.6
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
except ImportError:  # torch 2.4 and 2.5
    from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard

from gigagpt import checkpoint
from gigagpt.backends.plain import TorchBackend, apply_activation_checkpointing
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT


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

    def build_model(self, model_config):
        with torch.device("meta"):
            model = GPT(model_config)  # shapes only: no memory, no random numbers yet
        if self.run.activation_checkpointing:
            apply_activation_checkpointing(model)  # before sharding, so recomputation sits inside each FSDP unit
        # bf16 all-gathers and matmuls, fp32 gradient reduction and master weights (on GPUs; gloo lacks bf16)
        mixed = self.device.type == "cuda" and self.dtype == "bfloat16"
        shard(model, self.mesh, mixed_precision=mixed)
        model.to_empty(device=self.device)  # allocate this process's shards only
        init_shards(model, self.run.seed)
        model.reshard()
        if self.run.compile:
            model.compile()
        # Dropout: a different stream on every process (their rows differ), reproducible from the seed.
        torch.manual_seed(int(np.random.SeedSequence([self.run.seed, self.rank]).generate_state(1)[0]))
        return model

    def set_gradient_sync(self, model, enabled):
        model.set_requires_gradient_sync(enabled)  # accumulate locally; reduce-scatter on the last micro-batch

    def reduce_mean(self, value):
        t = torch.as_tensor(value).detach().to(self.device, torch.float64).reshape(1)
        dist.all_reduce(t)  # a sum (gloo has no average); every process has an equal share of the batch
        return t.item() / self.world_size

    # --- checkpoints: a torch.distributed.checkpoint folder, renamed into place once complete ---
    def save_checkpoint(self, step, model, optimizer, scheduler, extra):
        final = Path(self.run.out_dir) / f"checkpoint_{step}"
        tmp = checkpoint.temporary(final)
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)  # left by a crash
        dist.barrier()
        model.reshard()  # after an evaluation the root stays gathered; save shards, not full tensors
        model_state, optimizer_state = get_state_dict(model, optimizer)
        rng = [None] * self.world_size
        dist.all_gather_object(rng, rng_state(self.device))
        state = checkpoint.layout(step, model_state, optimizer_state, scheduler.state_dict(),
                                  {**extra, "rng": rng, "world_size": self.world_size})
        dcp.save({"model": state.pop("model"), "optimizer": state.pop("optimizer")}, checkpoint_id=tmp)
        if self.is_main:
            torch.save(state, tmp / checkpoint.TRAINER_FILE)  # the rest of the layout, written last
            checkpoint.commit(tmp, final)  # atomic: a folder named checkpoint_STEP is always complete
        dist.barrier()
        return final

    def load_checkpoint(self, model, optimizer, scheduler):
        path = Path(self.run.checkpoint_path)
        if path.is_file():  # a single-file checkpoint (one device, or `gigagpt convert`): continue it sharded
            state = checkpoint.load(path, keys=("model", "optimizer", "scheduler", "step"))
            full = StateDictOptions(full_state_dict=True)
            set_model_state_dict(model, state["model"], options=full)
            optimizer_state = checkpoint.optimizer_state_by_name(state["optimizer"], model, optimizer)
            set_optimizer_state_dict(model, optimizer, optimizer_state, options=full)
            scheduler.load_state_dict(state["scheduler"])
            return state["step"]
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        trainer = checkpoint.load_distributed(path, state)  # each process reads the pieces of its own shards
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        if trainer["world_size"] == self.world_size:  # same processes: continue their dropout streams
            set_rng_state(trainer["rng"][self.rank], self.device)
        return trainer["step"]

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


@torch.no_grad()
def init_shards(model, seed):
    """GPT.init_weights for a sharded model: each full tensor is drawn on this process's device, exactly as one
    process draws it (its own generator, seeded by name), and only this process's shard is kept. One full
    tensor at a time; on a GPU, 175B numbers take seconds."""
    for name, param in model.named_parameters():
        full = torch.empty(param.shape, dtype=param.dtype, device=param.to_local().device)
        model.init_parameter(name, full, seed)
        param.to_local().copy_(local_shard(full, param))


def local_shard(full, dtensor):
    """This process's piece of `full`, laid out like `dtensor` (torch.chunk along each sharded dimension)."""
    for mesh_dim, placement in enumerate(dtensor.placements):
        if placement.is_shard():
            n, rank = dtensor.device_mesh.size(mesh_dim), dtensor.device_mesh.get_local_rank(mesh_dim)
            chunks = torch.chunk(full, n, dim=placement.dim)
            full = chunks[rank] if rank < len(chunks) else full.narrow(placement.dim, 0, 0)
    return full


def rng_state(device):
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
