"""`gigagpt doctor`: is this machine and this Python ready for the course? Run it before the day.

    gigagpt doctor                  # or: python gigagpt/doctor.py (also where `import gigagpt` fails)
    gigagpt doctor --root PATH      # check another checkout (its shipped files, .venv, .venv-cerebras)

One line per check, `[ok]`, `[warn]` or `[fail]`, with the fix under each line that is not ok; the exit status
is 1 when any check fails. Nothing touches the network. The first checks need only the standard library; each
later one imports what it needs itself and reports a failed import as a [fail] line, so a half-installed
environment (no torch, say) still gets the whole report. Notebook 00_setup runs this file by its
path, so that a Jupyter kernel from another environment is told so, and which kernel to pick instead.
"""
import argparse
import glob
import hashlib
import importlib
import importlib.util
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path
from types import SimpleNamespace

MIN_PYTHON = (3, 11)  # pyproject.toml: requires-python
MIN_TORCH = (2, 4)  # pyproject.toml: torch>=2.4 (.venv-cerebras has cstorch's pin, 2.4.0)
TESTED_TORCH = "2.13.0"  # what `make setup` installs (Makefile: TORCH)
CEREBRAS_PYTORCH = "2.10.0"  # scripts/cerebras_env.sh; wheels for Linux x86_64 + CPython 3.11 only
MIN_CORES = 2  # the course was developed and timed on 2 cores; 1 core works, slowly

# What the series needs, in GiB, measured on the 2-core development machine (torch 2.13 CPU) with
# scripts/run_course.py, each notebook headless in its own kernel: the peak resident memory of papermill, the kernel
# and what it starts (04 lowers models in `gigagpt train` subprocesses), sampled every 0.2 s; where an earlier
# measurement of the kernel alone (VmHWM) was higher (04: 3.6, 05: 7.3), that one. Default setting, then smoke.
NOTEBOOK_PEAK_MEMORY_GIB = {"01": 0.8, "02": 1.6, "03": 0.7, "04": 3.6, "05": 7.3}  # 05: one real 175B block, bf16
NOTEBOOK_SMOKE_MEMORY_GIB = {"01": 0.7, "02": 0.9, "03": 0.6, "04": 3.4, "05": 0.7}  # 05: a 1.3B block
JUPYTER_SERVER_GIB = 0.25  # JupyterLab's server measured 0.09 GiB; the rest for a second, idle kernel
# Disk: the notebooks at their default setting wrote 0.22 GiB (03's checkpoints 0.07, 04's compiler artifacts
# 0.15); `make course` adds the executed notebooks and HTML. 1 GiB leaves room for re-runs.
DISK_NEEDED_GIB = 1.0
VENV_DISK_GIB = 2.0  # .venv on disk (1.8 GiB), while it is still to be made
CEREBRAS_ENV_DISK_GIB = 6.0  # .venv-cerebras on disk (README, Cerebras)
NOTEBOOK_04 = "04"  # the one that runs in .venv-cerebras

GIB = 2**30
TAGS = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[fail]"}


