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

cstorch is imported only here. The graph reader at the bottom (`compiled_graph`, `graph_summary`) is plain text
parsing, used by notebook 04 to show what the compiler produced.
"""
import dataclasses
import math
import os
import re
import shutil
import sys
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch

import cerebras.pytorch as cstorch
from cerebras.appliance.cluster.config import ClusterConfigError
from cerebras.pytorch.backend import current_backend
from cerebras.pytorch.utils.data.utils import Schedule

from gigagpt import data
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
        self.module = None

    def check_fits(self, model_config):
        pass  # weight streaming: weights and optimizer state live in MemoryX, not on the wafer; the compiler checks the rest

    def build_model(self, model_config, seed):
        torch.manual_seed(seed)
        if self.cs.is_csx:
            # Built on the lazy device, the initialisation is traced (and, with validate_only, never run).
            # cstorch's device context gives every random op its own generator seeded from torch's.
            with self.cs.device:
                self.module = GPT(model_config)
        else:
            # Built outside the device context, so torch's default generator draws the weights: the CPU
            # backend starts from exactly the torch backend's weights.
            self.module = GPT(model_config)
        # A callable that runs the traced forward; parameters(), state_dict(), train() etc. are the module's.
        return cstorch.compile(self.module, self.cs)

    def make_optimizer(self, param_groups, run):
        # lr is a placeholder: the schedule sets it every step. Weight decay comes from each param group.
        return cstorch.optim.AdamW(
            param_groups, lr=run.learning_rate, betas=(0.9, 0.95), eps=run.adam_epsilon, correct_bias=True
        )

    def make_scheduler(self, optimizer, run):
        """gigaGPT's schedule, which train.lr_at also computes: linear warmup from 0, cosine to 10% of peak."""
        lr, lrs = run.learning_rate, cstorch.optim.lr_scheduler
        cosine = lrs.CosineDecayLR(
            optimizer, initial_learning_rate=lr, end_learning_rate=0.1 * lr, total_iters=run.decay_steps
        )
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
            ) from None

    def eval_batches(self, tokens):
        if self.cs.is_csx:
            return iter(())  # evaluation on CSX is a separate traced run (gigaGPT's eval.py), not part of this loop
        return super().eval_batches(tokens)

    # --- checkpoints: cstorch's .mdl (resumable) plus a plain torch .pt of the weights for sampling ---
    def save_checkpoint(self, out_dir, step, model, optimizer, scheduler, extra):
        state = {
            "model": self.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            **extra,
        }
        path = Path(out_dir) / f"checkpoint_{step}.mdl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        cstorch.save(state, tmp)
        os.replace(tmp, path)
        export_for_torch(path)
        return path

    def load_checkpoint(self, path, model, optimizer, scheduler):
        path = Path(path)
        if path.suffix != ".mdl" or not path.is_file():
            raise GigaGPTError(
                f"{path}: the Cerebras backends resume from their own checkpoint_<step>.mdl files "
                f"(the .pt beside each holds only the weights, for sampling)"
            )
        state = cstorch.load(str(path))
        self.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return state

    def finish(self):
        if self.run.validate_only:
            graph = compiled_graph(self.cs.artifact_dir)
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
        raise GigaGPTError(f"cluster settings: {e}") from None
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
    pt_path = mdl_path.with_suffix(".pt")
    tmp = pt_path.with_name(pt_path.name + ".tmp")
    torch.save({"model": weights, **keep}, tmp)
    os.replace(tmp, pt_path)
    return pt_path


# --- reading what the compiler produced (text only: no cstorch needed) ---------------------------------------

def compiled_graph(artifact_dir):
    """The newest cirh.mlir under artifact_dir/executors/<n>/."""
    graphs = sorted(Path(artifact_dir).glob("executors/[0-9]*/cirh.mlir"))
    if not graphs:
        raise GigaGPTError(f"no executors/<n>/cirh.mlir under {artifact_dir}: run a CSX validate_only step first")
    return graphs[-1]


