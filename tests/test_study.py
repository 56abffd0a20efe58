"""scp_core.study: settings, profiles, the comparison table; the notebooks themselves run under nbval."""
import json

import pandas as pd
import pytest

from scp_core import study


def test_smoke_settings_cap_every_count_and_write_elsewhere():
    s = study.settings("toy", smoke=True, n_eval=500)
    assert s.n_eval <= study.SMOKE["n_eval"] and s.steps <= study.SMOKE["steps"]
    assert "_smoke" in str(s.reports)
    full = study.settings("toy", smoke=False)
    assert full.reports.name == "toy" and "_smoke" not in str(full.reports)
    assert study.settings("toy-gv", smoke=False).dataset == "toy-city-gv"


def test_profiles_refuse_unknown_names_and_real_scale_without_paths(monkeypatch):
    with pytest.raises(ValueError, match="unknown profile"):
        study.settings("imagenet")
    monkeypatch.delenv("SCP_PIPELINE", raising=False)
    with pytest.raises(ValueError, match="--pipeline DIR"):
        study.settings("cityscapes", smoke=False)
    monkeypatch.setenv("SCP_PIPELINE", "/models/cs")
    s = study.settings("cityscapes", smoke=False)
    assert s.pipeline == "/models/cs" and s.metric == "FID" and s.guidance == 4.0
    assert study.settings("ade20k", smoke=False, pipeline="/x").guidance == 7.5


def test_comparison_table_marks_our_rows(tmp_path):
    rows = [{"prior": k, "fd_toy": v, "n": 300} for k, v in (("normal", 2.0), ("joint", 1.5))]
    (tmp_path / "prior_comparison.json").write_text(json.dumps({"tables": {"toy": rows}}))
    t = study.comparison_table(tmp_path, "toy")
    paper = t[t.source == "paper (FID)"]
    ours = t[t.source.str.startswith("this project")]
    assert list(paper.method) == ["ControlNet", "SCP-Diff"] and paper.cityscapes.tolist() == [20.7, 10.5]
    assert ours["ours (FD-toy)"].tolist() == [2.0, 1.5] and all("n=300" in s for s in ours.source)
    assert pd.isna(ours.cityscapes).all(), "our FD-toy never lands in the paper's FID columns"


def test_paper_tables_hold_the_papers_numbers():
    t1 = study.PAPER_TABLE1.set_index("prior")
    assert t1.loc["joint", "cityscapes_fid"] == 10.53 and t1.loc["normal", "ade20k_miou"] == 20.73
    assert study.PAPER_TABLE3.set_index("method").loc["SCP-Diff", "lpips"] == 0.56


def test_fd_bootstrap_interval_contains_the_estimate(monkeypatch):
    """Resampling with replacement inflates FD; the bias-shifted interval must bracket the estimate."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(400, 8, generator=g, dtype=torch.float64)
    gen = torch.randn(200, 8, generator=g, dtype=torch.float64) * 1.1 + 0.1
    monkeypatch.setattr(study, "_features", lambda s, x: x)
    value, (lo, hi) = study.fd_with_ci(None, gen, ref, n_boot=200)
    raw = [study._fd(gen[np.random.default_rng(i).integers(0, 200, 200)], ref) for i in range(50)]
    assert np.mean(raw) > value, "the raw bootstrap is biased upward (the reason for the shift)"
    assert lo <= value <= hi
