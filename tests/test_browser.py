"""The course as learners use it: JupyterLab from this environment, driven by Playwright in headless Chromium.

- notebook 01: Run > Run All Cells, no error output; type into the tokenizer explorer, see its ids change;
- notebook 05: run the cells its scaling explorer needs, move the depth slider, see the printed plan change;
- the first exercise of notebooks/ (found by its `exercise` tag): run the cells above it; as shipped it says
  [todo]; type a wrong answer and see [fail], then the answer from solutions/ and see [pass].

Screenshots of each step go to out/browser/ (the tests print their names). JupyterLab serves working copies of
the notebooks in a temporary folder (their `output_dir` there too), with fresh Jupyter config, data, runtime,
settings and workspace folders, on a free localhost port with a token, and is shut down at the end, also on
failure. Every copy has `smoke = True`: the widgets are the same, and notebook 01 then runs in 21 s instead of
158 s (it trains a small model; both measured at load 9 on 2 cores). Notebook 05 runs only the cells above its
explorer (below it a real 1.3B/175B block takes minutes; tests/test_notebooks.py runs all of it), the
exercise's notebook the cells above the exercise.

Chromium is Debian's (`apt-get install chromium`; .ci/run installs it), launched by path: Playwright's own
browser download is not used. Skipped, with the reason, where Chromium or `playwright` is missing. Select or
deselect with `-m browser` / `-m "not browser"`.
"""
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "out" / "browser"
_spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[dev]')")
expect = sync_api.expect
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run does it)",
                allow_module_level=True)
# --no-sandbox: CI runs as root. Without the background-networking flags Chromium keeps dialling out, and a
# closed network refuses it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# A learner's JupyterLab, minus what would get in a test's way: the news pop-up, and virtual scrolling (cells
# off screen would be missing from the page).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}
# Tracebacks and stderr, as JupyterLab 4 renders them.
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
RUN_MS = 300_000  # the longest wait for cells to run: the CI machine has 2 cores, shared
expect.set_options(timeout=60_000)
# Which notebooks to look for exercises in: (learners' folder, solutions' folder).
EXERCISE_DIRS = (course.NOTEBOOK_DIR, course.SOLUTION_DIR)


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def tagged(nb, tag):
    return [i for i, c in enumerate(nb["cells"]) if tag in c.get("metadata", {}).get("tags", [])]


def first_exercise(learner_dir, solution_dir):
    """(learner notebook, index of its first `exercise` cell, wrong answer, right answer, check name), or None.

    The wrong answer is the learner's cell with `raise NotImplementedError()` turned into `return None`; the
    right one is the same cell of solutions/ without its ### BEGIN/END SOLUTION lines."""
    for learner in course.numbered_notebooks(learner_dir):
        if course.needs_cerebras(learner):  # notebook 04's kernel is another environment
            continue
        nb = load(learner)
        found = tagged(nb, "exercise")
        if not found:
            continue
        index, solution = found[0], load(Path(solution_dir) / learner.name)
        assert tagged(solution, "exercise")[:1] == [index], f"{learner.name}: solutions/'s first exercise is elsewhere"
        cell, solved = nb["cells"][index], solution["cells"][index]
        assert cell.get("id") == solved.get("id"), f"{learner.name}: exercise cell {index} differs from solutions/'s"
        text = source(cell)
        assert "raise NotImplementedError()" in text, f"{learner.name} cell {index}: no `raise NotImplementedError()`"
        name = re.search(r"check\.(\w+)\(", text)
        assert name, f"{learner.name} cell {index}: no check.<name>(...) call"
        wrong = text.replace("raise NotImplementedError()", "return None")
        right = "\n".join(line for line in source(solved).splitlines()
                          if not re.match(r"\s*### (BEGIN|END) SOLUTION", line))
        return learner, index, wrong, right, name.group(1)
    return None


