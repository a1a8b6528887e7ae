"""Plain PyTorch on one device: CPU, CUDA or Apple MPS."""
import functools
import os
from pathlib import Path

import torch

from gigagpt import checkpoint, optim, scaling
from gigagpt.backends import Backend
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT


def resolve_device(name="auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GigaGPTError(f"device {name!r} asked for, but torch sees no CUDA GPU: use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GigaGPTError(f"device {name!r} asked for, but MPS is not available: use --device cpu")
    return device


@functools.lru_cache(maxsize=None)
def cpu_info():
    """The first processor's entries of /proc/cpuinfo (Linux), e.g. 'model name', 'flags'; {} elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}


def cpu_has_fast_bf16():
    """Whether bf16 matmuls beat fp32 here: CPUs with AMX tiles (Xeon Sapphire Rapids and later) or
    AVX512-BF16 (Zen 4, Cooper Lake). Without either (AVX2-only laptops, Zen 3), bf16 is emulated and a
    matmul runs ~300x slower than fp32. oneDNN's ONEDNN_MAX_CPU_ISA, where set lower, rules those out."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and "BF16" not in isa and "AMX" not in isa:
        return False
    flags = set(cpu_info().get("flags", "").split())
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name, device):
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_fast_bf16() else "float32"
    return "float32"  # MPS: bf16 autocast support varies with the macOS version


class TorchBackend(Backend):
    adamw = None  # "fused", "foreach" or "loop"; None: fused on CPUs and CUDA (`gigagpt bench` compares them)

    def __init__(self, run):
        super().__init__(run)
        self.device = resolve_device(run.device)
        self.dtype = resolve_dtype(run.dtype, self.device)

    def check_fits(self, model_config):
        micro_batch = self.run.batch_size // self.run.gradient_accumulation_steps // self.world_size
        scaling.check_fits(model_config, micro_batch, self.run.sequence_length, self.dtype, self.device.type,
                           shards=self.world_size, checkpointing=self.run.activation_checkpointing)

    def build_model(self, model_config):
        with torch.device("meta"):
            model = GPT(model_config)  # shapes only: no memory, no random numbers yet
        model.to_empty(device=self.device)
        model.init_weights(self.run.seed)
        torch.manual_seed(self.run.seed)  # dropout's random stream
        if self.run.activation_checkpointing:
            apply_activation_checkpointing(model)
        if self.run.compile:
            model.compile()  # compiles forward in place; state_dict keys stay the same
        return model

    def make_optimizer(self, model):
        """Fused AdamW (one multithreaded kernel over all parameters) on CPUs too, where torch's default is a
        Python loop: on 2 CPU cores it steps 163M parameters in 79 ms, the loop in 385."""
        run = self.run
        implementation = self.adamw or ("fused" if self.device.type in ("cuda", "cpu") else "loop")
        return torch.optim.AdamW(optim.param_groups(model, run.weight_decay), lr=run.learning_rate,
                                 betas=optim.BETAS, eps=run.adam_epsilon, fused=implementation == "fused",
                                 foreach=implementation == "foreach")

    def make_scheduler(self, optimizer):
        run = self.run
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: optim.lr_at(step, run) / run.learning_rate)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def save_checkpoint(self, step, model, optimizer, scheduler, extra):
        state = checkpoint.layout(step, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                                  {**extra, "rng": torch.get_rng_state()})
        return checkpoint.save(state, Path(self.run.out_dir) / f"checkpoint_{step}.pt")

    def load_checkpoint(self, model, optimizer, scheduler):
        state = checkpoint.load(self.run.checkpoint_path, keys=("model", "optimizer", "scheduler", "step"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        return state["step"]


def apply_activation_checkpointing(model):
    """Recompute each block's activations in the backward pass instead of storing them.

    Overriding `forward` per block (rather than wrapping modules) keeps the state_dict keys unchanged.
    """
    from torch.utils.checkpoint import checkpoint as recompute

    for block in model.blocks:
        block.forward = functools.partial(recompute, block.forward, use_reentrant=False)
