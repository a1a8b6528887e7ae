"""cerebras.pytorch ("cstorch"): the same GPT and training loop on Cerebras CSX systems, or on cstorch's CPU backend.

`backend: CSX` runs the loop as gigaGPT does: the model is built on the backend's lazy device and wrapped by
`cstorch.compile`; the training step (forward, backward, clipping, AdamW, learning-rate schedule) is traced
once and compiled as one graph; batches stream through `cstorch.utils.data.DataExecutor`; logging and
checkpoints run in step closures once a step's values are back. In weight-streaming execution the weights and
optimizer state live off the wafer (MemoryX) and stream through it layer by layer, and `num_csx` systems split
the batch (data parallel), so the same model code and the same command train 111M or 175B parameters on one
system or many. `backend: CPU` is cstorch's CPU backend: the same structure, executed eagerly on the CPU, whose
losses match plain torch.

`validate_only` traces the step lazily (weights are never materialised) and lowers it on this machine to
`<artifact_dir>/executors/<n>/cirh.mlir`, the graph the wafer compiler starts from; `compile_only` and real runs
need a cluster (`mgmt_address`, or the usernode's installed cluster config).

cstorch rules every step obeys: one backend per process; the step is traced once, so anything data-dependent
(`.item()`, shapes that depend on values) is rejected and anything outside the step runs only on step 1; batch
sizes are uniform; CSX computes matmuls in bfloat16 with float32 weights.

cstorch is imported only here. `gigagpt.cirh` reads what the compiler produced (notebook 04 shows it).
"""
import dataclasses
import os
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

import cerebras.pytorch as cstorch
from cerebras.appliance.cluster.config import ClusterConfigError
from cerebras.pytorch.backend import current_backend
from cerebras.pytorch.utils.data.utils import Schedule

from gigagpt import checkpoint, cirh, data, optim
from gigagpt.backends import Backend
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT


