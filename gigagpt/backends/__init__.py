"""Backends say *how* each part of a training step happens on one runtime; `gigagpt.train` says *what* happens.

The loop is written once, in cerebras.pytorch's idiom (a traced step, closures for logging and checkpoints).
Outside Cerebras those hooks are identities, and each backend only fills in what really differs:
building/placing the model, the optimizer and schedule, which rows of the global batch this process sees,
and how checkpoints are written. Each backend module imports its own runtime (torch.distributed, cstorch).
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
    """Defaults shared by every backend: one process, eager execution, identity hooks."""

    rank, world_size, is_main = 0, 1, True
    device = torch.device("cpu")
    dtype = "float32"

    def __init__(self, run):
        self.run = run

    # --- hooks that cerebras.pytorch implements for real ---
    def trace(self, fn):
        return fn

    def step_closure(self, fn):
        return fn

    def checkpoint_closure(self, fn):
        return fn

    def autocast(self):
        return nullcontext()

    def set_gradient_sync(self, model, enabled):
        pass  # FSDP skips the gradient reduce-scatter on all but the last micro-batch

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
        micro_batch = self.run.batch_size // self.run.gradient_accumulation_steps
        for i in range(self.run.eval_steps):
            yield self.global_batch(tokens, i, micro_batch, stream=1)  # the same batches at every evaluation

    def reduce_mean(self, value):
        return float(value)

    def finish(self):
        pass