def default_root():
    """The checkout this file lies in; for an installed (non-editable) copy, the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def short(error):
    """One line of an exception, for a report line."""
    if isinstance(error, ModuleNotFoundError) and error.name and "." not in error.name:
        return f"{error.name} is not installed"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160] if lines else ''}".rstrip(": ")


def major_minor(version):
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2])


# ---- the checks: each takes the context and returns a list of (status, what, fix) ----

def check_python(ctx):
    found = platform.python_version()
    if sys.version_info[:2] < MIN_PYTHON:
        return [("fail", f"python: {found} ({sys.executable}); the course needs {'.'.join(map(str, MIN_PYTHON))} "
                         "or newer", "install Python 3.11 (python.org, pyenv or conda), then run `make setup`")]
    return [("ok", f"python: {found} ({sys.executable})", "")]


def pick_environment_fix(ctx):
    venv = ctx.root / ".venv"
    setup = "" if venv.is_dir() else f"create it first: `make setup` in {ctx.root}; then "
    if ctx.kernel:
        return (f"{setup}in JupyterLab, Kernel > Change Kernel... > \"Python (gigagpt)\" if it is listed; if not, "
                f"start JupyterLab with `make lab` in {ctx.root} (its \"Python 3\" kernel is .venv), or make .venv a "
                f"kernel any JupyterLab lists: `{venv}/bin/python -m ipykernel install --user --name gigagpt "
                f"--display-name \"Python (gigagpt)\"`")
    return (f"{setup}run `{venv}/bin/gigagpt doctor`, or activate the environment first (`. {venv}/bin/activate`; "
            "conda: `conda activate gigagpt`)")


def check_environment(ctx):
    """Is this interpreter (or Jupyter kernel) the project's environment, importing gigagpt from this checkout?"""
    where = "this Jupyter kernel" if ctx.kernel else "this Python"
    prefix = Path(sys.prefix).resolve()
    try:
        spec = importlib.util.find_spec("gigagpt")
    except (ImportError, ValueError):
        spec = None
    package = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if package is None:
        ctx.project_env = False
        return [("fail", f"environment: {where} ({sys.executable}) is not the project's environment: it cannot "
                         "import gigagpt", pick_environment_fix(ctx))]
    if package != ctx.root / "gigagpt":
        ctx.project_env = False
        return [("warn", f"environment: {where} imports gigagpt from {package}, not from this checkout "
                         f"({ctx.root}): edits here will not show", pick_environment_fix(ctx))]
    if prefix == (ctx.root / ".venv").resolve():
        return [("ok", f"environment: {where} is the project's .venv; gigagpt from {ctx.root}", "")]
    if prefix.name == "gigagpt" and (prefix / "conda-meta").is_dir():
        return [("ok", f"environment: {where} is the conda env gigagpt; gigagpt from {ctx.root}", "")]
    if prefix == (ctx.root / ".venv-cerebras").resolve():
        return [("warn", f"environment: {where} is .venv-cerebras, right for notebook 04 only (torch 2.4)",
                 "for the other notebooks and the command line, use .venv: " + pick_environment_fix(ctx))]
    ctx.project_env = False
    return [("warn", f"environment: {where} ({sys.executable}) is not the project's .venv, but imports gigagpt "
                     f"from {ctx.root}: fine if you installed its dependencies here (the checks below say)",
             pick_environment_fix(ctx))]


def install_fix(ctx, what):
    if not ctx.project_env:
        return f"use the project's environment (see `environment` above), or install it into this one: {what}"
    return f"`make setup` in {ctx.root}, or in this environment: {what}"


def check_torch(ctx):
    try:
        import torch
    except Exception as e:  # not only ImportError: a broken install can raise OSError and others
        return [("fail", f"torch: cannot import it ({short(e)} in {sys.prefix})",
                 install_fix(ctx, f"`pip install torch=={TESTED_TORCH}` (on Linux, the CPU build: add "
                                  "--index-url https://download.pytorch.org/whl/cpu)"))]
    found = torch.__version__
    if major_minor(found) < MIN_TORCH:
        return [("fail", f"torch: {found} is older than {'.'.join(map(str, MIN_TORCH))}",
                 install_fix(ctx, f"`pip install torch=={TESTED_TORCH}`"))]
    tested = "" if found.startswith(TESTED_TORCH) else f" (the course is tested with {TESTED_TORCH})"
    return [("ok", f"torch: {found}{tested}", "")]


def import_versions(modules):
    """({distribution: version}, {distribution: error}) for each {module: distribution}, imported here and now."""
    found, missing = {}, {}
    for module, dist in modules.items():
        try:
            imported = importlib.import_module(module)
        except Exception as e:
            missing[dist] = "not installed" if getattr(e, "name", None) == module else short(e)
            continue
        version = getattr(imported, "__version__", None)
        if version is None:
            try:
                version = dist_version(dist)
            except Exception:
                version = "?"
        found[dist] = version
    return found, missing


def check_dependencies(ctx):
    found, missing = import_versions({"numpy": "numpy", "tiktoken": "tiktoken", "yaml": "pyyaml", "tqdm": "tqdm"})
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    if missing:
        errors = "; ".join(f"{name}: {error}" for name, error in missing.items())
        return [("fail", f"dependencies: cannot import {errors}" + (f" (fine: {listed})" if listed else ""),
                 install_fix(ctx, f"`pip install -e \"{ctx.root}[dev]\"`"))]
    return [("ok", f"dependencies: {listed}", "")]


