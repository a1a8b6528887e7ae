"""Notebook 04's exercise checks (Cerebras compilation), and the references the notebook carries on with.

    from gigagpt.course import cerebras as check
    training_step = check.traceable_step(my_training_step)   # prints [pass] / [fail] ... / [todo] ...

| check | the learner writes | checked against |
|---|---|---|
| traceable_step | a training step with its `.item()` moved into a step closure | its CSX validate_only lowering |
| memoryx_bytes | bytes MemoryX holds: fp32 weights + AdamW's two moments | `scaling.weight_streaming_memory` |
| optimizer_ops | positions of AdamW's ops in a cirh.mlir, from its text | `gigagpt.cirh.graph_summary`'s `order` |
| per_system_batch | each of num_csx systems' share of a batch | the even split; cstorch's num_csx <= batch |

Only `lower_step` (and so `traceable_step`) needs cerebras.pytorch, and only in the process it starts: this
module imports in any environment; the notebook runs in .venv-cerebras.
"""
import ast
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from gigagpt import cirh, scaling
from gigagpt.course import Wrong, compare, exercise
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPTConfig

# ---- lowering one training step for the wafer, in a fresh process (cstorch allows one backend per process) ----

# The tiny model the step is traced with: 1 layer, lowered in a few seconds. The loss is plain, as on the Cerebras
# backend (one graph); attention stays "auto" (explicit attention under torch.compile trips TorchDynamo itself).
STEP_MODEL = dict(width=32, depth=1, heads=2, vocab_size=64, max_position_embeddings=16, loss="plain")
STEP_BATCH = (2, 16)  # sequences x positions
CLOSURE_TEST_LOSS = 1.2345  # what a step closure is called with after the lowering, to test its body

_CHILD = r'''
import functools, io, json, sys, traceback
from contextlib import redirect_stdout
import torch
import cerebras.pytorch as cstorch
from gigagpt.model import GPT, GPTConfig

source, name, artifacts, torch_compile, model_json, batch_json, test_loss = sys.argv[1:8]
closures = []  # (the closure's own function, shapes of the tensors it was called with), at trace time
deferred_closure = cstorch.step_closure

def recording_step_closure(fn):
    deferred = deferred_closure(fn)
    if getattr(getattr(fn, "__code__", None), "co_filename", "") != "<your step>":
        return deferred  # cstorch's own closures
    @functools.wraps(fn)
    def call(*args, **kwargs):
        closures.append((fn, [list(a.shape) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]))
        return deferred(*args, **kwargs)
    return call

cstorch.step_closure = recording_step_closure
result = {"ok": False}
try:
    namespace = {"torch": torch, "cstorch": cstorch, "__name__": "your_step"}
    exec(compile(source, "<your step>", "exec"), namespace)
    step_fn = namespace[name]
    backend = cstorch.backend("CSX", artifact_dir=artifacts, validate_only=True)
    cstorch.amp.set_half_dtype("bfloat16")
    with backend.device:
        model = GPT(GPTConfig(**json.loads(model_json)))
    if torch_compile == "1":
        model = torch.compile(model)
    compiled = cstorch.compile(model, backend)
    optimizer = cstorch.optim.AdamW(model.parameters(), lr=1e-3)
    returned = []
    traced = cstorch.trace(lambda input_ids, labels: returned.append(step_fn(compiled, optimizer, input_ids, labels)))
    batch, positions = json.loads(batch_json)
    vocab = json.loads(model_json)["vocab_size"]

    def batches():
        return [(torch.randint(0, vocab, (batch, positions)), torch.randint(0, vocab, (batch, positions)))]

    for input_ids, labels in cstorch.utils.data.DataExecutor(cstorch.utils.data.DataLoader(batches), num_steps=1):
        traced(input_ids, labels)
    out = returned[0] if returned else None
    result.update(ok=True, returned=type(out).__name__ if returned else "nothing",
                  returned_shape=list(out.shape) if isinstance(out, torch.Tensor) else None)
except Exception as e:
    frames = traceback.extract_tb(e.__traceback__)
    lines = str(e).strip().splitlines()
    result.update(error=type(e).__name__, message=lines[0][:300] if lines else "",
                  raised_in_your_code=bool(frames) and frames[-1].filename == "<your step>",
                  your_line=next((f.line for f in reversed(frames) if f.filename == "<your step>"), None))
result["closures"] = [shapes for _, shapes in closures]
# Under validate_only nothing runs, so no closure ever gets a value: call each one here with a real tensor.
result["closure_runs"] = []
for fn, shapes in closures:
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            fn(*[torch.full(shape, float(test_loss)) for shape in shapes])
        result["closure_runs"].append({"printed": printed.getvalue()})
    except Exception as e:
        result["closure_runs"].append({"printed": printed.getvalue(), "error": f"{type(e).__name__}: {e}"[:200]})
print("RESULT " + json.dumps(result), flush=True)
'''