DTYPE_BYTES = {"f64": 8, "i64": 8, "f32": 4, "i32": 4, "bf16": 2, "f16": 2, "i16": 2, "i8": 1, "ui8": 1, "i1": 1}
_LOC = re.compile(r"^#loc(\d+) = loc\((.*)\)\s*$")
_OP = re.compile(r"^\s*%[\w#]+(?::\d+)?(?:, %[\w#]+)* = ([a-z_]+\.\w+)(.*?)\s+loc\(#loc(\d+)\)\s*$")
_ARG = re.compile(r"%arg\d+: (tensor<[^>]*>) \{[^}]*?(?:tf\.resource_name|cs\.input_name) = \"([^\"]+)\"")
_TENSOR = re.compile(r"tensor<([^>]*)>")


def tensor_type(text):
    """'tensor<12288x12288xbf16>' (or '12288x12288xbf16') -> ((12288, 12288), 'bf16', bytes)."""
    *dims, dtype = text.removeprefix("tensor<").removesuffix(">").split("x")
    shape = tuple(int(d) for d in dims if d.isdigit())
    return shape, dtype, math.prod(shape) * DTYPE_BYTES.get(dtype, 4)


_PHASE_FILES = {
    "optim/scheduler.py": "lr schedule",
    "optim/lr_scheduler.py": "lr schedule",
    "clip_grad.py": "gradient clipping",
    "optim/AdamBase.py": "optimizer",
    "torch/optim/optimizer.py": "optimizer",
}


def phase_of(loc):
    """Which part of the training step an op came from, read from its source location's call stack.

    The stack is listed innermost call first, and the innermost known file wins: cstorch wraps
    optimizer.step in the schedule's code, so "somewhere below the scheduler" would be wrong."""
    hits = [(loc.find(f), phase) for f, phase in _PHASE_FILES.items() if f in loc]
    if hits:
        return min(hits)[1]
    name = loc.split('"')[1] if loc.count('"') >= 2 else ""
    return "backward" if ".bwd" in name else "forward"


def graph_summary(path):
    """Parse a cirh.mlir into what the notebook plots.

    Returns a dict with
      ops:      Counter of op name -> count
      phases:   Counter of (phase, op name) -> count, phase one of forward/backward/gradient clipping/optimizer/lr schedule
      order:    the phase of every op, in program order (where the optimizer and the schedule sit in the graph)
      tensors:  op results grouped by (shape, dtype), biggest first: dicts with shape, dtype, bytes, count (how many
                results have it), ops (Counter of the ops producing it) and scope (the first producer's module/op)
      state:    [(name, shape, dtype, bytes)] graph inputs: model weights, optimizer and schedule state, the batch
    """
    text = Path(path).read_text()
    locs = {}
    for line in text.splitlines():
        if line.startswith("#loc"):
            m = _LOC.match(line)
            if m:
                locs[m.group(1)] = m.group(2)
    ops, phases, order, tensors = Counter(), Counter(), [], {}
    for line in text.splitlines():
        m = _OP.match(line)
        if not m:
            continue
        op, rest, loc_id = m.groups()
        loc = locs.get(loc_id, "")
        phase = phase_of(loc)
        ops[op] += 1
        phases[phase, op] += 1
        order.append(phase)
        result = rest.rsplit("->", 1)[-1] if "->" in rest else rest.rsplit(" : ", 1)[-1]
        scope = loc.split('"')[1] if loc.count('"') >= 2 else ""
        for t in _TENSOR.findall(result):
            shape, dtype, nbytes = tensor_type(t)
            row = tensors.setdefault((shape, dtype), {"shape": shape, "dtype": dtype, "bytes": nbytes,
                                                      "count": 0, "ops": Counter(), "scope": scope})
            row["count"] += 1
            row["ops"][op] += 1
    state = []
    for t, name in _ARG.findall(text):
        shape, dtype, nbytes = tensor_type(t)
        state.append((name.removeprefix("state."), shape, dtype, nbytes))
    tensors = sorted(tensors.values(), key=lambda row: -row["bytes"])
    return {"ops": ops, "phases": phases, "order": order, "tensors": tensors, "state": state}
