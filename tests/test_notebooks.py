"""The course's notebooks: the rules every numbered notebook follows, and each one run headless (smoke setting),
in both versions: solutions/ (every exercise answered: every check must pass) and notebooks/ (what learners
open, generated from solutions/: every exercise is [todo], and the notebook still runs to its end).

Each notebook runs in its own papermill process (scripts/run_course.py's helpers, shared with `make course`),
with MPLBACKEND=Agg, its outputs in a temporary folder and a timeout. Notebook 04 runs in .venv-cerebras and is
skipped, with the reason, where that environment is not installed.

PyTorch runs on one thread here unless OMP_NUM_THREADS says otherwise: on a busy CI machine its threads stall at
every barrier waiting for a core (measured: smoke runs several times slower), and these runs check behaviour,
not speed.
"""
import ast
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)

SOLUTIONS = course.numbered_notebooks(course.SOLUTION_DIR)
LEARNER = course.numbered_notebooks(course.NOTEBOOK_DIR)
BOTH = SOLUTIONS + LEARNER
IDS = [f"{p.parent.name}/{p.stem[:2]}" for p in BOTH]
WITH_EXERCISES = [p for p in SOLUTIONS if p.name[:2] != "00"]  # 00 is the pre-flight check
CHECK_LINE = re.compile(r"^\[(pass|fail|todo)\] (.+?)(?::|$)", re.MULTILINE)


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def parameters_cell(nb):
    return next((c for c in nb["cells"] if c["cell_type"] == "code"), None)


def exercise_cells(nb):
    return [c for c in nb["cells"] if "exercise" in c.get("metadata", {}).get("tags", [])]


def test_the_series_is_there():
    assert [p.name for p in SOLUTIONS] == [p.name for p in LEARNER]
    assert [p.name[:2] for p in SOLUTIONS][:6] == ["00", "01", "02", "03", "04", "05"], [p.name for p in SOLUTIONS]


def test_learner_notebooks_are_generated_from_solutions():
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[dev]')")
    spec = importlib.util.spec_from_file_location("make_learner", ROOT / "scripts" / "make_learner_notebooks.py")
    make_learner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_learner)
    for solution, learner in zip(SOLUTIONS, LEARNER):
        assert learner.read_text(encoding="utf-8") == make_learner.learner_version(solution), (
            f"notebooks/{learner.name} is not what solutions/{solution.name} generates: edit solutions/, then run "
            f"python scripts/make_learner_notebooks.py")


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem[:2] for p in WITH_EXERCISES])
def test_every_notebook_has_exercises(path):
    cells = exercise_cells(load(path))
    assert len(cells) >= 4, f"{path.name} has {len(cells)} cells tagged `exercise`; the course wants at least 4"
    for cell in cells:
        source = "".join(cell["source"])
        assert cell["cell_type"] == "code" and "### BEGIN SOLUTION" in source and "### END SOLUTION" in source, \
            f"{path.name}: an exercise cell without its solution markers:\n{source[:300]}"
        assert "check." in source, f"{path.name}: an exercise cell that checks nothing:\n{source[:300]}"


@pytest.mark.parametrize("path", BOTH, ids=IDS)
def test_committed_without_outputs(path):
    nb = load(path)
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} carries saved widget state; clear it"


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem[:2] for p in SOLUTIONS])
def test_first_code_cell_holds_literal_parameters(path):
    cell = parameters_cell(load(path))
    assert cell is not None, f"{path.name} has no code cell"
    assert "parameters" in cell.get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell must be tagged `parameters` (papermill injects after it)"
    source = "".join(cell["source"])
    names = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"{path.name}: parameters cell line {node.lineno} is not `name = literal`"
        try:
            names[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            pytest.fail(f"{path.name}: parameter {node.targets[0].id!r} (line {node.lineno}) is not a literal")
    assert names.get("smoke") is False, f"{path.name}: the parameters cell must define `smoke = False`"
    assert "output_dir" in names, f"{path.name}: the parameters cell must define `output_dir` (where it writes)"


def outputs_of(executed):
    """(all text the cells printed, number of images) of an executed notebook."""
    text, images = [], 0
    for cell in load(executed)["cells"]:
        for out in cell.get("outputs", []):
            text.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
            images += "image/png" in out.get("data", {})
    return "\n".join(text), images


@pytest.mark.parametrize("path", BOTH, ids=IDS)
def test_notebook_runs_headless(path, tmp_path):
    """Smoke setting, MPLBACKEND=Agg as in CI: it runs to the end, its figures are in the executed notebook,
    and its checks say what they must: all [pass] in solutions/, all [todo] in the learners' version."""
    papermill = pytest.importorskip("papermill", reason="papermill is not installed (pip install 'gigagpt[notebooks]')")
    python, why_not = course.python_for(path)
    if python is None:
        pytest.skip(why_not)
    parameters = {"smoke": True, "output_dir": str(tmp_path / "out")}
    declared = papermill.inspect_notebook(str(path))
    missing = sorted(set(parameters) - set(declared))
    assert not missing, f"{path.name} has no parameter(s) {missing}; it declares {sorted(declared)}"
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    executed = tmp_path / path.name
    ok, seconds, message, peak = course.run_notebook(path, executed, parameters, course.smoke_timeout(path), python,
                                                     env=threads)
    assert ok, f"{path.parent.name}/{message}"
    print(f"{path.parent.name}/{path.name}: {seconds:.0f} s, peak memory {peak / 2**30:.1f} GiB")

    text, images = outputs_of(executed)
    if path.name[:2] != "00":
        assert images >= 1, f"{path.parent.name}/{path.name}: no figure in the executed notebook (%matplotlib inline?)"
    verdicts = CHECK_LINE.findall(text)
    if path.name[:2] == "00":
        return
    exercises = len(exercise_cells(load(path)))
    counts = {v: [name for verdict, name in verdicts if verdict == v] for v in ("pass", "fail", "todo")}
    if path.parent == course.SOLUTION_DIR:
        assert not counts["fail"] and not counts["todo"], f"{path.name}: {verdicts}"
        assert len(counts["pass"]) >= exercises, f"{path.name}: {len(counts['pass'])} checks passed for {exercises} exercises"
    else:
        assert not counts["pass"] and not counts["fail"], f"learner {path.name}: {verdicts}"
        assert len(counts["todo"]) >= exercises, f"learner {path.name}: {len(counts['todo'])} [todo] for {exercises} exercises"