class Lab:
    """A JupyterLab server on a working folder of notebook copies."""

    def __init__(self, base):
        self.base, self.root = base, base / "root"
        self.root.mkdir()
        for folder in ("configs", "data"):  # the repository's inputs, read only; 05 finds configs/ from its cwd
            (self.root / folder).symlink_to(ROOT / folder)
        self.token, self.port = secrets.token_hex(16), free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def copy(self, notebook, folder, **parameters):
        """Copy `notebook` to root/folder/, its parameters cell's lines `name = ...` set to `parameters` (and its
        output_dir to a temporary one); returns its path under root."""
        nb = load(notebook)
        cell = nb["cells"][tagged(nb, "parameters")[0]]
        lines = source(cell).splitlines()
        parameters.setdefault("output_dir", str(self.base / "out" / f"{folder}_{notebook.stem}"))
        for name, value in parameters.items():
            i = next(i for i, line in enumerate(lines) if re.match(rf"{name}\s*=", line))
            lines[i] = f"{name} = {value!r}"
        cell["source"] = "\n".join(lines)
        target = self.root / folder / notebook.name
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        return f"{folder}/{notebook.name}"

    def start(self):
        settings = self.base / "settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        jupyter = {name: self.base / name.lower() for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
                                                               "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR",
                                                               "IPYTHONDIR")}
        # No MPLBACKEND (the tests' Agg): learners have none, and the notebooks' figures must show without it.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env.update({k: str(v) for k, v in jupyter.items()}, JUPYTERLAB_SETTINGS_DIR=str(settings),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
        self.log_path = self.base / "jupyterlab.log"
        # This environment's JupyterLab; its kernels run this Python too (jupyter_client's rule for `python`).
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                self.api("GET", "status")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"JupyterLab did not start within 120 s; the end of its log:\n{self.log_tail()}")

    def api(self, method, endpoint):
        request = urllib.request.Request(f"{self.url}/api/{endpoint}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def stop(self):
        """Shut the server down with its kernels; kill it if it does not go within 30 s."""
        try:
            self.api("POST", "shutdown")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its kernels notice their parent is gone and exit too
            self.proc.wait()

    def log_tail(self, lines=30):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):  # the folder shows the last run only
        old.unlink()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture
def shot(page, request, capsys):
    """shot(name, locator=None): a screenshot of the page (scrolled to `locator`) as out/browser/<name>.png; a
    failing test adds <test>_FAILED.png. The names are printed at the end."""
    taken, failed_before = [], request.session.testsfailed

    def take(name, locator=None):
        if locator is not None:
            locator.scroll_into_view_if_needed()
        page.screenshot(path=SHOTS / f"{name}.png")
        taken.append(f"{name}.png")

    yield take
    if request.session.testsfailed > failed_before:  # the call phase is reported before teardown runs
        take(f"{request.node.name}_FAILED")
    with capsys.disabled():
        print(f"\n    screenshots in {SHOTS}: {', '.join(taken)}")


def open_notebook(page, lab, path):
    """Open root/path in JupyterLab (?reset: no tabs from earlier tests) and wait for its kernel; returns the
    notebook panel."""
    page.goto(f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
    expect(page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle$"))).to_be_visible(timeout=120_000)
    return page.locator(".jp-NotebookPanel:visible")


def run_menu(page, item):
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def wait_until_run(page, panel, upto=None):
    """Wait until the code cells (those before cell `upto`) have all run or one raised, then assert the first."""
    page.wait_for_function("""([panel, upto, stderr]) => {
        const prompts = [...panel.querySelectorAll('.jp-Cell')].slice(0, upto ?? undefined)
            .filter(c => c.classList.contains('jp-CodeCell'))
            .map(c => c.querySelector('.jp-InputPrompt').textContent.trim());
        if (prompts.includes('[*]:')) return false;  // running or queued
        return prompts.every(p => /^\\[\\d+\\]:$/.test(p)) || panel.querySelector(stderr) !== null;
    }""", arg=[panel.element_handle(), upto, STDERR], timeout=RUN_MS, polling=500)
    assert_no_error_output(panel)
    cells = panel.locator(".jp-Cell")
    for i in range(cells.count() if upto is None else upto):
        if "jp-CodeCell" in cells.nth(i).get_attribute("class"):
            expect(cells.nth(i).locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=1000)


def assert_no_error_output(panel):
    errors = panel.locator(STDERR).all_inner_texts()
    assert not errors, "error output in the notebook:\n" + "\n---\n".join(e[-1500:] for e in errors)


def cell_at(panel, path, contains):
    """The notebook's cell whose source contains `contains` (there must be one): (its index, its locator)."""
    found = [i for i, c in enumerate(load(path)["cells"]) if contains in source(c)]
    assert len(found) == 1, f"{path.name}: {len(found)} cells contain {contains!r}, expected 1"
    cell = panel.locator(".jp-Cell").nth(found[0])
    expect(cell).to_contain_text(contains)
    return found[0], cell


def run_cells_above(page, panel, cell, index):
    cell.locator(".jp-InputPrompt").click()  # select it, as a learner clicks beside a cell
    run_menu(page, "Run All Above Selected Cell")
    wait_until_run(page, panel, upto=index)


def run_cell(page, cell):
    """Ctrl+Enter on the selected (or edited) `cell`; wait for its new execution count; return its output text."""
    prompt = cell.locator(".jp-InputPrompt")
    before = prompt.inner_text()
    page.keyboard.press("Control+Enter")
    expect(prompt).not_to_have_text(before)  # [*]: or already the next count; the old output is gone
    expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=RUN_MS)
    return cell.locator(".jp-Cell-outputArea").inner_text()


def test_tokenizer_explorer(lab, page, shot):
    path = lab.copy(course.NOTEBOOK_DIR / "01_tokenization.ipynb", "notebooks", smoke=True)
    panel = open_notebook(page, lab, path)
    run_menu(page, "Run All Cells")
    wait_until_run(page, panel)
    shot("01_run_all", panel.locator(".jp-Cell").last)
    expect(panel.locator(".jp-OutputArea-output[data-mime-type='image/png']").first).to_be_visible()

    explorer = panel.locator(".widget-vbox", has=page.locator(".widget-textarea"))
    view = explorer.locator(".widget-html-content")
    expect(view).to_contain_text(" tokens: [")
    before = view.inner_text()
    shot("01_explorer_before", explorer)
    from gigagpt.tokenizer import get_encoding

    text = "To be, or not to be: that is the question."
    ids = get_encoding("gpt2").encode(text, allowed_special="all")
    explorer.locator("textarea").click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text, delay=20)
    expect(view).to_contain_text(f"{len(text)} characters, {len(ids)} tokens: {ids}")
    assert view.inner_text() != before
    shot("01_explorer_typed", explorer)


