"""`gigagpt doctor`: passes here, still reports where torch is missing, and catches a corrupt shipped file.

Each case runs the command in a fresh process, as a learner would, since what it checks is the process itself.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAGGED = re.compile(r"^\[(ok|warn|fail)\]")


def doctor(*args, python=(sys.executable,), cwd=None):
    """Run `gigagpt doctor ARGS` with the checkout on PYTHONPATH; (exit status, {tag: [lines]}, output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*python, "-m", "gigagpt", "doctor", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    lines = {"ok": [], "warn": [], "fail": []}
    for line in proc.stdout.splitlines():
        match = TAGGED.match(line)
        if match:
            lines[match.group(1)].append(line)
    return proc.returncode, lines, output


def fix_after(output, line):
    """The line under `line`, which must be its fix."""
    after = output.splitlines()[output.splitlines().index(line) + 1]
    assert after.strip().startswith("fix: "), f"no fix under {line!r}:\n{output}"
    return after


def test_passes_in_the_project_environment():
    status, lines, output = doctor()
    assert status == 0 and not lines["fail"], output
    for name in ("python", "environment", "torch", "dependencies", "gigagpt", "notebook packages", "memory",
                 "disk", "cpu", "precision", "device", "cerebras", "gigagpt/gpt2.tiktoken", "data/tinyshakespeare.txt"):
        assert any(re.match(rf"^\[\w+\]\s+{re.escape(name)}: ", line) for kind in lines.values() for line in kind), \
            f"no line for {name!r}:\n{output}"
    for line in lines["warn"]:  # a warning always says what to do
        fix_after(output, line)


def test_starts_without_torch_and_fails_with_the_fix(tmp_path):
    # `python -S` leaves out site-packages: the standard library only, as in a Python where nothing is installed
    status, lines, output = doctor(python=(sys.executable, "-S"), cwd=tmp_path)
    assert status == 1, output
    assert "Traceback" not in output, output
    torch_line = next((line for line in lines["fail"] if line.startswith("[fail] torch:")), None)
    assert torch_line and "not installed" in torch_line, output
    assert "pip install torch==" in fix_after(output, torch_line)
    assert any(line.startswith("[fail] dependencies:") for line in lines["fail"]), output
    # the checks that need only the standard library still ran
    assert any("data/tinyshakespeare.txt: present" in line for line in lines["ok"]), output


def test_a_corrupt_ranks_file_and_a_missing_corpus_fail(tmp_path):
    (tmp_path / "gigagpt").mkdir()
    ranks = (ROOT / "gigagpt" / "gpt2.tiktoken").read_bytes()
    (tmp_path / "gigagpt" / "gpt2.tiktoken").write_bytes(ranks[:-100] + b"x" * 100)  # same size, other bytes
    status, lines, output = doctor("--root", str(tmp_path), python=(sys.executable, "-S"))
    assert status == 1, output
    corrupt = next(line for line in lines["fail"] if line.startswith("[fail] gigagpt/gpt2.tiktoken:"))
    assert "corrupt" in corrupt
    assert "git checkout -- gigagpt/gpt2.tiktoken" in fix_after(output, corrupt)
    missing = next(line for line in lines["fail"] if line.startswith("[fail] data/tinyshakespeare.txt:"))
    assert "missing" in missing


def test_runs_from_its_file_path_where_gigagpt_is_not_importable(tmp_path):
    """What notebook 00 does in a kernel from another environment."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", str(ROOT / "gigagpt" / "doctor.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^\[fail\] environment: .* cannot import gigagpt$", proc.stdout, re.MULTILINE), proc.stdout
    assert "make setup" in proc.stdout or ".venv/bin/gigagpt doctor" in proc.stdout


def test_memory_counts_the_tightest_cgroup_limit_above_the_process(tmp_path):
    """A JupyterHub user's limit sits on a parent of the kernel's cgroup; a container's at the root."""
    from gigagpt.doctor import cgroup_memory

    proc = tmp_path / "cgroup"
    proc.write_text("0::/user.slice/jupyter-ada.service/kernel\n")
    fs = tmp_path / "fs"
    levels = {"": ("max", 0), "user.slice": ("max", 0), "user.slice/jupyter-ada.service": (str(4 * 2**30), 2**30),
              "user.slice/jupyter-ada.service/kernel": ("max", 2**30)}
    for level, (limit, used) in levels.items():
        (fs / level).mkdir(parents=True, exist_ok=True)
        (fs / level / "memory.max").write_text(limit + "\n")
        (fs / level / "memory.current").write_text(f"{used}\n")
    assert cgroup_memory(proc, fs) == (3 * 2**30, 4 * 2**30)
    (fs / "memory.max").write_text(str(2 * 2**30))  # a tighter one at the root (a container) wins
    assert cgroup_memory(proc, fs) == (2 * 2**30, 2 * 2**30)
    proc.write_text("0::/\n")
    (fs / "memory.max").write_text("max")
    assert cgroup_memory(proc, fs) is None  # no limit anywhere: the machine's memory counts
