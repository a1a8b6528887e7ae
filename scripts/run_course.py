"""Run every numbered notebook headless with papermill: executed .ipynb + HTML + an index.html.

    python scripts/run_course.py                      # the whole course at its default setting -> out/course/
    python scripts/run_course.py --smoke --only 01,03 # the quick setting the tests use, two notebooks
    python scripts/run_course.py --learner            # the learners' versions (exercises left as [todo])

By default it runs solutions/ (every exercise answered): the handout then shows every result, and is the
answer key. notebooks/ holds the learners' versions, generated from solutions/
(scripts/make_learner_notebooks.py).

Each notebook runs in its own papermill process with the Python of the environment it needs: notebook 04 with
.venv-cerebras/bin/python (skipped, with the reason, when that environment is missing), the rest with this
Python. Everything a notebook writes goes under --out (its `output_dir` parameter). tests/test_notebooks.py
imports the helpers below, so the tests and the handout run notebooks the same way.
"""
import argparse
import html
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil  # pyproject.toml [notebooks] (ipykernel needs it too)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"  # the learners' versions
SOLUTION_DIR = ROOT / "solutions"  # the complete ones
CEREBRAS_PYTHON = ROOT / ".venv-cerebras" / "bin" / "python"
CEREBRAS_KERNEL = "gigagpt-cerebras"  # the kernel scripts/cerebras_env.sh registers
SMOKE_TIMEOUT_S = {"04": 300}  # seconds per notebook in the smoke setting; the rest get DEFAULT_SMOKE_TIMEOUT_S
DEFAULT_SMOKE_TIMEOUT_S = 180
FULL_TIMEOUT_S = 3600


def numbered_notebooks(folder=NOTEBOOK_DIR):
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def smoke_timeout(path):
    return SMOKE_TIMEOUT_S.get(path.name[:2], DEFAULT_SMOKE_TIMEOUT_S)


def needs_cerebras(path):
    """Notebook 04 (or any notebook asking for the Cerebras kernel) runs in .venv-cerebras."""
    kernel = json.loads(path.read_text()).get("metadata", {}).get("kernelspec", {}).get("name")
    return path.name.startswith("04_") or kernel == CEREBRAS_KERNEL


def python_for(path):
    """(python executable, None) to run `path` with, or (None, why it cannot run here)."""
    if not needs_cerebras(path):
        return sys.executable, None
    if CEREBRAS_PYTHON.is_file():
        return str(CEREBRAS_PYTHON), None
    return None, (f"{path.name} needs the Cerebras environment ({CEREBRAS_PYTHON.relative_to(ROOT)} is missing; "
                  f"create it with scripts/cerebras_env.sh, Linux x86_64 + Python 3.11 only)")


def run_notebook(path, output_path, parameters, timeout, python=sys.executable, env=None):
    """Execute `path` with papermill into `output_path` (extra environment variables `env`); returns
    (ok, seconds, message, peak bytes of memory of papermill, the kernel and what it starts)."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "papermill", str(path), str(output_path), "--cwd", str(path.parent),
           "--no-progress-bar", "-y", json.dumps(parameters)]
    # No display anywhere; the notebooks switch to the inline backend themselves, so figures still land in the output.
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", **(env or {})}
    start = time.perf_counter()
    # A session of its own, so a timeout can stop papermill *and* the kernel it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    memory = PeakMemory(proc.pid)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except KeyboardInterrupt:  # Ctrl-C reaches only us: stop the notebook's session too
        _stop(proc)
        raise
    except subprocess.TimeoutExpired:
        _stop(proc)
        log = proc.communicate()[0]
        where = failure_summary(output_path) or "the notebook did not get to its first cell"
        return False, time.perf_counter() - start, f"{path.name}: timed out after {timeout} s in {where}", memory.stop()
    seconds, peak = time.perf_counter() - start, memory.stop()
    if proc.returncode == 0:
        return True, seconds, "", peak
    where = failure_summary(output_path)
    if where:
        return False, seconds, f"{path.name} failed in {where}", peak
    tail = "\n".join(log.strip().splitlines()[-15:])
    return False, seconds, f"{path.name}: papermill exited with {proc.returncode}:\n{tail}", peak


class PeakMemory:
    """The most resident memory a process and its children (the kernel, its subprocesses) held together,
    sampled every 0.2 s in a thread (what a learner's machine or a JupyterHub user needs)."""

    def __init__(self, pid):
        self.peak, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, args=(psutil.Process(pid),), daemon=True)
        self.thread.start()

    def _watch(self, root):
        while not self.done.wait(0.2):
            try:
                self.peak = max(self.peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            except psutil.Error:  # a process ended between listing and reading it
                pass

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def _stop(proc):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def failure_summary(output_path):
    """'cell 12 (`first line`): ValueError: ...' for the cell that failed or was still running, else None.

    Cells are numbered from 1 as in the source notebook (papermill's injected cells are not counted).
    """
    try:
        nb = json.loads(Path(output_path).read_text())
    except (OSError, ValueError):
        return None
    added = {"injected-parameters", "papermill-error-cell-tag"}
    cells = [c for c in nb.get("cells", []) if not added & set(c.get("metadata", {}).get("tags", []))]
    for number, cell in enumerate(cells, 1):
        if cell.get("cell_type") != "code":
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors or status == "running":
            source = "".join(cell.get("source", "")).strip().splitlines() or [""]
            what = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "still running"
            return f"cell {number} (`{source[0][:60]}`): {what}"
    return None


def to_html(ipynb_path):
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(ipynb_path))
    html_path = Path(ipynb_path).with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def title_of(path):
    for cell in json.loads(path.read_text()).get("cells", []):
        if cell.get("cell_type") == "markdown":
            match = re.search(r"^#\s+(.+)$", "".join(cell.get("source", "")), re.MULTILINE)
            if match:
                return match.group(1).strip()
    return path.stem


