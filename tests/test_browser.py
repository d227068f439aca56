"""A real JupyterLab in a real browser: notebook 00 run through the UI in headless Chromium.

The test starts `jupyter lab` on 127.0.0.1 in a temporary folder holding a copy of the notebook
(the repository's file is never opened by the server), in the `smoke` profile with the caller's
COURSE_DATA_DIR. Playwright drives Debian's Chromium (no browser download): it opens the
notebook, clicks Run → Run All Cells, waits for the kernel, and fails if a cell did not run or
shows an error. The screenshot goes to build/browser/<notebook>.png. The test skips with a message
when playwright or Chromium is missing (set COURSE_CHROMIUM to use another Chromium binary).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "build" / "browser"
RUN_TIMEOUT = 180  # seconds for Run All Cells on one notebook

# A cell appended to the copy: the kernel says which Python it runs, the test compares it with its own.
PROBE = "import sys\nprint('kernel sys.prefix:', sys.prefix)"

pytestmark = pytest.mark.browser


def find_chromium() -> str | None:
    """$COURSE_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    if os.environ.get("COURSE_CHROMIUM"):
        return shutil.which(os.environ["COURSE_CHROMIUM"])
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(cells: list[str]) -> dict:
    """A minimal nbformat-4 notebook of code cells, on the kernel the test installs."""
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                        "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src,
                       "outputs": [], "execution_count": None} for i, src in enumerate(cells)]}


