"""Notebook 00 as a student uses it: the project's JupyterLab, headless, driven in a real Chromium (issue 35).

It costs minutes (a JupyterLab server, a browser, the notebook at a quick run's counts), so it runs only where
``SCP_BROWSER_TEST=1`` is set: ``.ci/run`` sets it, and ``python3 bootstrap.py test`` then installs JupyterLab,
ipywidgets and Selenium into ``.venv`` and, where it may (root, apt), Debian's ``chromium`` and
``chromium-driver``; no browser is downloaded. Elsewhere it is skipped with the reason.

What it does: starts ``jupyter lab`` (the server ``bootstrap.py lab`` starts) on 127.0.0.1 with a token, on a copy
of notebook 00 in a temporary folder (so nothing is saved into ``notebooks/``); opens the notebook in headless
Chromium; runs every cell through JupyterLab's own "run all cells" command; checks that no cell shows an error and
that the figures are shown; moves the mu slider of the interactive cell with the keyboard and checks that the
figure changes; saves screenshots (``SCP_UPDATE_SCREENSHOTS=1`` writes them to ``docs/``, which the README shows).
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL_S = 900   # the whole notebook at a quick run's counts, on a busy 2-core machine
WIDGET_S = 300    # one re-run of the interactive cell

pytestmark = pytest.mark.skipif(os.environ.get("SCP_BROWSER_TEST") != "1",
                                reason="browser test: set SCP_BROWSER_TEST=1 (.ci/run does); it starts JupyterLab "
                                       "and headless Chromium and takes minutes")


def _requirements() -> tuple[str, str]:
    """The Chromium and chromedriver binaries; skip naming what is missing and how to install it."""
    for module, extra in (("selenium", "browser"), ("jupyterlab", "lab"), ("ipywidgets", "lab")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed: pip install -e '.[{extra}]' (SCP_BROWSER_TEST=1 python3 "
                        "bootstrap.py test installs it)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium or chromedriver not found: apt-get install chromium chromium-driver (Debian's "
                    "packages; SCP_BROWSER_TEST=1 python3 bootstrap.py test installs them where it runs as root)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of notebook 00: ``(url, token, log path)``; stopped afterwards."""
    _requirements()
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "00_quickstart.ipynb", work)
    port, token = _free_port(), "scp-browser-test"
    # as bootstrap.py lab starts it: no batch flags, the kernel's inline backend (not the tests' Agg)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCP_BATCH", "SCP_SMOKE", "PYTEST_CURRENT_TEST", "MPLBACKEND")}
    # a student's quick run (the conftest's smoke counts would switch the interactive cell off); the user's
    # Jupyter settings and workspaces stay out of it
    env.update(SCP_QUICK="1", SCP_SMOKE="0", JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    # no news prompt over the screenshots (JupyterLab's user settings live in the temporary folder)
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    log = tmp_path / "jupyterlab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                                 f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
                                 f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
                                 "--ServerApp.port_retries=0"] + (["--allow-root"] if os.geteuid() == 0 else []),
                                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"JupyterLab did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url, token, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def chromium():
    browser, driver_path = _requirements()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, timeout: float, probe, log: Path | None = None):
    """Poll ``probe()`` until it returns something truthy; fail naming ``what`` (and the server's log) after
    ``timeout`` seconds."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    tail = f"\nJupyterLab's log:\n{log.read_text()[-3000:]}" if log else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){tail}")


# JupyterLab's application object (exposed by --LabApp.expose_app_in_browser): the open notebook's model
_PANEL = "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
_READY = _PANEL + """
const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return !!(w && w.content && w.content.model && k && k.connectionStatus === 'connected' && k.status === 'idle');"""
_PROGRESS = _PANEL + """
const cells = w.content.model.cells; let code = 0, run = 0;
for (let i = 0; i < cells.length; i++) {
  const c = cells.get(i);
  if (c.type === 'code') { code++; if (c.executionCount) run++; }
}
return [code, run, w.sessionContext.session.kernel.status];"""
_OUTPUTS = _PANEL + """
const cells = w.content.model.cells; const out = [];
for (let i = 0; i < cells.length; i++) {
  const c = cells.get(i);
  if (c.type === 'code') out.push(c.outputs.toJSON().map(o => [o.output_type, o.ename || '', o.evalue || '',
                                                              Object.keys(o.data || {}).join(',')]));
}
return out;"""


def _shot(driver, tmp_path: Path, name: str) -> Path:
    """A screenshot to ``tmp_path`` (and ``docs/`` with ``SCP_UPDATE_SCREENSHOTS=1``), checked to be a PNG."""
    png = base64.b64decode(driver.get_screenshot_as_base64())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, f"screenshot {name} is not a picture"
    path = tmp_path / name
    path.write_bytes(png)
    if os.environ.get("SCP_UPDATE_SCREENSHOTS") == "1":
        from scp_core.io import atomic_path
        with atomic_path(ROOT / "docs" / name) as tmp:
            tmp.write_bytes(png)
    return path


def _slider_images(driver) -> list[str]:
    """The sources of the pictures the interactive cell's output widget shows now."""
    return [img.get_attribute("src") for img in driver.find_elements("css selector", ".widget-output img")]