def write_index(out, results, smoke):
    rows = []
    for path, status, seconds, message, peak in results:
        links = (f'<a href="{path.stem}.html">HTML</a> · <a href="{path.stem}.ipynb">notebook</a>'
                 if (out / f"{path.stem}.html").is_file() else "")
        time_cell = f"{seconds:.0f} s" if seconds is not None else ""
        memory_cell = f"{peak / 2**30:.1f} GiB" if peak else ""
        rows.append(f"<tr><td>{html.escape(title_of(path))}</td><td class='{status}'>{status}</td>"
                    f"<td>{time_cell}</td><td>{memory_cell}</td><td>{links}</td><td>{html.escape(message)}</td></tr>")
    setting = "smoke setting (scaled down)" if smoke else "default setting"
    (out / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gigaGPT workshop</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto}} td,th{{padding:.3em .8em;text-align:left}}
.ok{{color:#15803d}} .failed{{color:#b91c1c}} .skipped{{color:#92400e}}</style></head>
<body><h1>gigaGPT workshop: the course, executed</h1>
<p>Every notebook run headless at its {setting} on {time.strftime('%Y-%m-%d %H:%M')}.
Open them interactively with <code>make lab</code>.</p>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>peak memory</th><th>open</th><th></th></tr>
{chr(10).join(rows)}
</table></body></html>
""", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/course", help="output folder (default: out/course)")
    parser.add_argument("--smoke", action="store_true", help="run each notebook's quick smoke setting")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,03")
    parser.add_argument("--learner", action="store_true", help="run notebooks/ (exercises as [todo]), not solutions/")
    parser.add_argument("--timeout", type=int, default=None,
                        help=f"seconds per notebook (default: {FULL_TIMEOUT_S}, smoke: {DEFAULT_SMOKE_TIMEOUT_S}; 04 more)")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    only = {n.strip().zfill(2) for n in args.only.split(",") if n.strip()}
    folder = NOTEBOOK_DIR if args.learner else SOLUTION_DIR
    notebooks = [p for p in numbered_notebooks(folder) if not only or p.name[:2] in only]
    if not notebooks:
        sys.exit(f"run_course: no numbered notebooks in {folder} match --only {args.only!r}")

    results, total = [], time.perf_counter()
    for path in notebooks:
        python, why_not = python_for(path)
        if python is None:
            print(f"{path.name:36} skipped: {why_not}", flush=True)
            results.append((path, "skipped", None, why_not, None))
            continue
        timeout = args.timeout or (smoke_timeout(path) if args.smoke else FULL_TIMEOUT_S)
        print(f"{path.name:36} running ...", end=" ", flush=True)
        executed = out / path.name
        parameters = {"smoke": args.smoke, "output_dir": str(out / "work" / path.stem)}
        ok, seconds, message, peak = run_notebook(path, executed, parameters, timeout, python)
        print(f"{'ok' if ok else 'FAILED'} in {seconds:.0f} s, peak memory {peak / 2**30:.1f} GiB", flush=True)
        if message:
            print("    " + message.replace("\n", "\n    "), flush=True)
        if executed.is_file():
            to_html(executed)
        results.append((path, "ok" if ok else "failed", seconds, message, peak))
    write_index(out, results, args.smoke)
    counts = {status: sum(r[1] == status for r in results) for status in ("ok", "skipped", "failed")}
    print(f"\n{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - total:.0f} s; open {out / 'index.html'}")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