@dataclass
class LoweredStep:
    """What became of one training step lowered with CSX validate_only (see `lower_step`)."""
    ok: bool  # the step was traced and lowered to cirh.mlir
    error: str = ""  # the exception's type, when not ok
    message: str = ""  # its first line
    raised_in_your_code: bool = False  # the innermost frame was the step's own code
    your_line: str | None = None  # the step's own line that was running
    returned: str = ""  # type of what the step returned
    returned_shape: list | None = None
    closures: list = field(default_factory=list)  # per step-closure call: shapes of the tensors passed
    closure_runs: list = field(default_factory=list)  # per closure, called with a real tensor: printed / error
    graph: Path | None = None  # the cirh.mlir, when artifact_dir was given
    summary: dict | None = None  # gigagpt.cirh.graph_summary of it
    output: list = field(default_factory=list)  # every line the process printed
    seconds: float = 0.0


def _needs_cstorch():
    if importlib.util.find_spec("cerebras") is None or importlib.util.find_spec("cerebras.pytorch") is None:
        raise GigaGPTError("lowering a step needs cerebras.pytorch: run this in .venv-cerebras "
                           "(scripts/cerebras_env.sh; Jupyter kernel gigagpt-cerebras)")


def _source_of(step):
    try:
        return textwrap.dedent(inspect.getsource(step))
    except (OSError, TypeError) as e:
        raise GigaGPTError(f"cannot read the source of {step!r} ({e}): define it with `def` in a cell or file") from e


def is_stub(step):
    """True when `step`'s body is only a docstring and `raise NotImplementedError()` (the learners' version)."""
    body = ast.parse(_source_of(step)).body[0].body
    body = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    return (len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None
            and "NotImplementedError" in ast.unparse(body[0].exc))


def lower_step(step, torch_compile=False, artifact_dir=None, timeout=300):
    """Lower `step(model, optimizer, input_ids, labels)` as a CSX training step with validate_only, as gigagpt's
    loop does (cstorch.compile, cstorch.trace, DataExecutor), in a fresh Python process.

    The step is a plain function whose source is sent to that process: it may use `torch` and `cstorch`
    (cerebras.pytorch), and must import anything else itself. The model is a 1-layer GPT (STEP_MODEL) built on
    the lazy device, the optimizer cstorch's AdamW, the batch STEP_BATCH random tokens; torch_compile=True wraps
    the model in torch.compile first. Step closures are recorded as the step calls them and, since validate_only
    runs nothing, called afterwards with a real tensor of CLOSURE_TEST_LOSS to test their bodies.
    The graph goes to artifact_dir/executors/000001/cirh.mlir (default: a temporary folder, removed).
    """
    _needs_cstorch()
    source = _source_of(step)
    keep = artifact_dir is not None
    workdir = Path(artifact_dir).resolve().parent if keep else Path(tempfile.mkdtemp(prefix="gigagpt_step_"))
    artifacts = Path(artifact_dir).resolve() if keep else workdir / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)  # one compile per folder: executors/000001
    workdir.mkdir(parents=True, exist_ok=True)
    # torch-cirh-opt, which lowering calls, lives beside this Python.
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    args = [sys.executable, "-c", _CHILD, source, step.__name__, str(artifacts), "1" if torch_compile else "0",
            json.dumps(STEP_MODEL), json.dumps(STEP_BATCH), str(CLOSURE_TEST_LOSS)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir)
        output = (proc.stdout + proc.stderr).splitlines()
        found = [line for line in output if line.startswith("RESULT ")]
        if not found:
            tail = "\n".join(output[-15:])
            raise GigaGPTError(f"lowering process exited with {proc.returncode} before it reported:\n{tail}")
        result = LoweredStep(**json.loads(found[-1].removeprefix("RESULT ")))
        result.output = [line for line in output if not line.startswith("RESULT ")]
        result.seconds = time.perf_counter() - start
        if result.ok:  # read the graph before a temporary folder goes
            graph = cirh.compiled_graph(artifacts)
            result.graph, result.summary = graph if keep else None, cirh.graph_summary(graph)
        return result
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def phases_of(lowered):
    """The parts of the training step (forward, backward, optimizer, ...) the lowered graph has ops from."""
    return {phase for phase, _ in lowered.summary["phases"]}


