"""The GPU benchmarks' --quick modes (CPU, toy shapes): they run, compare like with like, and say what they did
not measure."""
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    """The module ``bench/<name>.py``, imported with ``bench/`` on the path for the import only."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_finetune
        import gpu_sampling
        yield gpu_sampling, gpu_finetune
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_sampling_quick(bench_modules, tmp_path):
    gpu_sampling, _ = bench_modules
    gpu_sampling.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_sampling.json").read_text())
    assert data["device"] == "cpu" and data["repeats"] >= 5 and data["batches"] == [1, 2]
    assert [(c["dataset"], c["batch"]) for c in data["configs"]] == [
        ("cityscapes (toy shapes)", 1), ("cityscapes (toy shapes)", 2),
        ("ade20k (toy shapes)", 1), ("ade20k (toy shapes)", 2)]
    for c in data["configs"]:
        assert set(c["methods"]) == {"ours, normal mu=1", "ours, joint mu=0.8", "diffusers ControlNet"}
        assert all(len(m["times"]) == data["repeats"] and min(m["times"]) > 0 for m in c["methods"].values())
        # the same start latents give the same images (ours is rounded to uint8: half a grey level)
        assert c["max_abs_image_diff_ours_mu1_vs_diffusers"] <= 1 / 255
    ratios = [h["ours mu=1 / diffusers"] for h in data["headline"]]
    assert len(ratios) == 4 and all(np.isfinite(ratios))
    md = (tmp_path / "gpu_sampling.md").read_text()
    assert "Not measured: this run had no GPU" in md and "not measured (CPU)" in md


def test_gpu_finetune_quick(bench_modules, tmp_path):
    _, gpu_finetune = bench_modules
    gpu_finetune.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_finetune.json").read_text())
    assert [r["gradient_checkpointing"] for r in data["results"]] == [False, True]
    for r in data["results"]:
        assert len(r["step_s"]) == data["steps"] == 5 and min(r["step_s"]) > 0 and np.isfinite(r["final_loss"])
        assert r["peak_gib"] is None  # CPU: not measured, and said so
    assert "Not measured: this run had no GPU" in (tmp_path / "gpu_finetune.md").read_text()


def test_sampling_cost_quick_times_the_embedding_cache_and_the_draws(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import sampling_cost
        sampling_cost.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    finally:
        sys.path.remove(str(BENCH))
    data = json.loads((tmp_path / "sampling_cost.json").read_text())
    rows = {(c["prior"], c["mu"]): c for c in data["configs"]}
    assert set(rows) == {("normal", 1.0), ("joint", 0.5), ("joint", 0.8), ("joint", 0.9),
                         ("normal, control embedded at every step", 1.0)}
    assert all(min(c["times_s"]) > 0 for c in rows.values())
    assert set(data["global_prior_draw_share_of_call"]) == {"joint-global", "joint-mixture", "signal-leak"}
    md = (tmp_path / "sampling_cost.md").read_text()
    assert "control embedded at every step" in md and "the sampler's own mu = 1 run" in md


def test_study_profile_splits_each_notebook_by_stage_from_the_batch_records(tmp_path):
    """bench/study_profile.py reads runs.json and the metrics' timing_s: stages, the rest, kernel start."""
    study_profile = _bench("study_profile")
    from scp_core.timing import STAGES

    reports = tmp_path / "toy"
    (reports / "metrics").mkdir(parents=True)
    (reports / "runs.json").write_text(json.dumps({"batch_wall_s": 130.0, "finished": "now", "commit": "abc",
                                                   "notebooks": {
        "03_prior_comparison": {"status": "ok", "wall_s": 100.0, "commit": "abc"},
        "05_diversity": {"status": "ok", "wall_s": 30.0, "commit": "old"}}}))
    timing = {k: 0.0 for k in STAGES} | {"sampling": 50.0, "inception": 20.0, "resampling": 10.0}
    (reports / "metrics" / "prior_comparison.json").write_text(json.dumps({"wall_s": 90.0, "timing_s": timing}))
    (reports / "metrics" / "05_diversity.json").write_text(json.dumps({"wall_s": 25.0}))  # from before the tally
    assert study_profile.main(["--reports", str(reports), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "study_profile.json").read_text())
    row = {r["notebook"]: r for r in data["rows"]}
    assert row["03_prior_comparison"]["rest"] == 10.0 and row["03_prior_comparison"]["start + end"] == 10.0
    assert "rest" not in row["05_diversity"] and data["total"]["sampling"] == 50.0
    md = (tmp_path / "out" / "study_profile.md").read_text()
    assert "| 03_prior_comparison | 100 | 90 | 50 |" in md and "56 %" in md  # 50 of 90 kernel seconds
    assert "Not profiled" in md and "05_diversity (30.0 s, commit old)" in md