def test_scaling_explorer_slider(lab, page, shot):
    from gigagpt import scaling
    from gigagpt.model import GPTConfig

    notebook = course.NOTEBOOK_DIR / "05_scaling_to_175b.ipynb"
    path = lab.copy(notebook, "notebooks", smoke=True)
    panel = open_notebook(page, lab, path)
    index, cell = cell_at(panel, lab.root / path, "widgets.interact(")
    run_cells_above(page, panel, cell, index)
    cell.locator(".jp-InputPrompt").click()
    run_cell(page, cell)
    printed = cell.locator(".widget-interact .jp-OutputArea")
    expect(printed).to_contain_text("parameters")
    assert_no_error_output(panel)
    before = printed.inner_text()
    shot("05_explorer_before", printed)

    def readout(label):
        return slider(label).locator(".widget-readout")

    def slider(label):
        return cell.locator(".widget-slider", has=page.get_by_text(label, exact=True))

    depth = readout("depth").inner_text()
    slider("depth").locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")  # the keyboard moves a noUiSlider handle by one step
    expect(readout("depth")).not_to_have_text(depth)
    width, depth, heads, sequence = (int(readout(label).inner_text())
                                     for label in ("width", "depth", "heads", "sequence"))
    count = scaling.param_count(GPTConfig(width=width, depth=depth, heads=heads,
                                          max_position_embeddings=max(2048, sequence)))
    expect(printed).to_contain_text(re.compile(rf"parameters\s+{count:,}\s"))
    assert printed.inner_text() != before
    shot("05_slider_moved", printed)


def test_exercise_fails_then_passes(lab, page, shot):
    found = first_exercise(*EXERCISE_DIRS)
    if found is None:
        pytest.skip(f"no notebook in {EXERCISE_DIRS[0].name}/ has a cell tagged `exercise` yet")
    notebook, index, wrong, right, name = found
    path = lab.copy(notebook, "exercise", smoke=True)
    panel = open_notebook(page, lab, path)
    cell = panel.locator(".jp-Cell").nth(index)
    expect(cell).to_contain_text(f"check.{name}(")
    run_cells_above(page, panel, cell, index)
    cell.locator(".jp-InputPrompt").click()
    for answer, verdict in ((None, "todo"), (wrong, "fail"), (right, "pass")):
        if answer is not None:
            cell.locator(".cm-content").click()
            page.keyboard.press("Control+a")  # the cell's whole text
            page.keyboard.insert_text(answer)  # as pasted: typing key by key would add the editor's auto-indent
        printed = run_cell(page, cell)
        verdicts = re.findall(rf"^\[(pass|fail|todo)\] {name}\b", printed, re.MULTILINE)
        assert verdicts == [verdict], f"{notebook.name} cell {index}, {verdict} expected; it printed:\n{printed}"
        shot(f"{notebook.stem[:2]}_exercise_{verdict}", cell.locator(".jp-Cell-outputArea"))
    assert_no_error_output(panel)
