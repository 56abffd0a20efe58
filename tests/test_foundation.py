"""Foundation: the torchvision shim, pins kept consistent, notebooks stripped, README commands."""
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_field_libraries_import_after_scp_core():
    # a fresh interpreter: the shim must act before anything imports torchvision
    code = ("import scp_core, diffusers, lpips, pytorch_fid, torchvision;"
            "from diffusers import ControlNetModel, UNet2DConditionModel, AutoencoderKL;"
            "from pytorch_fid.inception import InceptionV3; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def _pins_from_pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    reqs = data["project"]["dependencies"] + extras["test"] + extras["lab"]
    return dict(r.split("==") for r in reqs)


def test_environment_yml_matches_pyproject_pins():
    pins = _pins_from_pyproject()
    assert all(v for v in pins.values()), "every dependency is pinned exactly"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = dict(r.split("==") for r in pip_section)
    assert conda_pins == pins
    assert pins["torch"] == "2.13.0"


def test_no_other_torch_or_nvidia_packages_installed():
    from importlib import metadata
    import torch
    assert torch.__version__.split("+")[0] == "2.13.0"
    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert not [n for n in names if n.startswith("nvidia-")] or torch.cuda.is_available()


def test_notebooks_have_no_outputs_and_no_editor_metadata():
    nbs = sorted((ROOT / "notebooks").glob("**/*.ipynb"))
    for p in nbs:
        nb = json.loads(p.read_text())
        for cell in nb["cells"]:
            assert not cell.get("outputs"), f"{p.name}: committed outputs"
            assert cell.get("execution_count") is None, f"{p.name}: execution counts"
            extra = set(cell.get("metadata", {})) - {"tags"}
            assert not extra, f"{p.name}: editor cell metadata {extra}"
            # nbformat 4.5 gives every cell an id (a cell added by hand without one is a warning today, an error later)
            assert (nb["nbformat"], nb["nbformat_minor"]) < (4, 5) or "id" in cell, f"{p.name}: a cell without an id"
        top = set(nb.get("metadata", {})) - {"kernelspec", "language_info"}
        assert not top, f"{p.name}: editor notebook metadata {top}"


def test_readme_first_lines_are_the_two_commands_and_ci_calls_the_test_one():
    lines = [l.strip() for l in (ROOT / "README.md").read_text().splitlines() if l.strip()]
    cmds = [l.split("#")[0].strip() for l in lines[1:3]]
    assert cmds == ["python3 bootstrap.py study", "python3 bootstrap.py test"]
    ci = (ROOT / ".ci" / "run").read_text()
    # the README's command, with at most environment settings before it (SCP_BROWSER_TEST=1 adds the browser test)
    assert re.search(r"^(\w+=\S+ )*python3 bootstrap.py test$", ci, re.M)


def test_no_committed_file_holds_an_absolute_machine_path():
    """Reports, metrics, zoo configs and docs are committed: none may carry a path of the machine that wrote it."""
    import re
    import subprocess

    s = "/"
    pattern = re.compile(rf"({s}root{s}|{s}home{s}[a-z]|{s}tmp{s}|{s}work{s}|{s}Users{s})")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    bad = []
    for name in listed:
        p = ROOT / name
        if name.startswith("tests/") or not p.is_file() or p.suffix not in {".json", ".md", ".csv", ".py", ".ipynb",
                                                                          ".txt", ".yml", ".toml", ".cfg", ""}:
            continue
        text = p.read_text(errors="ignore")
        bad += [f"{name}: {m.group(0)}" for m in pattern.finditer(text)][:1]
    assert not bad, f"absolute machine paths in committed files: {bad[:10]}"


def test_the_repository_is_self_contained():
    """Docs and code never send a reader to files outside the repository (a design card, a sibling folder)."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    outside = ("DESIGN" + ".md", ".." + "/shared")
    bad = [n for n in listed if not n.startswith("tests/") and n.endswith((".md", ".py", ".ipynb", ".yml"))
           and any(o in (ROOT / n).read_text(errors="ignore") for o in outside)]
    assert not bad, f"files referring outside the repository: {bad}"
    for link in re.findall(r"\]\(([^)#]+)", (ROOT / "README.md").read_text()):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to a missing file: {link}"


def test_bootstrap_lab_prints_its_url_and_opens_the_notebooks_at_the_quick_counts():
    """`python3 bootstrap.py lab`: the command it starts and what it tells the student (no server started here)."""
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", ROOT / "bootstrap.py")
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    cmd, env, message = bootstrap.lab_command(Path("py"), [], {"MPLBACKEND": "Agg", "PATH": "/bin"})
    cmd = [str(c) for c in cmd]
    assert env["SCP_QUICK"] == "1" and env["SCP_SMOKE"] == "0" and "MPLBACKEND" not in env
    port = next(c.split("=")[1] for c in cmd if c.startswith("--ServerApp.port="))
    token = next(c.split("=")[1] for c in cmd if c.startswith("--IdentityProvider.token="))
    assert "--ServerApp.ip=127.0.0.1" in cmd and len(token) == 32
    assert f"http://127.0.0.1:{port}/lab?token={token}" in message
    assert "quick counts" in message and "SCP_QUICK=0 python3 bootstrap.py lab" in message and "Ctrl+C" in message
    # the reference counts when asked, a port and address of the user's, and two starts get two tokens
    cmd2, env2, message2 = bootstrap.lab_command(Path("py"), ["--port", "9123", "--ip=0.0.0.0", "--no-browser"],
                                                 {"SCP_QUICK": "0"})
    cmd2 = [str(c) for c in cmd2]
    assert env2["SCP_QUICK"] == "0" and "reference counts" in message2
    assert "--ServerApp.port=9123" in cmd2 and "--ServerApp.ip=0.0.0.0" in cmd2 and "--no-browser" in cmd2
    assert "--port" not in cmd2 and "http://127.0.0.1:9123/lab?token=" in message2
    assert message2.split("token=")[1][:32] != token


def test_bootstrap_test_runs_two_workers_unless_told_otherwise(monkeypatch):
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", ROOT / "bootstrap.py")
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: 2)
    assert bootstrap.workers([]) == bootstrap.workers(["--runslow"]) == ["-n", "2", "--dist", "loadfile"]
    for own in (["-n", "4"], ["-n0"], ["--numprocesses=3"], ["-p", "no:xdist"], ["--dist", "load"]):
        assert bootstrap.workers(own) == [], own
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: 1)
    assert bootstrap.workers([]) == []