def test_study_time_reads_a_cold_batch_times_the_warm_one_and_compares_their_tables(tmp_path, monkeypatch):
    """bench/study_time.py --cold-from: the rendered batch's record is the cold row, the warm batch runs into a copy
    of its folder; goals, ratios and any table that changed are in the report."""
    study_time = _bench("study_time")
    src = tmp_path / "toy"
    (src / "tables").mkdir(parents=True)
    (src / "cache").mkdir()
    (src / "tables" / "t.csv").write_text("a\n1\n")
    (src / "runs.json").write_text(json.dumps({"batch_wall_s": 3000.0, "commit": "abc", "finished": "then",
                                               "notebooks": {"03_prior_comparison": {"wall_s": 2000.0}}}))
    calls = []

    def fake_batch(profile, quick, jobs, out):  # the warm run: rewrites one table, as a changed result would
        calls.append((profile, quick, jobs, out))
        assert (out / "cache").is_dir(), "the warm batch runs in the copy, with the cold batch's cache"
        (out / "tables" / "t.csv").write_text("a\n2\n")
        return {"wall_s": 240.0, "timed_here": True, "batch_wall_s": 239.0, "commit": "def", "finished": "now",
                "notebooks": {"03_prior_comparison": 200.0}}
    monkeypatch.setattr(study_time, "batch", fake_batch)
    assert study_time.main(["--cold-from", str(src), "--out", str(tmp_path / "out")]) == 0
    assert calls and calls[0][:3] == ("toy", False, 2)
    assert (src / "tables" / "t.csv").read_text() == "a\n1\n", "the rendered batch is never written to"
    data = json.loads((tmp_path / "out" / "study_time_toy.json").read_text())
    rows = {r["batch"]: r for r in data["rows"]}
    assert rows["cold cache"]["measured / goal"] == 2.0 and rows["cold cache"]["met"] == "no"
    assert rows["warm cache"]["measured / goal"] == 0.8 and rows["warm cache"]["met"] == "yes"
    assert data["tables_differ"] == ["t.csv"]
    md = (tmp_path / "out" / "study_time_toy.md").read_text()
    assert "the batch's runs.json (toy)" in md and "| 03_prior_comparison | 2000 | 200 | 0.1 |" in md


def test_study_time_holds_a_batch_against_the_previous_one_by_the_slow_tests_rule(tmp_path):
    """--previous: numeric columns within 1e-3 (relative) + 1e-3 pass, a larger change or a missing table does not,
    timing columns and tables 00 / 07 are left out, and a renamed table is found under its new name."""
    study_time = _bench("study_time")
    prev, new = tmp_path / "prev", tmp_path / "new"
    for d in (prev, new):
        (d / "tables").mkdir(parents=True)
    (prev / "tables" / "03_a.csv").write_text("prior,fd,sample_s\njoint,0.1000,5\n")
    (new / "tables" / "03_a.csv").write_text("prior,fd,sample_s\njoint,0.1009,99\n")  # inside; timing ignored
    (prev / "tables" / "04_b.csv").write_text("fd\n0.1\n")
    (new / "tables" / "04_b.csv").write_text("fd\n0.2\n")  # outside
    (prev / "tables" / "00_t.csv").write_text("seconds\n1\n")  # timings only: not compared
    (prev / "tables" / "05_gone.csv").write_text("x\n1\n")
    (prev / "tables" / "03_training_seeds.csv").write_text("fd\n0.3\n")
    (new / "tables" / "11_training_seeds.csv").write_text("fd\n0.3\n")
    rows = {r["previous table"]: r for r in study_time.against_previous(prev, new)}
    assert set(rows) == {"03_a.csv", "04_b.csv", "05_gone.csv", "03_training_seeds.csv"}
    assert rows["03_a.csv"]["within tolerance"] == "yes"
    assert rows["04_b.csv"]["within tolerance"].startswith("NO")
    assert rows["05_gone.csv"]["within tolerance"] == "missing"
    assert rows["03_training_seeds.csv"]["this batch"] == "11_training_seeds.csv"
    assert rows["03_training_seeds.csv"]["within tolerance"] == "yes"


def test_study_time_reads_a_previous_batchs_tables_from_git(tmp_path):
    """The toy tables committed at HEAD, every one, byte for byte."""
    import subprocess

    study_time = _bench("study_time")
    root = Path(study_time.ROOT)
    got = study_time.previous_tables("HEAD", "toy", tmp_path) / "tables"
    listed = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", "reports/toy/tables/"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.split()
    committed = sorted(Path(n).name for n in listed if n.endswith(".csv"))
    assert committed and sorted(p.name for p in got.glob("*.csv")) == committed
    for name in committed:
        blob = subprocess.run(["git", "show", f"HEAD:reports/toy/tables/{name}"], cwd=root, check=True,
                              capture_output=True).stdout
        assert (got / name).read_bytes() == blob


def test_feature_cost_quick_times_both_layouts_on_the_same_images(tmp_path):
    _bench("feature_cost").main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "feature_cost.json").read_text())
    rows = data["rows"]
    assert [(r["image size"], r["layout"]) for r in rows] == [
        (size, layout) for size in ("toy (64 x 128)", "camvid (96 x 128)")
        for layout in ("contiguous (pytorch-fid)", "channels-last (ours)")]
    assert all(r["s / image"] > 0 and np.isfinite(r["speed-up"]) for r in rows)
    assert all(rows[i]["speed-up"] == 1.0 for i in (0, 2))  # the contiguous row is its own baseline
    # the two layouts compute the same features (float rounding)
    assert all(0 <= rows[i]["max feature difference / max feature"] < 1e-5 for i in (1, 3))
    assert "channels-last" in (tmp_path / "feature_cost.md").read_text()
