"""Notebook 04's exercise checks (gigagpt.course.cerebras): each passes the reference, says [todo] for the learners'
stub, and rejects a classic mistake with the hint for it.

Three checks are plain Python and run here. `traceable_step` lowers the learner's step with cerebras.pytorch, which
lives in .venv-cerebras: its test runs the check there, in a subprocess, and is skipped where that environment
cannot exist (as tests/test_cerebras.py is).
"""
import importlib.util
import os
import re
import subprocess

import pytest

from gigagpt import scaling
from gigagpt.course import cerebras as check
from gigagpt.errors import GigaGPTError

from conftest import REPO
from test_cerebras import CEREBRAS_PYTHON, why_unavailable

TINY_GRAPH = REPO / "tests" / "data" / "tiny_cirh.mlir"  # a real 1-layer CSX validate_only step


def verdict(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # exactly one line per check
    return lines[0]


def stub(*args):
    raise NotImplementedError()


# ---- memoryx_bytes ----

def test_memoryx_bytes_passes_the_reference_and_is_todo_for_the_stub(capsys):
    assert check.memoryx_bytes(check.memoryx_state_bytes) is check.memoryx_state_bytes
    assert verdict(capsys) == "[pass] memoryx_bytes"
    assert check.memoryx_bytes(stub) is check.memoryx_state_bytes
    assert verdict(capsys).startswith("[todo] memoryx_bytes")


def test_memoryx_bytes_reference_is_what_the_lowered_graph_holds():
    """tiny_cirh.mlir's graph inputs (a 1-layer GPT, width 32, 65 tokens, 16 positions): its weights and AdamW's
    moments (per-tensor scalars aside) are exactly the reference's bytes."""
    from gigagpt.cirh import graph_summary
    from gigagpt.model import GPTConfig

    state = graph_summary(TINY_GRAPH)["state"]
    weights = sum(n for name, _, _, n in state if name.startswith("model."))
    moments = sum(n for name, shape, _, n in state if name.startswith("optimizer.") and shape)
    tiny = GPTConfig(width=32, depth=1, heads=2, vocab_size=65, max_position_embeddings=16)
    assert weights + moments == check.memoryx_state_bytes(tiny) == 12 * scaling.param_count(tiny)


@pytest.mark.parametrize("bytes_per_parameter, hint", [
    (16, "counts the gradients too"),  # a GPU's training state, not MemoryX's
    (4, "fp32 weights alone"),
    (8, "the weights and AdamW's two moments make three"),
])
def test_memoryx_bytes_names_the_classic_mistakes(capsys, bytes_per_parameter, hint):
    check.memoryx_bytes(lambda cfg: bytes_per_parameter * scaling.param_count(cfg))
    line = verdict(capsys)
    assert line.startswith("[fail] memoryx_bytes: gigaGPT 111M:") and hint in line, line


def test_memoryx_bytes_a_parameter_count_that_forgets_the_biases(capsys):
    def no_biases(cfg):  # 12 d² per block plus embeddings: the big matrices only
        return 12 * (cfg.depth * 12 * cfg.width ** 2 + (cfg.vocab_size + cfg.max_position_embeddings) * cfg.width)

    check.memoryx_bytes(no_biases)
    line = verdict(capsys)
    assert line.startswith("[fail] memoryx_bytes: gigaGPT 111M: 0.") and "param_count" in line, line
    assert str(check.memoryx_state_bytes(check.MEMORYX_CASES["gigaGPT 111M"])) not in line  # not the answer


# ---- optimizer_ops ----

def test_optimizer_ops_passes_the_reference_and_is_todo_for_the_stub(capsys):
    assert check.optimizer_ops(check.adamw_op_positions, TINY_GRAPH) is check.adamw_op_positions
    assert verdict(capsys) == "[pass] optimizer_ops"
    check.optimizer_ops(stub, TINY_GRAPH)
    assert verdict(capsys).startswith("[todo] optimizer_ops")


def test_optimizer_ops_every_optimizer_file_is_not_adamw(capsys):
    def any_optim(text):  # "optim" also matches the lr schedulers' files and torch/optim/optimizer.py's wrapper
        lines = text.splitlines()
        locations = dict(line.split(" = ", 1) for line in lines if line.startswith("#loc"))
        ops = [line for line in lines if line.lstrip().startswith("%")]
        return [i for i, line in enumerate(ops) if "optim" in locations[re.search(r"(#loc\d+)\)\s*$", line).group(1)]]

    check.optimizer_ops(any_optim, TINY_GRAPH)
    line = verdict(capsys)
    assert line.startswith("[fail] optimizer_ops: you found") and "is in your list but is not AdamW's" in line, line
    assert "scheduler.py" in line or "lr_scheduler" in line or "optimizer.py" in line, line


def test_optimizer_ops_counting_every_line_is_caught(capsys):
    def every_line(text):  # positions among all lines, not op lines
        return [i for i, line in enumerate(text.splitlines()) if "optim/AdamBase.py" in line]

    check.optimizer_ops(every_line, TINY_GRAPH)
    line = verdict(capsys)
    assert line.startswith("[fail] optimizer_ops: position") and "count only the op lines" in line, line


# ---- per_system_batch ----

def test_per_system_batch_passes_the_reference_and_is_todo_for_the_stub(capsys):
    assert check.per_system_batch(check.split_batch) is check.split_batch
    assert verdict(capsys) == "[pass] per_system_batch"
    check.per_system_batch(stub)
    assert verdict(capsys).startswith("[todo] per_system_batch")
    assert check.split_batch(1472, 16) == [92] * 16 and check.split_batch(10, 4) == [3, 3, 2, 2]


def test_per_system_batch_floor_division_drops_the_remainder(capsys):
    check.per_system_batch(lambda b, n: [b // n] * n)
    line = verdict(capsys)
    assert line == ("[fail] per_system_batch: per_system_batch(10, 4) hands out 8 sequences, not the batch's 10: "
                    "hand out the remainder too"), line


def test_per_system_batch_must_refuse_more_systems_than_sequences(capsys):
    def no_check(batch_size, num_csx):
        share, extra = divmod(batch_size, num_csx)
        return [share + 1] * extra + [share] * (num_csx - extra)

    check.per_system_batch(no_check)
    line = verdict(capsys)
    assert line.startswith("[fail] per_system_batch: per_system_batch(4, 8) returned") and "ValueError" in line, line


# ---- traceable_step: the stub here, the rest in .venv-cerebras ----

def test_traceable_step_stub_is_todo_without_cerebras(capsys):
    def my_training_step(model, optimizer, input_ids, labels):
        """The learners' version, as nbgrader leaves it."""
        # YOUR CODE HERE
        raise NotImplementedError()

    assert check.is_stub(my_training_step) and not check.is_stub(check.step_with_closure)
    assert check.traceable_step(my_training_step) is check.step_with_closure
    assert verdict(capsys).startswith("[todo] traceable_step")


@pytest.mark.skipif(importlib.util.find_spec("cerebras") is not None, reason="this Python has cerebras.pytorch")
def test_traceable_step_says_where_to_run_it():
    with pytest.raises(GigaGPTError, match="venv-cerebras"):
        check.traceable_step(check.step_with_closure)


STEPS = '''
import torch
import cerebras.pytorch as cstorch


def logging_step(model, optimizer, input_ids, labels):
    loss = model(input_ids, labels)
    print(f"loss {loss.item():.4f}")
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss


def silent_step(model, optimizer, input_ids, labels):
    loss = model(input_ids, labels)  # the .item() is gone, and with it the logging
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss


def stub(model, optimizer, input_ids, labels):
    """doc"""
    # YOUR CODE HERE
    raise NotImplementedError()
'''

RUN = '''
import json, sys
from gigagpt.course import cerebras as check
import steps
for name in ("reference", "stub", "logging_step", "silent_step"):
    step = check.step_with_closure if name == "reference" else getattr(steps, name)
    print("CASE", name, flush=True)
    check.traceable_step(step)
'''


@pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))
def test_traceable_step_lowers_the_learners_step_in_cerebras(tmp_path):
    (tmp_path / "steps.py").write_text(STEPS)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([str(CEREBRAS_PYTHON), "-c", RUN], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("CASE", "["))]
    verdicts = dict(zip([line.split()[1] for line in lines[0::2]], lines[1::2]))
    assert verdicts["reference"] == "[pass] traceable_step", verdicts
    assert verdicts["stub"].startswith("[todo] traceable_step"), verdicts
    assert verdicts["logging_step"].startswith("[fail] traceable_step: the compiler still meets a value being read")
    assert "@cstorch.step_closure" in verdicts["logging_step"]
    assert verdicts["silent_step"].startswith("[fail] traceable_step: your step lowers, but nothing reads the loss")
