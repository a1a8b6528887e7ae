"""The course's notebooks: the rules every numbered notebook follows, and each one run headless (smoke setting).

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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)

NOTEBOOKS = course.numbered_notebooks()
IDS = [p.stem for p in NOTEBOOKS]


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def parameters_cell(nb):
    return next((c for c in nb["cells"] if c["cell_type"] == "code"), None)


def test_the_series_is_there():
    assert [p.name[:2] for p in NOTEBOOKS][:3] == ["01", "02", "03"], [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    nb = load(path)
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} carries saved widget state; clear it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_headless(path, tmp_path):
    papermill = pytest.importorskip("papermill", reason="papermill is not installed (pip install 'gigagpt[notebooks]')")
    python, why_not = course.python_for(path)
    if python is None:
        pytest.skip(why_not)
    parameters = {"smoke": True, "output_dir": str(tmp_path / "out")}
    declared = papermill.inspect_notebook(str(path))
    missing = sorted(set(parameters) - set(declared))
    assert not missing, f"{path.name} has no parameter(s) {missing}; it declares {sorted(declared)}"
    timeout = course.smoke_timeout(path)
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    ok, seconds, message = course.run_notebook(path, tmp_path / path.name, parameters, timeout, python, env=threads)
    assert ok, message
    print(f"{path.name}: {seconds:.0f} s")
