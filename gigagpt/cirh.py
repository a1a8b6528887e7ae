"""Read a cirh.mlir: the graph cerebras.pytorch lowers a CSX training step to.

A CSX `validate_only` run writes `<artifact_dir>/executors/<n>/cirh.mlir`: the traced step as one
MLIR function in Cerebras' CIRH dialect, the graph the wafer compiler starts from. Its arguments are the graph
inputs (model weights, optimizer and schedule state, the batch), each named by an attribute; each op is a line
`%r = cirh.Op ... : type loc(#locN)`; and each `#locN` line holds the op's source location: the module path
and op (`blocks.0.attn.fwd/aten::...`, `.bwd` in the backward pass) and the Python call stack that produced it.

`graph_summary` turns that text into op counts, the part of the training step each op came from (forward,
backward, gradient clipping, optimizer, lr schedule), program order, result tensors by shape and the graph
inputs. Plain text parsing: no torch and no cstorch, so it runs anywhere the file does.
"""
import math
import re
from collections import Counter
from pathlib import Path

from gigagpt.errors import GigaGPTError


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
    """'tensor<12288x12288xbf16>' (or '12288x12288xbf16') -> ((12288, 12288), 'bf16', bytes); 'tensor<f32>' is a
    scalar: ((), 'f32', 4). Dtypes missing from DTYPE_BYTES count 4 bytes an element."""
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
    return "backward" if ".bwd" in _scope(loc) else "forward"


def _scope(loc):
    """The module path and aten op a location names: 'GPT_1.fwd/aten::nll_loss_forward'."""
    return loc.split('"')[1] if loc.count('"') >= 2 else ""


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
    lines = text.splitlines()
    locs = dict(m.groups() for m in map(_LOC.match, lines) if m)
    ops, phases, order, tensors = Counter(), Counter(), [], {}
    for m in filter(None, map(_OP.match, lines)):
        op, rest, loc_id = m.groups()
        loc = locs.get(loc_id, "")
        phase = phase_of(loc)
        ops[op] += 1
        phases[phase, op] += 1
        order.append(phase)
        # the result type: after "->" when the op lists its operand types, else after the last " : "
        result = rest.rsplit("->", 1)[-1] if "->" in rest else rest.rsplit(" : ", 1)[-1]
        scope = _scope(loc)
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
