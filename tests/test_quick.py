"""A student's quick run (`scpdiff reproduce --quick`): its counts come from the study's table, it refuses to be
a smoke run at once, and it writes to reports/_quick/<profile>. The quick batch itself is not run here."""
import json

import pytest

from scp_core import cli, study
from scp_core import reproduce as rp
from scp_core.io import REPO_ROOT
from scp_core.study.settings import NOTEBOOKS, QUICK, QUICK_PARAMS, SMOKE, SMOKE_PARAMS, parameters

from test_reproduce import _notebook


@pytest.fixture(autouse=True)
def _no_mode_from_the_environment(monkeypatch):
    monkeypatch.delenv("SCP_SMOKE", raising=False)
    monkeypatch.delenv("SCP_QUICK", raising=False)


def test_quick_settings_cap_the_counts_keep_the_steps_and_write_to_quick():
    s = study.settings("toy", quick=True, notebook="03_prior_comparison")
    assert (s.n_ref, s.n_eval, s.steps, s.quick, s.smoke) == (QUICK["n_ref"], QUICK["n_eval"], 20, True, False)
    assert s.reports == REPO_ROOT / "reports" / "_quick" / "toy"
    assert study.settings("toy", quick=True, notebook="00_quickstart").n_eval == 1, "a cap, never a raise"
    full = study.settings("toy", notebook="03_prior_comparison")
    assert not full.quick and full.reports == REPO_ROOT / "reports" / "toy" and full.n_eval == 300
    assert "steps" not in QUICK, "quick runs keep the real DDIM steps"
    for k in ("n_ref", "n_eval"):  # between smoke and the reference
        assert SMOKE[k] < QUICK[k] < NOTEBOOKS["03_prior_comparison"][k]


def test_quick_parameters_take_the_quick_counts():
    for notebook, counts in QUICK_PARAMS.items():
        got = parameters(notebook, "toy", False, quick=True, **{k: None for k in counts})
        assert {k: got[k] for k in counts} == counts, notebook
        for k, v in counts.items():
            if isinstance(v, list):  # fewer mus / kinds / stds than the reference, more than smoke
                assert len(SMOKE_PARAMS.get(notebook, {}).get(k, [])) <= len(v) < len(NOTEBOOKS[notebook][k])
    assert parameters("04_mu_sweep", "toy", False, quick=False)["mus"] == NOTEBOOKS["04_mu_sweep"]["mus"]


def test_scp_quick_in_the_environment_is_a_quick_run(monkeypatch):
    """How `scpdiff reproduce --quick` reaches the kernels: the notebooks pass smoke=False and quick=None."""
    monkeypatch.setenv("SCP_QUICK", "1")
    assert study.settings("toy", smoke=False, notebook="04_mu_sweep").quick
    assert parameters("05_diversity", "toy", False, k=None)["k"] == QUICK_PARAMS["05_diversity"]["k"]
    assert not study.settings("toy", smoke=False, quick=False).quick


def test_smoke_and_quick_at_once_are_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        study.settings("toy", smoke=True, quick=True)
    with pytest.raises(ValueError, match="exclude each other"):
        parameters("05_diversity", "toy", True, quick=True)
    with pytest.raises(ValueError, match="exclude each other"):
        rp.reproduce("toy", smoke=True, quick=True, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["reproduce", "--smoke", "--quick"])
    monkeypatch.setenv("SCP_SMOKE", "1")
    monkeypatch.setenv("SCP_QUICK", "1")
    with pytest.raises(ValueError, match="exclude each other"):
        study.settings("toy")


def test_the_quick_batch_writes_to_quick_reaches_the_kernels_and_says_so(tmp_path, monkeypatch):
    assert rp.report_dir("toy", False, quick=True) == REPO_ROOT / "reports" / "_quick" / "toy"
    assert rp.report_dir("toy", False) == REPO_ROOT / "reports" / "toy"
    assert cli.build_parser().parse_args(["reproduce", "--quick"]).quick
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "00_quickstart.ipynb", "import os\nfrom pathlib import Path\n"
              "p = Path(out_dir) / 'metrics' / 'env.json'; p.parent.mkdir(parents=True, exist_ok=True)\n"
              "p.write_text(os.environ.get('SCP_QUICK', 'unset'))")
    monkeypatch.setattr(rp, "NOTEBOOK_DIR", nbdir)
    out = tmp_path / "report"
    run = rp.reproduce("toy", only=["00_quickstart"], out=out, quick=True)
    assert run["notebooks"]["00_quickstart"]["status"] == "ok"
    assert (out / "metrics" / "env.json").read_text() == "1", "the kernels read SCP_QUICK=1"
    assert "SCP_QUICK" not in __import__("os").environ, "the batch leaves the environment as it found it"
    assert json.loads((out / "runs.json").read_text())["quick"] == study.quick_counts()
    head = (out / "index.md").read_text().splitlines()[:4]
    assert "student quick run" in head[0] and head[2].startswith("**A student quick run")
    assert "NOT the reference" in head[2] and f"n_eval={QUICK['n_eval']}" in head[2]