class CerebrasBackend(Backend):
    def __init__(self, run):
        super().__init__(run)
        if run.gradient_accumulation_steps != 1:
            raise GigaGPTError(
                "gradient_accumulation_steps must be 1 on Cerebras: the compiler splits the batch into "
                "micro-batches itself; set the whole batch with batch_size"
            )
        if run.backend == "CPU" and (run.validate_only or run.compile_only):
            raise GigaGPTError("validate_only and compile_only lower the step for the wafer: use them with backend CSX")
        if run.compile:
            raise GigaGPTError("compile: true is torch.compile, for the torch backend; cstorch compiles the whole "
                               "training step itself (set compile: false)")
        if run.backend == "CSX" and run.dtype == "float32":
            raise GigaGPTError("CSX computes in bfloat16 (with float32 weights): use dtype auto or bfloat16")
        self.cs = _cstorch_backend(run)
        self.device = self.cs.torch_device  # cpu, or lazy (CSX): tensors there are recorded, not computed
        if self.cs.is_csx:
            cstorch.amp.set_half_dtype("bfloat16")
            for name in ("compile_crd_memory_gi", "execute_crd_memory_gi"):
                if getattr(run, name) is not None:
                    setattr(cstorch.backends.csx.debug, name, getattr(run, name))
            self.dtype = "bfloat16"
        else:
            self.dtype = "bfloat16" if run.dtype == "bfloat16" else "float32"  # auto: float32, to match plain torch

    def check_fits(self, model_config):
        """Nothing to check here: weights and optimizer state live in MemoryX, not on the wafer, and the
        compiler fits the rest (it picks the micro-batch)."""

    def build_model(self, model_config):
        model_config = dataclasses.replace(model_config, loss="plain")  # one graph: no custom autograd function
        if self.cs.is_csx:
            # Built on the lazy device, the initialisation is traced (and, with validate_only, never run).
            with self.cs.device:
                model = GPT(model_config, seed=self.run.seed)
        else:  # built on the CPU, with the same weights as the torch backend's
            model = GPT(model_config, seed=self.run.seed)
        torch.manual_seed(self.run.seed)  # dropout's random stream
        # A callable that runs the traced forward; parameters(), state_dict(), train() etc. are the module's.
        return cstorch.compile(model, self.cs)

    def make_optimizer(self, model):
        # lr is a placeholder: the schedule sets it every step. Weight decay comes from each param group.
        run = self.run
        return cstorch.optim.AdamW(optim.param_groups(model, run.weight_decay), lr=run.learning_rate,
                                   betas=optim.BETAS, eps=run.adam_epsilon, correct_bias=True)

    def make_scheduler(self, optimizer):
        """optim.lr_at in cstorch's schedulers (part of the traced graph): linear warmup from 0, then a cosine
        to optim.MIN_LR_RATIO of the peak."""
        run, lrs = self.run, cstorch.optim.lr_scheduler
        lr = run.learning_rate
        cosine = lrs.CosineDecayLR(optimizer, initial_learning_rate=lr, end_learning_rate=optim.MIN_LR_RATIO * lr,
                                   total_iters=run.decay_steps)
        if run.warmup_steps == 0:
            return cosine
        warmup = lrs.LinearLR(optimizer, initial_learning_rate=0.0, end_learning_rate=lr, total_iters=run.warmup_steps)
        return lrs.SequentialLR(optimizer, schedulers=[warmup, cosine], milestones=[run.warmup_steps])

    def autocast(self):
        # On CSX this is a no-op (set_half_dtype above does it); on the CPU backend it is torch.autocast.
        return cstorch.amp.autocast() if self.dtype == "bfloat16" and not self.cs.is_csx else nullcontext()

    def trace(self, fn):
        return cstorch.trace(fn)

    def step_closure(self, fn):
        return cstorch.step_closure(fn)

    def checkpoint_closure(self, fn):
        return cstorch.checkpoint_closure(fn)

    # --- data: the torch backend's global batches, streamed by a DataExecutor ---
    def batches(self, tokens, start_step):
        """(step, input_ids, labels), each (batch_size, T): cstorch streams whole batches, batch on dim 0."""
        run = self.run
        steps = run.num_steps - start_step
        if steps < 1:
            return
        if run.validate_only or run.compile_only:
            steps = 1  # one step is what gets traced and lowered
        run_for_workers = dataclasses.replace(run, dataset=str(Path(run.dataset).resolve()))  # workers have another cwd
        loader = cstorch.utils.data.DataLoader(GlobalBatches, run_for_workers, start_step)
        executor = cstorch.utils.data.DataExecutor(
            loader, num_steps=steps, checkpoint_steps=checkpoint_schedule(start_step, steps, run.checkpoint_steps)
        )
        try:
            for step, (input_ids, labels) in enumerate(executor, start=start_step + 1):
                yield step, input_ids, labels
        except ClusterConfigError as e:
            raise GigaGPTError(
                f"{'compile_only' if run.compile_only else 'training'} on CSX needs a Cerebras cluster "
                f"(cstorch: {e}); set mgmt_address, mount_dirs and python_paths in the config, "
                f"or use validate_only to lower the step on this machine"
            ) from e

    def eval_batches(self, tokens):
        if self.cs.is_csx:
            return iter(())  # evaluation on CSX is a separate traced run (gigaGPT's eval.py), not part of this loop
        return super().eval_batches(tokens)

    # --- checkpoints: cstorch's .mdl (resumable) plus a plain torch .pt of the weights for sampling ---
    def save_checkpoint(self, step, model, optimizer, scheduler, extra):
        state = checkpoint.layout(step, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), extra)
        path = Path(self.run.out_dir) / f"checkpoint_{step}.mdl"
        with checkpoint.atomic(path) as tmp:
            cstorch.save(state, str(tmp))
        export_for_torch(path)
        return path

    def load_checkpoint(self, model, optimizer, scheduler):
        """cstorch.load unpickles (dill) the non-tensor entries of a .mdl: resume from your own checkpoints only."""
        path = Path(self.run.checkpoint_path)
        if path.suffix != ".mdl" or not path.is_file():
            raise GigaGPTError(
                f"{path}: the Cerebras backends resume from their own checkpoint_<step>.mdl files "
                f"(the .pt beside each holds only the weights, for sampling)"
            )
        state = cstorch.load(str(path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return state["step"]

    def finish(self):
        if self.run.validate_only:
            graph = cirh.compiled_graph(self.cs.artifact_dir)
            print(f"validate_only: the training step was lowered to {graph} (weights never materialised)")


def _cstorch_backend(run):
    """cstorch allows one backend per process: reuse it when a second run asks for the same kind."""
    existing = current_backend(raise_exception=False, raise_warning=False)
    artifact_dir = Path(run.artifact_dir or Path(run.out_dir) / "cerebras").resolve()
    if existing is not None:
        impl = existing._impl
        same = existing.backend_type.name == run.backend and (
            not existing.is_csx
            or (impl.validate_only, impl.compile_only) == (run.validate_only, run.compile_only)
        )
        if not same:
            raise GigaGPTError(
                f"this process already has a cerebras.pytorch {existing.backend_type.name} backend and cstorch "
                f"allows one per process: run backend {run.backend} in a new process"
            )
        existing.artifact_dir = artifact_dir
        return existing
    if run.backend == "CPU":
        return cstorch.backend("CPU", artifact_dir=artifact_dir)
    # CSX lowering runs torch-cirh-opt, which the wheel installs beside this Python: find it unactivated too.
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("torch-cirh-opt") is None and (Path(bin_dir) / "torch-cirh-opt").exists():
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    cluster = {"num_csx": run.num_csx, "mount_dirs": run.mount_dirs, "python_paths": run.python_paths}
    if run.mgmt_address:
        cluster["mgmt_address"] = run.mgmt_address
    try:
        cluster_config = cstorch.distributed.ClusterConfig(**cluster)
    except ValueError as e:  # e.g. a mount dir that does not exist, a malformed mgmt_address
        raise GigaGPTError(f"cluster settings: {e}") from e
    return cstorch.backend(
        "CSX",
        artifact_dir=artifact_dir,
        compile_only=run.compile_only,
        validate_only=run.validate_only,
        cluster_config=cluster_config,
    )


class GlobalBatches:
    """The torch backend's global batch for each step after start_step, as an iterable cstorch can stream.

    On a cluster, the workers build this from the pickled arguments, so it is a module-level class and reads
    the dataset itself. Every batch is the same as the torch backend's (Backend.global_batch), so losses compare.
    """

    def __init__(self, run, start_step):
        self.run, self.start_step = run, start_step

    def __len__(self):
        return self.run.num_steps - self.start_step

    def __iter__(self):
        sampler = Backend(self.run)  # the shared, device-less batch draw: rank 0 of 1, on the CPU
        tokens = data.load_tokens(self.run.dataset, "train")
        for step in range(self.start_step + 1, self.run.num_steps + 1):
            yield sampler.global_batch(tokens, step, self.run.batch_size)


def checkpoint_schedule(start_step, steps, every):
    """The DataExecutor's checkpoint steps (0-based within this run) for global steps that are multiples of
    `every`, and the last step, as the loop asks: resuming from step 3 with every=2 saves at 4, 6, ..."""
    if every:
        first = every - start_step % every - 1  # index of the first multiple of `every` after start_step
        if first < steps:
            return Schedule([Schedule.Range(start=first, end=steps, step=every, include_last=True)])
    return Schedule([Schedule.Range(start=steps - 1, end=steps, step=1, include_last=True)])


def export_for_torch(mdl_path):
    """checkpoint_<step>.mdl -> checkpoint_<step>.pt beside it: the weights, step, config and tokenizer in the
    torch backend's format, so plain gigagpt (`gigagpt sample`, `gigagpt.sample.load_model`) reads them
    without cerebras.pytorch. The optimizer state stays in the .mdl."""
    mdl_path = Path(mdl_path)
    state = cstorch.load(str(mdl_path))  # tensors are read from the HDF5 file as they are touched
    weights = {name: tensor.clone() for name, tensor in state["model"].items()}
    keep = {key: state[key] for key in ("step", "config", "tokenizer") if key in state}
    return checkpoint.save({"model": weights, **keep}, mdl_path.with_suffix(".pt"))