def check_gigagpt(ctx):
    """The package itself: its training loop imports, and the offline GPT-2 tokenizer encodes."""
    try:
        importlib.import_module("gigagpt.train")
        tokenizer = importlib.import_module("gigagpt.tokenizer")
        ids = tokenizer.get_encoding("gpt2").encode("Hello world")
    except Exception as e:
        return [("fail", f"gigagpt: cannot import it or its tokenizer ({short(e)})",
                 install_fix(ctx, f"`pip install -e \"{ctx.root}[dev]\"`"))]
    if ids != [15496, 995]:
        return [("fail", f"gigagpt: the GPT-2 tokenizer encodes 'Hello world' as {ids}, not [15496, 995]",
                 "reinstall tiktoken: `pip install --force-reinstall tiktoken`")]
    import gigagpt
    return [("ok", f"gigagpt: {gigagpt.__version__} imports; the offline GPT-2 tokenizer works", "")]


def check_notebook_packages(ctx):
    found, missing = import_versions({"matplotlib": "matplotlib", "ipywidgets": "ipywidgets"})
    # papermill is only looked for: importing it takes ~2 s here, and only the headless runs use it
    papermill = importlib.util.find_spec("papermill") is not None
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    fix = install_fix(ctx, f"`pip install -e \"{ctx.root}[notebooks]\"`")
    if missing:
        errors = "; ".join(f"{name}: {error}" for name, error in missing.items())
        return [("fail", f"notebook packages: cannot import {errors}", fix)]
    if not papermill:
        return [("warn", f"notebook packages: {listed}; papermill is missing (only `make course` and `make test` "
                         "use it)", fix)]
    return [("ok", f"notebook packages: {listed}, papermill", "")]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_shipped_files(ctx):
    """The GPT-2 ranks and tiny Shakespeare ship with the repository: present, and byte for byte the right ones."""
    # Read by file path: this also runs where `import gigagpt` fails.
    shipped = runpy.run_path(str(Path(__file__).with_name("shipped.py")))["SHIPPED"]
    results = []
    for relative, expected in shipped.items():
        path = ctx.root / relative
        restore = f"restore it: `git checkout -- {relative}` in {ctx.root} (or copy it from a fresh copy of the course)"
        if not path.is_file():
            results.append(("fail", f"{relative}: missing from {ctx.root}", restore))
        elif sha256(path) != expected:
            results.append(("fail", f"{relative}: corrupt (sha256 is not {expected[:12]}...; an interrupted copy, "
                                    "or an editor that changed line endings?)", restore))
        else:
            results.append(("ok", f"{relative}: present, sha256 {expected[:12]}... matches", ""))
    return results


