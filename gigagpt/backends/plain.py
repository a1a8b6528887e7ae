"""Plain PyTorch on one device: CPU, CUDA or Apple MPS."""
import functools
from pathlib import Path

import torch

from gigagpt import checkpoint, optim, scaling
from gigagpt.backends import Backend
from gigagpt.hardware import resolve_device, resolve_dtype
from gigagpt.model import GPT


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