def test_notebook_00_runs_in_jupyterlab_and_its_widget_redraws_the_figure(lab, chromium, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token, log = lab
    driver = chromium
    driver.get(f"{url}/lab/tree/00_quickstart.ipynb?token={token}")
    _wait("the notebook open with its kernel idle", 180, lambda: driver.execute_script(_READY), log)
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    # every code cell has run (an execution count) and the kernel is idle again
    _wait("every cell to run", RUN_ALL_S,
          lambda: (lambda p: p[0] > 0 and p[0] == p[1] and p[2] == "idle")(driver.execute_script(_PROGRESS)), log)
    outputs = driver.execute_script(_OUTPUTS)
    errors = [(i, o[1], o[2][:300]) for i, cell in enumerate(outputs) for o in cell if o[0] == "error"]
    assert not errors, f"cells show errors: {errors}"
    pictures = sum("image/png" in o[3] for cell in outputs for o in cell)
    assert pictures >= 3, f"the method figure, the samples and the trajectory are shown: {pictures} pictures"
    shown = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    assert len(shown) >= 3 and all(img.get_attribute("naturalWidth") not in (None, "0") for img in shown), \
        "the browser decodes every figure it shows"
    # the method figure as a student sees it, the file browser folded away
    driver.execute_script(_PANEL + """
        window.jupyterapp.shell.collapseLeft();
        const cells = w.content.model.cells; let at = 0;
        for (let i = 0; i < cells.length; i++) {
          if (cells.get(i).sharedModel.getSource().includes('method_figure(')) at = i;
        }
        w.content.activeCellIndex = at; return w.content.scrollToItem(at, 'start');""")
    time.sleep(2)
    _shot(driver, tmp_path, "jupyterlab_00_method.png")

    # the interactive cell: its mu slider, moved with the keyboard as a student would, redraws the figure
    before = _wait("the interactive cell's figure", WIDGET_S, lambda: _slider_images(driver), log)
    sliders = [el for el in driver.find_elements(By.CSS_SELECTOR, ".widget-slider")
               if el.find_elements(By.CSS_SELECTOR, ".widget-label")
               and el.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == "mu"]
    assert sliders, "the interactive cell has a slider named mu"
    readout = sliders[0].find_element(By.CSS_SELECTOR, ".widget-readout")
    value_before = readout.text
    handle = sliders[0].find_element(By.CSS_SELECTOR, ".noUi-handle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    handle.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    _wait("the slider's value to move", 30, lambda: readout.text != value_before)
    after = _wait("the figure to be redrawn", WIDGET_S,
                  lambda: (lambda now: now if now and now != before else None)(_slider_images(driver)), log)
    assert after != before and float(readout.text) < float(value_before)
    _wait("the kernel to be idle", WIDGET_S, lambda: driver.execute_script(_PROGRESS)[2] == "idle", log)
    outputs = driver.execute_script(_OUTPUTS)
    assert not [o for cell in outputs for o in cell if o[0] == "error"], "moving the slider raised an error"
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});",
                          driver.find_element(By.CSS_SELECTOR, ".widget-interact"))
    time.sleep(1)
    _shot(driver, tmp_path, "jupyterlab_00_widget.png")