# ---- references: what each check compares with, and what the notebook goes on with after [todo]/[fail] ----

def step_with_closure(model, optimizer, input_ids, labels):
    """A training step the compiler accepts: the loss is read (and printed) in a step closure, which cstorch
    runs once the step's values exist."""
    import cerebras.pytorch as cstorch

    @cstorch.step_closure
    def print_loss(loss):
        print(f"loss {loss.item():.4f}")

    loss = model(input_ids, labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    print_loss(loss)
    return loss


def memoryx_state_bytes(model_config):
    """Bytes MemoryX keeps for training `model_config` with AdamW: fp32 weights and AdamW's two fp32 moments.
    Gradients are not kept: they stream back from the wafer into the update."""
    return scaling.weight_streaming_memory(model_config, 1, model_config.max_position_embeddings)["memoryx"]


def adamw_op_positions(mlir_text):
    """Program-order positions (0 = the first op line) of the ops AdamW produced, read from a cirh.mlir's text."""
    lines = mlir_text.splitlines()
    locations = dict(line.split(" = ", 1) for line in lines if line.startswith("#loc"))
    ops = [line for line in lines if line.lstrip().startswith("%")]
    return [i for i, line in enumerate(ops)
            if "optim/AdamBase.py" in locations[line.rstrip().rsplit("loc(", 1)[1].removesuffix(")")]]


def split_batch(batch_size, num_csx):
    """The sequences each of `num_csx` CS systems takes from a global batch of `batch_size`: as even as can be
    (the first batch_size % num_csx systems one more). cstorch refuses more systems than sequences."""
    if num_csx > batch_size:
        raise ValueError(f"{num_csx} systems for {batch_size} sequences: every system needs at least one")
    share, extra = divmod(batch_size, num_csx)
    return [share + 1] * extra + [share] * (num_csx - extra)


# ---- the checks ----

def _hint_for_error(lowered):
    message = lowered.message
    where = f" (at `{lowered.your_line.strip()}`)" if lowered.your_line else ""
    if "_local_scalar_dense" in message:
        return ("the compiler still meets a value being read while the step is only being recorded" + where +
                ": `.item()`, `float(loss)` and `if loss > ...` all ask for one. Read it in a function decorated "
                "with @cstorch.step_closure, and call that function with the loss tensor inside the step")
    if "nonzero" in message:
        return f"a shape in your step depends on the data{where} (boolean indexing, torch.nonzero): keep shapes fixed"
    if lowered.error == "NameError":
        return (f"{message}{where}: the check lowers your function in a fresh process that has only `torch` and "
                f"`cstorch`; import anything else inside the function")
    return f"the step did not lower: {lowered.error}: {message}{where}"


def _test_traceable_step(step):
    if is_stub(step):
        raise NotImplementedError
    lowered = lower_step(step)
    if not lowered.ok:
        if lowered.error == "NotImplementedError" and lowered.raised_in_your_code:
            raise NotImplementedError
        raise Wrong(_hint_for_error(lowered))
    phases = phases_of(lowered)
    if "backward" not in phases:
        raise Wrong("your step lowers, but the graph has no backward pass: call loss.backward() in the step")
    if "optimizer" not in phases:
        raise Wrong("your step lowers, but the graph has no AdamW update: call optimizer.step() and "
                    "optimizer.zero_grad() in the step")
    if not lowered.closures:
        raise Wrong("your step lowers, but nothing reads the loss any more: keep printing it, from a function "
                    "decorated with @cstorch.step_closure that you call with the loss tensor inside the step")
    if not any(lowered.closures):
        raise Wrong("your step closure is called without a tensor: pass it the loss tensor itself (cstorch hands "
                    "the closure its value once the step has run)")
    for run in lowered.closure_runs:
        if "error" in run:
            raise Wrong(f"your step closure, called as cstorch would with a loss of {CLOSURE_TEST_LOSS}, raised "
                        f"{run['error']}")
    if not any(str(CLOSURE_TEST_LOSS)[:3] in run["printed"] for run in lowered.closure_runs):
        printed = " / ".join(run["printed"].strip() for run in lowered.closure_runs if run["printed"].strip())
        raise Wrong(f"called with a loss of {CLOSURE_TEST_LOSS}, your step closure printed "
                    f"{repr(printed) if printed else 'nothing'}: print the loss's value in it")
    if lowered.returned != "Tensor" or lowered.returned_shape != []:
        raise Wrong(f"your step returns {lowered.returned}: return the loss tensor, as the rejected step did")


def traceable_step(step):
    """Check `step(model, optimizer, input_ids, labels)`: it lowers for CSX (validate_only, in a fresh process: a
    few seconds), the graph holds the backward pass and the AdamW update, and the loss is printed from a step
    closure called with the loss tensor. Outside .venv-cerebras only the learners' stub can be checked ([todo])."""
    if not is_stub(step):
        _needs_cstorch()  # an environment problem, not the learner's: raised, not a [fail] line
    return exercise("traceable_step", step_with_closure)(_test_traceable_step)(step)


traceable_step.reference = step_with_closure

# The model shapes the MemoryX check asks about: gigaGPT's 111M and 175B, and a small one without biases, so
# that a formula for one shape only, or a count that forgets a kind of parameter, shows.
MEMORYX_CASES = {
    "gigaGPT 111M": GPTConfig(width=768, depth=10, heads=12, vocab_size=50257, max_position_embeddings=2048),
    "gigaGPT 175B": GPTConfig(width=12288, depth=96, heads=96, vocab_size=50257, max_position_embeddings=2048),
    "a small one without biases": GPTConfig(width=64, depth=3, heads=4, vocab_size=65, max_position_embeddings=128,
                                            bias=False),
}

_PER_PARAMETER = {  # bytes per parameter that a classic mistake gives -> what it missed
    4: "that is the fp32 weights alone: AdamW keeps two more fp32 tensors per weight (exp_avg and exp_avg_sq)",
    8: "that is two fp32 tensors per weight: the weights and AdamW's two moments make three",
    16: "that counts the gradients too: they stream back from the wafer (through SwarmX) into the update as they "
        "arrive, so MemoryX keeps only the weights and AdamW's two moments",
    2: "bf16 weights alone? MemoryX keeps fp32 weights and AdamW's two fp32 moments; bf16 is only for the wafer's "
       "matmuls",
    6: "bf16 somewhere? MemoryX keeps the weights and AdamW's two moments all in fp32 (4 bytes each)",
}


def _test_memoryx_bytes(fn):
    for name, model_config in MEMORYX_CASES.items():
        got, want = fn(model_config), memoryx_state_bytes(model_config)
        if isinstance(got, (int, float)) and not isinstance(got, bool) and got and abs(got / want - 1) > 1e-9:
            per_parameter = got / scaling.param_count(model_config)
            known = next((hint for ratio, hint in _PER_PARAMETER.items() if abs(per_parameter - ratio) < 1e-6), None)
            if known:
                raise Wrong(f"{name}: {per_parameter:g} bytes per parameter: {known}")
            if abs(got / want - 1) < 0.05:
                raise Wrong(f"{name}: {abs(got / want - 1):.2%} too {'high' if got > want else 'low'}: count the "
                            f"parameters with gigagpt.scaling.param_count(model_config) (biases, LayerNorms and the "
                            f"position table included, the tied LM head once)")
        compare(f"memoryx_bytes for {name}", got, want, atol=0.5)


memoryx_bytes = exercise("memoryx_bytes", memoryx_state_bytes)(_test_memoryx_bytes)
memoryx_bytes.__doc__ = """Check `fn(model_config) -> bytes` for three model shapes against
scaling.weight_streaming_memory's MemoryX share."""


def optimizer_ops(fn, graph):
    """Check `fn(mlir_text) -> [positions of AdamW's ops]` on the cirh.mlir at `graph` (a path) against
    gigagpt.cirh.graph_summary's `order`; returns fn, or the reference after [todo]/[fail]."""

    def test(fn):
        text = Path(graph).read_text()
        got = fn(text)
        want = [i for i, phase in enumerate(cirh.graph_summary(graph)["order"]) if phase == "optimizer"]
        ops = [line.strip() for line in text.splitlines() if line.lstrip().startswith("%")]
        if not isinstance(got, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in got):
            raise Wrong(f"return a list of op positions (ints), got {type(got).__name__}: {str(got)[:60]}")
        if not got:
            raise Wrong("no op found: an op is a line that starts (after spaces) with `%` and ends with loc(#locN); "
                        "its source location is the line `#locN = loc(...)` near the end of the file, and AdamW's "
                        "ops have `optim/AdamBase.py` in theirs")
        if list(got) != sorted(set(got)):
            raise Wrong("list each op once, in program order (ascending positions)")
        if got[0] < 0 or got[-1] >= len(ops):
            raise Wrong(f"position {got[-1] if got[-1] >= len(ops) else got[0]} is outside 0..{len(ops) - 1}: count "
                        f"only the op lines (those that start with `%`), from 0")
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            i = (missing or extra)[0]
            op, loc_id = ops[i].split(" = ", 1)[1].split()[0], ops[i].rsplit("loc(", 1)[1].removesuffix(")")
            location = next((line for line in text.splitlines() if line.startswith(loc_id + " = ")), "")
            files = [f for f in dict.fromkeys(re.findall(r'"([^"]+\.py)"', location)) if "optim" in f]
            verdict = "came from AdamW but is not in your list" if missing else "is in your list but is not AdamW's"
            raise Wrong(f"you found {len(got)} of the graph's {len(ops)} ops, the reference {len(want)}; op #{i} "
                        f"({op}, {loc_id}; optimizer files in its call stack: {', '.join(files) or 'none'}) {verdict}")

    return exercise("optimizer_ops", adamw_op_positions)(test)(fn)


optimizer_ops.reference = adamw_op_positions

SPLIT_CASES = [(1472, 16), (1472, 1), (120, 8), (10, 4), (7, 7), (1472, 48)]


def _test_per_system_batch(fn):
    for batch_size, num_csx in SPLIT_CASES:
        got = fn(batch_size, num_csx)
        what = f"per_system_batch({batch_size}, {num_csx})"
        if not isinstance(got, (list, tuple)) or not all(isinstance(n, int) and not isinstance(n, bool) for n in got):
            raise Wrong(f"{what} returned {str(got)[:60]}: return a list of whole numbers of sequences, one per system")
        if len(got) != num_csx:
            raise Wrong(f"{what} has {len(got)} entries: one per system, so {num_csx}")
        if sum(got) != batch_size:
            raise Wrong(f"{what} hands out {sum(got)} sequences, not the batch's {batch_size}: "
                        f"{'hand out the remainder too' if sum(got) < batch_size else 'some are counted twice'}")
        if max(got) - min(got) > 1:
            raise Wrong(f"{what} gives one system {max(got)} sequences and another {min(got)}: split as evenly as "
                        f"possible, so the slowest system waits least")
        compare(what, list(got), split_batch(batch_size, num_csx))
    try:
        got = fn(4, 8)
    except ValueError:
        return
    raise Wrong(f"per_system_batch(4, 8) returned {str(got)[:40]}: 8 systems cannot share 4 sequences (cstorch "
                f"refuses more systems than sequences): raise ValueError")


per_system_batch = exercise("per_system_batch", split_batch)(_test_per_system_batch)
per_system_batch.__doc__ = """Check `fn(batch_size, num_csx) -> [sequences per system]` on gigaGPT's batches and
uneven ones, and that it raises ValueError for more systems than sequences."""