def cgroup_memory(proc="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """(free, limit) bytes under the tightest cgroup v2 memory limit on this process, or None where none is set.

    Docker shows the container's limit at the root; systemd (The Littlest JupyterHub: one service per user) sets
    it on the user's unit, a parent of the kernel's cgroup: so every level from ours up to the root is read."""
    try:
        with open(proc) as f:
            ours = next(line[3:].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    tightest, level = None, Path(root, ours.lstrip("/"))
    for folder in [level, *level.parents]:
        try:
            limit = (folder / "memory.max").read_text().strip()
            used = int((folder / "memory.current").read_text())
        except (OSError, ValueError):
            limit = "max"
        if limit != "max" and (tightest is None or int(limit) - used < tightest[0]):
            tightest = (int(limit) - used, int(limit))
        if folder == Path(root):
            break
    return tightest


def memory_bytes():
    """(available, total) physical memory in bytes, or None where this OS is not covered."""
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        available, total = info.get("MemAvailable", info["MemFree"]), info["MemTotal"]
        limited = cgroup_memory()  # a container's or a JupyterHub user's limit can be far below the machine's
        if limited:
            available, total = min(available, limited[0]), min(total, limited[1])
        return available, total
    if sys.platform == "darwin":
        total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True).stdout)
        vm_stat = subprocess.run(["vm_stat"], capture_output=True, text=True).stdout
        page = int(re.search(r"page size of (\d+)", vm_stat).group(1))
        pages = re.findall(r"Pages (?:free|inactive|speculative|purgeable):\s+(\d+)", vm_stat)
        return page * sum(map(int, pages)), total
    if sys.platform == "win32":
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("available", ctypes.c_ulonglong)] + [(n, ctypes.c_ulonglong) for n in "abcde"]
        status = MemoryStatus(length=ctypes.sizeof(MemoryStatus))
        ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
        return status.available, status.total
    return None


def check_memory(ctx):
    """Free memory against each notebook's measured peak; 04 counts only where .venv-cerebras can run it."""
    def peaks(table):
        return {nb: gib + JUPYTER_SERVER_GIB for nb, gib in table.items()
                if nb != NOTEBOOK_04 or cerebras_version(ctx.root)}
    default, smoke = peaks(NOTEBOOK_PEAK_MEMORY_GIB), peaks(NOTEBOOK_SMOKE_MEMORY_GIB)
    need = max(default.values())
    try:
        measured = memory_bytes()
        why = f"not measured on {platform.system()}"
    except Exception as e:
        measured, why = None, short(e)
    if measured is None:
        return [("warn", f"memory: cannot measure it ({why}); the notebooks need up to {need:.1f} GiB free", "")]
    available, total = measured[0] / GIB, measured[1] / GIB
    text = f"memory: {available:.1f} GiB free of {total:.1f} GiB; the notebooks need up to {need:.1f} GiB"
    if total < max(gib for nb, gib in smoke.items() if nb != NOTEBOOK_04):
        return [("fail", text, "too little memory even for the notebooks' smoke settings: use a bigger machine")]
    short_of = [nb for nb, gib in sorted(default.items()) if gib > available]
    if not short_of:
        return [("ok", text, "")]
    names = ", ".join(f"{nb} ({default[nb]:.1f} GiB)" for nb in short_of)
    never = [nb for nb in short_of if default[nb] > total]
    fix = ("close other programs (browser tabs too) and other notebooks' kernels, then run this again"
           + (f" (for {', '.join(never)} not enough: this machine has {total:.1f} GiB in all)" if never else ""))
    smaller = [f"{nb} with `smoke = True` ({smoke[nb]:.1f} GiB)" for nb in short_of
               if smoke[nb] < default[nb] and smoke[nb] <= available]
    if smaller:
        fix += "; or run " + ", ".join(smaller)
    return [("warn", f"{text}: not enough free now for notebook {names}", fix)]


def cerebras_version(root):
    site_packages = root / ".venv-cerebras" / "lib" / "python3.*" / "site-packages"
    dists = glob.glob(str(site_packages / "cerebras_pytorch-*.dist-info"))
    return dists and Path(dists[0]).name[len("cerebras_pytorch-"):-len(".dist-info")]


def cerebras_possible():
    """None where .venv-cerebras can be built here, else why not."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return f"this is {platform.system()} {platform.machine()}"
    if sys.version_info[:2] != (3, 11) and not shutil.which("python3.11"):
        return "no Python 3.11 on PATH"
    return None


def check_disk(ctx):
    try:
        free = shutil.disk_usage(ctx.root).free / GIB
    except OSError as e:
        return [("warn", f"disk: cannot measure the free space at {ctx.root} ({short(e)})", "")]
    venv_to_make = not (ctx.root / ".venv").is_dir()
    cerebras_to_make = not cerebras_version(ctx.root) and cerebras_possible() is None
    need = DISK_NEEDED_GIB + VENV_DISK_GIB * venv_to_make
    text = f"disk: {free:.1f} GiB free at {ctx.root}; the course writes up to {DISK_NEEDED_GIB:.0f} GiB"
    text += f", .venv takes {VENV_DISK_GIB:.0f} GiB" if venv_to_make else ""
    text += f", .venv-cerebras {CEREBRAS_ENV_DISK_GIB:.0f} GiB" if cerebras_to_make else ""
    if free < need:
        return [("fail", text, "free some disk space (or move the course to a disk with more), then run this again")]
    if cerebras_to_make and free < need + CEREBRAS_ENV_DISK_GIB:
        return [("warn", text, "free some disk space before `make course` builds .venv-cerebras, or skip it: "
                               "`CEREBRAS=0 make course`")]
    return [("ok", text, "")]


def cpu_name():
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as f:
                return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True).stdout.strip()
    except OSError:
        pass
    return platform.processor()


def check_cpu(ctx):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    text = f"cpu: {cores} cores usable ({cpu_name() or 'unknown model'})"
    if cores < MIN_CORES:
        return [("warn", text, "training in notebook 03 will be slow on one core: set `smoke = True` in its "
                               "parameters cell for a short version")]
    return [("ok", text, "")]


def check_precision_and_device(ctx):
    """The device `device: auto` trains on, and the precision `dtype: auto` picks there (what gigagpt says)."""
    try:
        import torch
    except Exception as e:
        return [("warn", f"device, precision: not checked, torch does not import ({short(e)})", "see `torch` above")]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = torch.device("cuda")
        seen = f"{torch.cuda.device_count()} CUDA GPU(s): {props.name}, {props.total_memory / GIB:.0f} GiB"
    elif torch.backends.mps.is_available():
        device, seen = torch.device("mps"), "Apple MPS GPU"
    else:
        device, seen = torch.device("cpu"), "no CUDA GPU or Apple MPS: the course runs on the CPU, as written"
    results = [("ok", f"device: {seen}", "")]
    try:  # never fail the check over it
        from gigagpt.hardware import resolve_dtype
        dtype = str(resolve_dtype("auto", device)).replace("torch.", "")
    except Exception as e:
        results.append(("warn", f"precision: gigagpt could not say which dtype training uses ({short(e)})", ""))
    else:
        threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
        why = ""
        if device.type == "cpu":
            from gigagpt.hardware import cpu_has_fast_bf16

            why = (": this CPU has AMX or AVX512-BF16" if cpu_has_fast_bf16() else
                   ": this CPU has no AMX or AVX512-BF16, so bf16 would be emulated (far slower)")
        results.append(("ok", f"precision: training on {device.type} runs in {dtype} (dtype: auto){why}{threads}", ""))
    return results


def check_cerebras(ctx):
    """Notebook 04 needs .venv-cerebras; where it cannot exist, the executed notebook from the handout stands in."""
    read_instead = ("read notebook 04 executed instead: `make course` on a Linux x86_64 machine writes "
                    "out/course/04_cerebras_compilation.html (ask your instructor for the handout)")
    handout = ctx.root / "out" / "course" / "04_cerebras_compilation.html"
    if handout.is_file():
        read_instead = f"read notebook 04 executed instead: open {handout}"
    found = cerebras_version(ctx.root)
    if found == CEREBRAS_PYTORCH:
        kernel = ctx.root / ".venv" / "share" / "jupyter" / "kernels" / "gigagpt-cerebras" / "kernel.json"
        if not kernel.is_file():
            return [("warn", f"cerebras: .venv-cerebras has cerebras-pytorch {found}, but JupyterLab does not list "
                             "its kernel", "`scripts/cerebras_env.sh` registers it (gigagpt-cerebras)")]
        return [("ok", f"cerebras: .venv-cerebras has cerebras-pytorch {found}: notebook 04 runs here "
                       "(kernel \"Python 3.11 (cerebras-pytorch ...)\")", "")]
    if found:
        return [("warn", f"cerebras: .venv-cerebras has cerebras-pytorch {found}, not {CEREBRAS_PYTORCH}",
                 "rebuild it: `rm -rf .venv-cerebras && make cerebras-env`")]
    why_not = cerebras_possible()
    if why_not:
        return [("warn", f"cerebras: notebook 04 cannot run here: cerebras-pytorch {CEREBRAS_PYTORCH} has wheels for "
                         f"Linux x86_64 with Python 3.11 only ({why_not}); notebooks 01-03 and 05 run",
                 read_instead)]
    return [("warn", "cerebras: .venv-cerebras is not built yet, so notebook 04 cannot run",
             f"`make cerebras-env` in {ctx.root} (~3 GB download, {CEREBRAS_ENV_DISK_GIB:.0f} GiB on disk, a few "
             f"minutes; offline from a wheelhouse, see README); or {read_instead}")]


CHECKS = [check_python, check_environment, check_shipped_files, check_memory, check_disk, check_cpu,
          check_cerebras, check_torch, check_dependencies, check_gigagpt, check_notebook_packages,
          check_precision_and_device]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gigagpt doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root(),
                        help="the course checkout to check (default: the one this file is in)")
    args = parser.parse_args(argv)
    ctx = SimpleNamespace(root=args.root.resolve(), kernel="ipykernel" in sys.modules, project_env=True)
    print(f"gigagpt doctor: checkout {ctx.root}; {platform.system()} {platform.machine()}", flush=True)
    counts = {"ok": 0, "warn": 0, "fail": 0}
    for check in CHECKS:
        try:
            results = check(ctx)
        except Exception as e:  # a check that breaks reports itself and lets the others run
            results = [("fail", f"{check.__name__}: the check itself failed ({short(e)})",
                        "please report this line to the instructor")]
        for status, text, fix in results:
            counts[status] += 1
            print(f"{TAGS[status]} {text}", flush=True)
            if fix and status != "ok":
                print(f"       fix: {fix}", flush=True)
    verdict = "fix the [fail] lines, then run it again" if counts["fail"] else "ready for the course"
    print(f"gigagpt doctor: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail: {verdict}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # `python gigagpt/doctor.py` put the package folder first, where data.py & co. shadow
    sys.exit(main())
