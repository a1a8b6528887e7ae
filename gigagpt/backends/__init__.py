"""Backends say *how* each part of a training step happens on one runtime; `gigagpt.train` says *what* happens.

The loop is written once, in cerebras.pytorch's idiom (a traced step, closures for logging and checkpoints).
`Backend` below declares every method the loop calls: a new backend subclasses it and fills in those that
raise NotImplementedError; the rest are the defaults of an eager, single-process runtime. Each backend
module imports its own runtime (torch.distributed, cstorch) and the shared modules (optim, checkpoint,
data), never the loop.
"""
import os
from contextlib import nullcontext

import numpy as np
import torch

from gigagpt import data


def get_backend(run):
    name = run.backend
    if name == "torch" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = "fsdp"  # launched by torchrun: shard across the processes
    if name == "torch":
        from gigagpt.backends.plain import TorchBackend

        return TorchBackend(run)
    if name == "fsdp":
        from gigagpt.backends.fsdp import FSDPBackend

        return FSDPBackend(run)
    from gigagpt.backends.cerebras import CerebrasBackend  # CSX, or cerebras.pytorch's CPU backend

    return CerebrasBackend(run)


class Backend:
    """The seam between the loop and a runtime. `self.run` holds the run's settings (a RunConfig)."""

    rank, world_size, is_main = 0, 1, True  # this process among the run's processes
    device = torch.device("cpu")  # where batches go
    dtype = "float32"  # the precision the backend computes in: "float32" or "bfloat16"

    def __init__(self, run):
        self.run = run

    # --- the model, its optimizer and its checkpoints ---
    def check_fits(self, model_config):
        """Raise GigaGPTError, before anything is allocated, if training cannot fit here. Default: no check."""

    def build_model(self, model_config):
        """The GPT to train, placed (and wrapped) for this runtime, with the weights of
        `GPT.init_weights(self.run.seed)`: the same for every backend and process count."""
        raise NotImplementedError

    def make_optimizer(self, model):
        """AdamW over `optim.param_groups(model, run.weight_decay)`, with `optim.BETAS` and `run.adam_epsilon`."""
        raise NotImplementedError

    def make_scheduler(self, optimizer):
        """A schedule that sets the learning rate of optimizer step s to `optim.lr_at(s, run)`."""
        raise NotImplementedError

    def save_checkpoint(self, step, model, optimizer, scheduler, extra):
        """Write `checkpoint.layout(step, ..., extra)` under run.out_dir, atomically; return its path."""
        raise NotImplementedError

    def load_checkpoint(self, model, optimizer, scheduler):
        """Restore run.checkpoint_path into the model, optimizer and scheduler; return its step."""
        raise NotImplementedError

    # --- the step, in cerebras.pytorch's idiom: identities where the step runs eagerly ---
    def trace(self, fn):
        """Wrap the training step: cstorch records it once as a graph; elsewhere it just runs."""
        return fn

    def step_closure(self, fn):
        """Wrap a function that reads the step's values (logging): cstorch runs it once they exist."""
        return fn

    def checkpoint_closure(self, fn):
        """Wrap the checkpoint function: cstorch runs it after the step, at the steps it was told of."""
        return fn

    def autocast(self):
        """The context the forward pass runs in (bf16 autocast where self.dtype is bfloat16)."""
        return nullcontext()

    def set_gradient_sync(self, model, enabled):
        """Called before each micro-batch: FSDP reduce-scatters gradients only on the last one."""

    # --- data: every process draws the same global batch and keeps its own rows ---
    def global_batch(self, tokens, step, batch_size, stream=0):
        # A pure function of (seed, stream, step): resuming is exact and every process agrees on the batch.
        rng = np.random.default_rng((self.run.seed, stream, step))
        x, y = data.get_batch(tokens, batch_size, self.run.sequence_length, rng)
        rows = slice(self.rank * batch_size // self.world_size, (self.rank + 1) * batch_size // self.world_size)
        x, y = x[rows], y[rows]
        if self.device.type == "cuda":  # page-locked memory: the copy runs while the GPU finishes the last step
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batches(self, tokens, start_step):
        """(step, input_ids, labels) with shape (accumulation steps, micro-batch, T) for this process."""
        accum, T = self.run.gradient_accumulation_steps, self.run.sequence_length
        for step in range(start_step + 1, self.run.num_steps + 1):
            x, y = self.global_batch(tokens, step, self.run.batch_size)
            yield step, x.view(accum, -1, T), y.view(accum, -1, T)

    def eval_batches(self, tokens):
        """The validation batches (the same ones at every evaluation); none where the backend evaluates elsewhere."""
        micro_batch = self.run.batch_size // self.run.gradient_accumulation_steps
        for i in range(self.run.eval_steps):
            yield self.global_batch(tokens, i, micro_batch, stream=1)

    def reduce_mean(self, value):
        """The mean of a scalar over all processes, as a float."""
        return float(value)

    def finish(self):
        """Called once when the loop ends, also after an error or Ctrl-C."""
