"""scp_core.study: settings, profiles, the comparison table; the notebooks themselves run under nbval."""
import json

import pandas as pd
import pytest
import torch

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


def test_the_environment_names_real_data_and_never_reaches_the_toy_profiles(monkeypatch, tmp_path):
    monkeypatch.setenv("SCP_DATA_ROOT", str(tmp_path / "camvid"))
    monkeypatch.setenv("SCP_PIPELINE", str(tmp_path / "pipe"))
    assert study.settings("camvid", smoke=False).data_root == str(tmp_path / "camvid")
    for profile in ("toy", "toy-gv"):  # toy-city would generate its images into that folder
        s = study.settings(profile, smoke=False)
        assert s.data_root is None and s.pipeline == study.PROFILES[profile].pipeline


def test_comparison_table_marks_our_rows(tmp_path):
    rows = [{"prior": k, "fd": v, "n": 300, "metric": "FD-toy"} for k, v in (("normal", 2.0), ("joint", 1.5))]
    (tmp_path / "prior_comparison.json").write_text(json.dumps({"tables": {"toy": rows}}))
    t = study.comparison_table(tmp_path)
    paper = t[t.source == "paper"]
    ours = t[t.source.str.startswith("this project")]
    assert list(paper.method) == ["ControlNet", "SCP-Diff"] and paper.cityscapes.tolist() == [20.7, 10.5]
    assert ours["ours"].tolist() == [2.0, 1.5] and all("n=300" in s for s in ours.source)
    assert ours.ours_metric.tolist() == ["FD-toy", "FD-toy"] and paper.ours_metric.tolist() == ["FID", "FID"]
    assert pd.isna(ours.cityscapes).all(), "our FD-toy never lands in the paper's FID columns"


def test_saved_tables_print_intervals_for_reading_and_keep_full_precision_in_csv(tmp_path):
    df = pd.DataFrame([{"prior": "joint", "fd": 272.48312, "fd_ci": (266.331038451, 280.280269337), "note": ""}])
    study.save_table(df, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    assert "[266.331, 280.280]" in md and "272.483" in md and "266.331038451" not in md
    assert "266.331038451" in (tmp_path / "t.csv").read_text()


def test_fd_bootstrap_interval_covers_the_estimators_mean():
    """The bias-shifted bootstrap interval must cover E[FD_hat] at the stated rate; the raw one does not.

    Replicates draw fresh "generated" feature sets of n = 60 from a fixed Gaussian; FD_hat is
    biased upward at small n and resampling inflates it once more. A 95 % interval of the
    estimate's sampling distribution must contain the mean of FD_hat over replicates in most
    replicates (>= 80 % of 40 here). The unshifted percentile interval is off-centre by the
    bootstrap bias and fails that rate (checked below), so a wrong implementation fails.
    """
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    d, n, reps = 16, 60, 40
    ref = torch.randn(2000, d, generator=g, dtype=torch.float64)
    draws = [torch.randn(n, d, generator=g, dtype=torch.float64) + 0.2 for _ in range(reps)]
    values = [study.frechet_distance_of(x, ref) for x in draws]
    target = float(np.mean(values))
    shifted, raw = 0, 0
    for i, x in enumerate(draws):
        value, (lo, hi) = study.frechet_bootstrap(x, ref, n_boot=100, seed=i)
        shifted += lo <= target <= hi
        bias = hi - value  # raw interval = shifted interval + bias; rebuild it from the same draws
        rng = np.random.default_rng(i)
        boots = np.array([study.frechet_distance_of(x[rng.integers(0, n, n)], ref) for _ in range(100)])
        rlo, rhi = np.percentile(boots, [2.5, 97.5])
        raw += rlo <= target <= rhi
    assert shifted / reps >= 0.8, f"bias-shifted interval covered E[FD_hat] in {shifted}/{reps} replicates"
    assert raw / reps < 0.6, f"the raw interval should miss (it covered {raw}/{reps}); the test lost its power"


def test_notebook_03_follows_its_profile_parameter(tmp_path):
    """Notebook 03 used to hard-code ["toy", "toy-gv"] whatever `profile` said; now it compares the profile's own settings."""
    from pathlib import Path

    import papermill as pm

    assert study.comparison_profiles("toy") == ["toy", "toy-gv"] and study.comparison_profiles("toy-gv") == ["toy-gv"]
    nbdir = Path(__file__).resolve().parents[1] / "notebooks"
    pm.execute_notebook(str(nbdir / "03_prior_comparison.ipynb"), str(tmp_path / "03.ipynb"), cwd=str(nbdir),
                        parameters={"profile": "toy-gv", "smoke": True, "out_dir": str(tmp_path)},
                        kernel_name="python3", progress_bar=False)
    m = json.loads((tmp_path / "metrics" / "prior_comparison.json").read_text())
    assert set(m["tables"]) == {"toy-gv"} and m["settings"]["profile"] == "toy-gv"
    assert m["metric"] == "FD-toy" and all(r["metric"] == "FD-toy" for r in m["tables"]["toy-gv"])


def test_reference_statistics_are_cached_per_report_and_invalidated_by_their_key(tmp_path, monkeypatch):
    from scp_core import study
    from scp_core.study import context

    s = study.settings("toy", smoke=True, out_dir=str(tmp_path), n_ref=24)
    study.CONTEXT.clear()
    first = study.build_priors(s)
    assert (tmp_path / "priors" / "reference_statistics.safetensors").is_file()
    study.CONTEXT.clear()  # a new kernel: the statistics come from the file, not from encoding again
    original = context.reference_accumulator
    monkeypatch.setattr(context, "reference_accumulator", lambda *a, **k: pytest.fail("re-encoded"))
    again = study.build_priors(s)
    torch.testing.assert_close(again["joint"].mean, first["joint"].mean)
    assert again["joint"].num_images == first["joint"].num_images == 24
    study.CONTEXT.clear()  # another reference set size does not reuse the file
    calls = []
    monkeypatch.setattr(context, "reference_accumulator", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert study.build_priors(study.settings("toy", smoke=True, out_dir=str(tmp_path), n_ref=16))["joint"].num_images == 16
    assert calls == [1]
    study.CONTEXT.clear()