class JupyterLab:
    """`python -m jupyterlab` on 127.0.0.1, a free port and a random token, serving `root`.

    Everything Jupyter reads or writes (settings, workspaces, runtime files, the kernel spec)
    lives under `root/.jupyter`, so the caller's own Jupyter setup plays no part. The only
    kernel spec, `python3`, runs this interpreter (sys.executable).
    """

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        jp = root / ".jupyter"
        kernel = jp / "path" / "kernels" / "python3"
        kernel.mkdir(parents=True)
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        settings = jp / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)  # no "fetch Jupyter news?" toast over the notebook
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**env, "JUPYTER_PATH": str(jp / "path"), "JUPYTER_DATA_DIR": str(jp / "data"),
               "JUPYTER_CONFIG_DIR": str(jp / "config"), "JUPYTER_RUNTIME_DIR": str(jp / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(jp / "lab-settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(jp / "workspaces")}
        self.log = root / ".jupyter" / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                 f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                 f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                 "--allow-root",  # CI runs as root
                 "--LabApp.extension_manager=readonly",  # no look-ups on PyPI
                 "--LabApp.expose_app_in_browser=True"],  # window.jupyterapp, for the checks
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # its own process group: the kernels go down with it

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def _request(self, path: str, method: str = "GET", timeout: float = 5):
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                json.loads(self._request("/api/status"))
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer /api/status within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then make sure its process group is gone."""
        if self.proc.poll() is None:
            try:
                self._request("/api/shutdown", method="POST")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)  # the group of the server we started, kernels included
            except ProcessLookupError:
                break
            time.sleep(1)
        self.proc.wait(timeout=10)


@dataclass
class LabRun:
    """What a Run All Cells through the UI left behind."""
    name: str
    prompts: list[str]                      # input prompt of each code cell as shown, e.g. "[3]:"
    shown_errors: list[str] = field(default_factory=list)    # "ename: evalue" of errors on the page
    saved_errors: list[str] = field(default_factory=list)    # "ename: evalue" in the saved notebook
    unexecuted: list[str] = field(default_factory=list)      # saved code cells with no execution count
    kernel_prefix: str | None = None        # sys.prefix printed by the probe cell
    screenshot: Path | None = None


# Page-side helpers. The server runs with --LabApp.expose_app_in_browser, so the page has
# `window.jupyterapp`; its current widget is the notebook's tab (one tab per workspace here).
_STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const prompts = [...panel.node.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(e => e.textContent.trim());
  const shown = panel.node.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  const kernel = panel.sessionContext?.session?.kernel?.status ?? 'none';
  return {prompts, shown, kernel};
}"""

# JupyterLab renders an error output exactly like a stderr stream: a `.jp-RenderedText` with
# data-mime-type="application/vnd.jupyter.stderr" holding the traceback. No class or attribute
# on the page tells the two apart, so the errors are read from the notebook's output models, the
# outputs the page is showing, where an error keeps its output_type.
_ERRORS_JS = """() => {
  const errors = [];
  window.jupyterapp.shell.currentWidget.content.widgets
    .filter(cell => cell.model.type === 'code')
    .forEach((cell, i) => {
      for (let j = 0; j < cell.model.outputs.length; j++) {
        const out = cell.model.outputs.get(j).toJSON();
        if (out.output_type === 'error') errors.push(`code cell ${i + 1}: ${out.ename}: ${out.evalue}`);
      }
    });
  return errors;
}"""


def _menu(page, menu: str, command: str) -> None:
    """Open a menu of the menu bar and click the item of `command` (its id, not its label)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(f'.lm-Menu-item[data-command="{command}"]').click()


def run_all_in_lab(lab: JupyterLab, browser, notebook: Path, timeout: float = RUN_TIMEOUT) -> LabRun:
    """Open `notebook` (a file under lab.root) in a fresh workspace, Run All Cells, save, report."""
    rel = notebook.relative_to(lab.root).as_posix()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        # A workspace of its own: the tab opened by an earlier run is not restored into this one.
        page.goto(f"{lab.url}/lab/workspaces/{notebook.stem}/tree/{rel}?token={lab.token}")
        page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session"
                               "?.kernel?.status === 'idle'", timeout=90_000)  # notebook open, kernel ready
        _menu(page, "Run", "runmenu:run-all")  # Run → Run All Cells, as a student would

        start, last, stable = time.monotonic(), None, 0
        while True:
            state = page.evaluate(_STATE_JS)
            prompts, status = state["prompts"], state["kernel"]
            ran = [p for p in prompts if p not in ("[ ]:", "[*]:")]
            if status in ("dead", "none"):
                raise AssertionError(f"{notebook.name}: no kernel (status {status}); prompts {prompts}")
            # done: the kernel and the toolbar's indicator say idle, no cell is queued ([*])
            done = status == state["shown"] == "idle" and "[*]:" not in prompts and ran
            stable = stable + 1 if done and state == last else 0
            if stable >= 2:  # idle with nothing queued, unchanged over two polls
                break
            if not ran and "[*]:" not in prompts and time.monotonic() - start > 15:
                raise AssertionError(f"{notebook.name}: Run → Run All Cells started nothing; prompts {prompts}")
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{notebook.name}: not finished after {timeout} s (kernel {status}, "
                                     f"{len(ran)} of {len(prompts)} code cells ran; prompts {prompts})")
            last = state
            time.sleep(1)

        run = LabRun(notebook.stem, prompts, shown_errors=page.evaluate(_ERRORS_JS))

        # Save through the UI (File → Save Notebook), then read the file the server wrote.
        before = notebook.stat().st_mtime_ns
        _menu(page, "File", "docmanager:save")
        deadline = time.monotonic() + 30
        while notebook.stat().st_mtime_ns == before:
            assert time.monotonic() < deadline, f"{notebook.name}: File → Save did not save the notebook"
            time.sleep(0.5)
        time.sleep(0.5)
        saved = json.loads(notebook.read_text())
        for i, cell in enumerate(c for c in saved["cells"] if c["cell_type"] == "code"):
            src = "".join(cell["source"])
            if cell["execution_count"] is None:
                run.unexecuted.append(f"code cell {i + 1}: {src.splitlines()[0] if src else ''}")
            for out in cell["outputs"]:
                if out["output_type"] == "error":
                    run.saved_errors.append(f"code cell {i + 1}: {out['ename']}: {out['evalue']}")
                if src == PROBE and out.get("name") == "stdout":
                    run.kernel_prefix = "".join(out["text"]).split(":", 1)[1].strip()

        # The whole notebook in one picture: back to the first cell, then a window tall enough for the last.
        top_js = """() => {
          const nb = window.jupyterapp.shell.currentWidget.content;
          nb.activeCellIndex = 0;
          const outer = nb.node.querySelector('.jp-WindowedPanel-outer') ?? nb.node;
          outer.scrollTop = 0;
          const last = nb.widgets[nb.widgets.length - 1].node;  // how far it reaches below the window
          return Math.ceil(last.getBoundingClientRect().bottom - outer.getBoundingClientRect().bottom) + 20;
        }"""
        height = 900
        for _ in range(10):  # cells rendered for the first time grow the notebook: measure again
            extra = page.evaluate(top_js)
            if extra <= 0 or height >= 30_000:
                break
            height = min(height + extra, 30_000)
            page.set_viewport_size({"width": 1280, "height": height})
            page.wait_for_timeout(1000)
        run.screenshot = _screenshot(page, notebook.stem)
        return run
    except Exception:
        _screenshot(page, notebook.stem)  # what the page showed when it failed
        raise
    finally:
        page.close()


def _screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def chromium_path():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    path = find_chromium()
    if path is None and os.environ.get("COURSE_CHROMIUM"):
        pytest.skip(f"COURSE_CHROMIUM={os.environ['COURSE_CHROMIUM']} is not an executable")
    if path is None:
        pytest.skip("no Chromium found: apt-get install chromium (Debian), or set COURSE_CHROMIUM "
                    "to a Chromium binary")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path):
    root = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "COURSE_PROFILE": "smoke"}  # COURSE_DATA_DIR passes through
    server = JupyterLab(root, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root).
        b = p.chromium.launch(executable_path=chromium_path, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _copy_with_probe(src: Path, dest_dir: Path) -> Path:
    nb = json.loads(src.read_text())
    nb["cells"].append(_notebook([PROBE])["cells"][0] | {"id": "kernel-probe"})
    dest = dest_dir / src.name
    dest.write_text(json.dumps(nb, indent=1))
    return dest


def assert_clean(run: LabRun) -> None:
    """Every code cell ran, none shows or saved an error, and the kernel was this interpreter."""
    assert not run.shown_errors, f"error outputs on the page: {run.shown_errors} (screenshot {run.screenshot})"
    assert not run.saved_errors, f"error outputs in the saved notebook: {run.saved_errors}"
    assert not run.unexecuted, f"cells that did not run: {run.unexecuted} (screenshot {run.screenshot})"
    assert all(p[1:-2].isdigit() for p in run.prompts), run.prompts
    assert run.kernel_prefix == sys.prefix, f"the kernel ran {run.kernel_prefix}, not this venv {sys.prefix}"


def test_notebook_00_runs_in_jupyterlab(lab, browser):
    nb = _copy_with_probe(REPO / "notebooks" / "00_setup_and_data.ipynb", lab.root)
    assert_clean(run_all_in_lab(lab, browser, nb))


def test_a_failing_cell_is_caught(lab, browser):
    """The checks can fail: a cell that raises is reported, a stderr print is not, later cells do not run."""
    nb = lab.root / "browser_selftest_error.ipynb"
    nb.write_text(json.dumps(_notebook(["import sys\nprint('a warning', file=sys.stderr)",
                                        "1 / 0", "print('after the error')"])))
    run = run_all_in_lab(lab, browser, nb, timeout=60)
    assert run.shown_errors == ["code cell 2: ZeroDivisionError: division by zero"], run.shown_errors
    assert run.saved_errors == ["code cell 2: ZeroDivisionError: division by zero"], run.saved_errors
    assert run.unexecuted == ["code cell 3: print('after the error')"], run.unexecuted
    with pytest.raises(AssertionError, match="error outputs on the page"):
        assert_clean(run)
