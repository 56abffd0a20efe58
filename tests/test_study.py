"""scp_core.study: settings, profiles, the comparison table; the notebooks themselves run under nbval."""
import ast
import json
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch

from scp_core import cli, distributed, study
from scp_core.data import CAMVID_DUSK_HOLDOUT
from scp_core.data.profiles import TOY_PIPELINE_DIR
from scp_core.io import REPO_ROOT
from scp_core.metrics.resampling import draw_indices, frechet_draws, interval
from scp_core.priors import load_prior
from scp_core.reproduce import NOTEBOOKS
from scp_core.study import context
from scp_core.study.output import FIGURE_DPI
from scp_core.study.settings import FIELDS, parameters
from scp_core.study.settings import NOTEBOOKS as TABLE
from scp_core.weights import weights_dir

CAMVID = REPO_ROOT.parent / "shared" / "data" / "camvid"


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


def test_comparison_table_marks_our_rows():
    rows = [{"prior": k, "fd": v, "n": 300, "metric": "FD-toy"} for k, v in (("normal", 2.0), ("joint", 1.5))]
    t = study.comparison_table({"tables": {"toy": rows}})
    paper = t[t.source == "paper"]
    ours = t[t.source.str.startswith("this project")]
    assert list(paper.method) == ["ControlNet", "SCP-Diff"] and paper.cityscapes.tolist() == [20.7, 10.5]
    assert ours["ours"].tolist() == [2.0, 1.5] and all("n=300" in s for s in ours.source)
    assert ours.ours_metric.tolist() == ["FD-toy", "FD-toy"] and paper.ours_metric.tolist() == ["FID", "FID"]
    assert pd.isna(ours.cityscapes).all(), "our FD-toy never lands in the paper's FID columns"


def test_comparison_table_carries_our_intervals_and_the_paired_difference():
    rows = [{"prior": k, "fd": v, "fd_ci": [v - 0.1, v + 0.1], "n": 300, "metric": "FD-toy"}
            for k, v in (("normal", 2.0), ("joint", 1.5))]
    diff = {"a": "joint", "b": "normal", "column": "fd", "diff": -0.5, "diff_ci": [-0.7, -0.3], "text": "better"}
    other = dict(diff, column="miou", diff=9.0)  # another column's comparison is not Table 2's
    t = study.comparison_table({"tables": {"toy": rows}, "comparisons": {"toy": [other, diff]}}).set_index("method")
    ours = t[t.source.str.startswith("this project")]
    assert ours.loc["SCP-Diff", "ours_ci"] == [1.4, 1.6] and ours.loc["ControlNet", "ours_ci"] == [1.9, 2.1]
    assert ours.loc["SCP-Diff", "diff"] == -0.5 and ours.loc["SCP-Diff", "diff_ci"] == [-0.7, -0.3]
    assert pd.isna(ours.loc["ControlNet", "diff"]) and ours.loc["SCP-Diff", "verdict"] == "better"


def test_saved_tables_print_intervals_for_reading_and_keep_full_precision_in_csv(tmp_path):
    df = pd.DataFrame([{"prior": "joint", "fd": 272.48312, "fd_ci": (266.331038451, 280.280269337), "note": ""}])
    study.save_table(df, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    assert "[266.331, 280.280]" in md and "272.483" in md and "266.331038451" not in md
    assert "266.331038451" in (tmp_path / "t.csv").read_text()


def test_fd_bootstrap_interval_covers_the_estimators_mean():
    """The bias-shifted interval (metrics.resampling, the reference resampled too) must cover E[FD_hat] at the
    stated rate; the raw percentile interval does not.

    Replicates draw fresh "generated" feature sets of n = 60 from a fixed Gaussian; FD_hat is
    biased upward at small n and resampling inflates it once more. A 95 % interval of the
    estimate's sampling distribution must contain the mean of FD_hat over replicates in most
    replicates (>= 80 % of 40 here). The unshifted percentile interval is off-centre by the
    bootstrap bias and fails that rate (checked below), so a wrong implementation fails.
    """
    g = torch.Generator().manual_seed(0)
    d, n, reps = 16, 60, 40
    ref = torch.randn(2000, d, generator=g, dtype=torch.float64)
    draws = [torch.randn(n, d, generator=g, dtype=torch.float64) + 0.2 for _ in range(reps)]
    values = [study.frechet_distance_of(x, ref) for x in draws]
    target = float(np.mean(values))
    shifted, raw = 0, 0
    for i, x in enumerate(draws):
        d = frechet_draws({"x": x}, ref, draw_indices(n, 100, seed=i), ref_maps=0, seed=i)["x"]
        lo, hi = interval(d)
        shifted += lo <= target <= hi
        # the raw interval is the shifted one plus the bootstrap bias: rebuild it from the same draws
        rlo, rhi = np.percentile(d.draws, [2.5, 97.5])
        raw += rlo <= target <= rhi
    assert shifted / reps >= 0.8, f"bias-shifted interval covered E[FD_hat] in {shifted}/{reps} replicates"
    assert raw / reps < 0.6, f"the raw interval should miss (it covered {raw}/{reps}); the test lost its power"


@pytest.mark.slow  # long; its kin runs by default (see the README's testing note)
def test_notebook_03_follows_its_profile_parameter(tmp_path):
    """Notebook 03 compares the settings its `profile` parameter names (toy-gv: toy-gv alone)."""
    assert study.comparison_profiles("toy") == ["toy", "toy-gv"] and study.comparison_profiles("toy-gv") == ["toy-gv"]
    nbdir = Path(__file__).resolve().parents[1] / "notebooks"
    pm.execute_notebook(str(nbdir / "03_prior_comparison.ipynb"), str(tmp_path / "03.ipynb"), cwd=str(nbdir),
                        parameters={"profile": "toy-gv", "smoke": True, "out_dir": str(tmp_path), "n_ref": 16,
                                    "n_eval": 8, "steps": 2},
                        kernel_name="python3", progress_bar=False)
    m = json.loads((tmp_path / "metrics" / "prior_comparison.json").read_text())
    assert set(m["tables"]) == {"toy-gv"} and m["settings"]["profile"] == "toy-gv"
    assert m["metric"] == "FD-toy" and all(r["metric"] == "FD-toy" for r in m["tables"]["toy-gv"])


def test_reference_statistics_are_cached_per_report_and_invalidated_by_their_key(tmp_path, monkeypatch):
    s = study.settings("toy", smoke=True, out_dir=str(tmp_path), n_ref=24)
    study.CONTEXT.clear()
    first = study.build_priors(s)
    assert (s.priors_dir / "reference_statistics.safetensors").is_file()
    study.CONTEXT.clear()  # a new kernel: the statistics come from the file, not from encoding again
    original = context.reference_accumulator
    monkeypatch.setattr(context, "reference_accumulator", lambda *a, **k: pytest.fail("re-encoded"))
    again = study.build_priors(s)
    torch.testing.assert_close(again["joint"].mean, first["joint"].mean)
    assert again["joint"].num_images == first["joint"].num_images == 24
    study.CONTEXT.clear()  # another reference set size does not reuse the file
    calls = []
    monkeypatch.setattr(context, "reference_accumulator", lambda *a, **k: calls.append(1) or original(*a, **k))
    smaller = study.settings("toy", smoke=True, out_dir=str(tmp_path), n_ref=16)
    assert study.build_priors(smaller)["joint"].num_images == 16
    assert calls == [1]
    study.CONTEXT.clear()


# ----------------------------------------------------------------------------- the settings table
# The counts each notebook runs with, pinned: the committed reports (reports/toy, reports/camvid) rest on
# them. toy and toy-gv share them; camvid's are its batch's. "s" is the Settings the notebook evaluates
# with (08 and 09: each compared setting's), the rest are the notebook's own counts.
TOY_TODAY = {
    "00_quickstart": {"s": {"n_ref": 500, "n_eval": 1}},
    "01_mismatch_study": {"s": {"n_ref": 2000, "n_eval": 200}, "mus": [0.2, 0.4, 0.6, 0.8, 1.0]},
    "02_noise_priors": {"s": {"n_ref": 2000, "n_eval": 500}, "n_small": 64},
    "03_prior_comparison": {"s": {"n_ref": 2000, "n_eval": 300}},
    "04_mu_sweep": {"s": {"n_ref": 2000, "n_eval": 120}, "mus": [0.5, 0.7, 0.8, 0.9, 1.0],
                    "kinds": ["joint", "categorical", "spatial"]},
    "05_diversity": {"s": {"n_ref": 2000, "n_eval": 500}, "k": 8, "n_maps": 24},
    "06_comparison_table": {"s": {"n_ref": 2000, "n_eval": 500}},
    "07_training": {"s": {"n_ref": 2000, "n_eval": 500}, "steps_per_stage": 60, "n_train": 1000, "psnr_images": 256},
    "08_global_factors": {"s": {"n_ref": 2000, "n_eval": 300}, "k": 4, "n_maps": 8},
    "09_zero_snr": {"s": {"n_ref": 2000, "n_eval": 300}, "oracle_stds": [1, 2, 4, 8, 16, 32]},
    "10_prior_transfer": {"s": {"n_ref": 2000, "n_eval": 300}},
    "11_training_seeds": {"s": {"n_ref": 2000, "n_eval": 300}},
}
CAMVID_TODAY = {
    "00_quickstart": {"s": {"n_ref": 500, "n_eval": 1}},
    "01_mismatch_study": {"s": {"n_ref": 355, "n_eval": 101}, "mus": [0.2, 0.4, 0.6, 0.8, 1.0]},
    "02_noise_priors": {"s": {"n_ref": 2000, "n_eval": 101}, "n_small": 64},
    "03_prior_comparison": {"s": {"n_ref": 2000, "n_eval": 300}},
    "04_mu_sweep": {"s": {"n_ref": 2000, "n_eval": 50}, "mus": [0.6, 0.7, 0.8, 1.0], "kinds": ["joint", "categorical"]},
    "05_diversity": {"s": {"n_ref": 2000, "n_eval": 101}, "k": 4, "n_maps": 16},
    "06_comparison_table": {"s": {"n_ref": 355, "n_eval": 101}},
    "07_training": {"s": {"n_ref": 355, "n_eval": 101}, "steps_per_stage": 60, "n_train": 1000},
    "08_global_factors": {"s": {"n_ref": 2000, "n_eval": 113, "eval_splits": ("val", "holdout")}, "k": 4, "n_maps": 8},
}
SMOKE_TODAY = {"01_mismatch_study": {"mus": [0.8, 1.0]}, "04_mu_sweep": {"mus": [0.8, 1.0]},
               "05_diversity": {"k": 3, "n_maps": 2},
               "07_training": {"steps_per_stage": 3, "n_train": 64, "psnr_images": 16},
               "08_global_factors": {"k": 2, "n_maps": 4}}


def _today(profile: str, notebook: str, smoke: bool) -> tuple[dict, dict]:
    want = dict((CAMVID_TODAY if profile == "camvid" else TOY_TODAY)[notebook])
    s = {"steps": 20, "mu": 0.8, "seed": 0, "min_count": 5, "eval_splits": ("val",),
         "batch_size": 16 if profile == "camvid" else 50, **want.pop("s")}
    if smoke:
        s.update(n_ref=min(s["n_ref"], 64), n_eval=min(s["n_eval"], 16), steps=4, batch_size=16)
        want.update(SMOKE_TODAY.get(notebook, {}))
    return s, want


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("profile", ["toy", "toy-gv", "camvid"])
def test_every_notebook_resolves_todays_counts_from_the_table(profile, smoke, monkeypatch):
    """Each notebook's None parameters resolve to the counts it ran with before the table (reports re-derive)."""
    for var in ("SCP_PIPELINE", "SCP_DATA_ROOT", "SCP_SEGMENTER"):
        monkeypatch.delenv(var, raising=False)
    for notebook in (CAMVID_TODAY if profile == "camvid" else TOY_TODAY):
        want_s, want_counts = _today(profile, notebook, smoke)
        s = study.settings(profile, smoke=smoke, notebook=notebook, n_ref=None, n_eval=None, seed=None)
        assert {k: getattr(s, k) for k in want_s} == want_s, (profile, notebook)
        assert s.dataset_options == study.PROFILES[profile].dataset_options and s.smoke is smoke
        counts = parameters(notebook, profile, smoke, **{k: None for k in want_counts})
        assert {k: counts[k] for k in want_counts} == want_counts, (profile, notebook)
    if profile != "camvid":  # 09 (toy only) keeps the full DDIM steps for its schedule sections
        assert parameters("09_zero_snr", profile, smoke, steps=None)["steps"] == 20


def test_notebook_08_evaluates_camvid_on_val_and_the_held_out_dusk_frames():
    s = study.settings("camvid", smoke=False, notebook="08_global_factors")
    assert (s.n_eval, s.eval_splits, s.dataset_options["holdout"]) == (113, ("val", "holdout"), ("0001TP", 12))
    assert study.settings("camvid", smoke=False).eval_splits == ("val",)  # every other notebook: val only
    given = study.settings("camvid", smoke=False, notebook="08_global_factors", eval_splits="val", n_eval=7)
    assert (given.eval_splits, given.n_eval) == (("val",), 7), "a papermill override beats the table"
    assert study.settings("toy", smoke=False, eval_splits=["val", "train"]).eval_splits == ("val", "train")


def test_the_notebooks_parameter_cells_defer_to_the_table():
    """Every count a parameter cell names is in the table (or a Settings field) and defaults to None."""
    nbdir = Path(__file__).resolve().parents[1] / "notebooks"
    for name in NOTEBOOKS:
        nb = nbformat.read(nbdir / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        values = {t.targets[0].id: ast.literal_eval(t.value) for t in ast.parse(cell.source).body}
        assert values.pop("profile") == "toy" and "smoke" in values and "out_dir" in values, name
        values.pop("profiles", None)  # 03 and 08: which settings are compared, not a count
        values.pop("training_seeds", None)  # 12: which trained ControlNets, not a count
        assert set(values) <= FIELDS | set(TABLE[name]) | {"smoke", "out_dir"}, (name, set(values))
        assert all(v is None for v in values.values()), (name, values)
        assert "eval_splits" in values, f"{name}: the evaluation split is a parameter"


def test_the_table_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown setting"):
        study.settings("toy", smoke=False, n_evals=3)
    with pytest.raises(ValueError, match="has no parameter"):
        parameters("05_diversity", "toy", False, mus=[0.5])
    with pytest.raises(ValueError, match="unknown notebook"):
        study.settings("toy", smoke=False, notebook="10_nothing")
    with pytest.raises(ValueError, match="eval_splits is empty"):
        study.settings("toy", smoke=False, eval_splits=[])


# ----------------------------------------------------------------------------- scpdiff priors / sample
def _command(*argv):
    args = cli.build_parser().parse_args(list(argv))
    return cli.command_settings(args, args.cmd)


def test_priors_and_sample_keep_their_defaults_on_the_toy_profile():
    s, split = _command("priors", "--out", "x")
    assert (s.dataset, s.dataset_options, split, s.scale) == ("toy-city", {}, "train", "toy")
    assert Path(s.pipeline).resolve() == TOY_PIPELINE_DIR  # data.profiles' toy stack
    assert (s.n_ref, s.min_count, s.fallback, s.seed) == (2000, 5, "class", 0)
    s, split = _command("sample", "--out", "x")
    assert (s.dataset, split, s.n_eval, s.batch_size, s.steps, s.guidance, s.seed) == ("toy-city", "val", 100, 32, 20,
                                                                                        1.0, 0)
    s, split = _command("sample", "--out", "x", "--n", "5", "--split", "train", "--steps", "3", "--batch-size", "2")
    assert (split, s.n_eval, s.steps, s.batch_size) == ("train", 5, 3, 2)
    s, _ = _command("priors", "--out", "x", "--dataset", "toy-city-gv", "--n", "7", "--min-count", "2")
    assert (s.dataset, s.n_ref, s.min_count) == ("toy-city-gv", 7, 2) and Path(s.pipeline).resolve() == TOY_PIPELINE_DIR


def test_priors_and_sample_read_the_camvid_profile(monkeypatch, tmp_path):
    for var in ("SCP_PIPELINE", "SCP_DATA_ROOT", "SCP_SEGMENTER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO_ROOT)
    s, split = _command("priors", "--profile", "camvid", "--out", "x")
    study_s = study.settings("camvid", smoke=False)
    assert (s.dataset, s.dataset_options, s.n_ref, split) == ("camvid", study_s.dataset_options, 355, "train")
    assert s.dataset_options["holdout"] == CAMVID_DUSK_HOLDOUT and s.pipeline == study_s.pipeline
    s, split = _command("sample", "--profile", "camvid", "--out", "x", "--split", "holdout")
    assert (split, s.dataset_options["holdout"], s.batch_size, s.n_eval) == ("holdout", CAMVID_DUSK_HOLDOUT, 32, 100)
    monkeypatch.chdir(tmp_path)  # a pipeline folder from the table is found from anywhere
    s, _ = _command("priors", "--profile", "camvid", "--out", "x")
    assert (tmp_path / s.pipeline).resolve() == REPO_ROOT / "zoo" / "camvid" / "pipeline"
    s, _ = _command("priors", "--out", "x", "--dataset", "camvid")  # another dataset than the profile's
    assert s.dataset_options == {}


def test_scpdiff_priors_profile_camvid_builds_from_the_studys_reference_set(tmp_path, monkeypatch):
    """`scpdiff priors --profile camvid`: the study's 355 training frames (12 dusk frames held out) and,
    for the same n and seed, the study's prior files."""
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid absent: {CAMVID}")
    if not (weights_dir() / "taef2_encoder.safetensors").is_file():
        pytest.skip(f"TAEF2 weights absent in {weights_dir()}")
    if not (REPO_ROOT / "zoo" / "camvid" / "pipeline" / "scp_pipeline.json").is_file():
        pytest.skip("zoo/camvid not trained yet (scpdiff train --profile camvid)")
    for var in ("SCP_PIPELINE", "SCP_DATA_ROOT", "SCP_SEGMENTER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO_ROOT)
    used = []
    original = distributed.dataset_at_size
    monkeypatch.setattr(distributed, "dataset_at_size", lambda *a, **k: used.append(original(*a, **k)) or used[-1])
    assert cli.main(["priors", "--profile", "camvid", "--root", str(CAMVID), "--n", "4", "--device", "cpu",
                     "--out", str(tmp_path / "cli")]) == 0

    s = study.settings("camvid", smoke=False, n_ref=4, data_root=str(CAMVID), out_dir=str(tmp_path / "study"))
    reference = study.load_data(s, "train")
    assert len(used[0]) == len(reference) == 355
    assert [f[0] for f in used[0].files] == [f[0] for f in reference.files]
    study.CONTEXT.clear()
    ours = study.build_priors(s)
    study.CONTEXT.clear()
    for kind in ("spatial", "categorical", "joint"):
        cli_prior = load_prior(tmp_path / "cli" / f"{kind}.safetensors")
        assert cli_prior.provenance == ours[kind].provenance and cli_prior.provenance["n"] == 4
        torch.testing.assert_close(cli_prior.mean, ours[kind].mean, rtol=0, atol=0)


def test_nearest_training_finds_a_copied_training_image_at_distance_zero():
    """The memorisation check (issue 25): a training image passed as generated has distance 0 to itself; the real
    validation images sit further away."""
    s = study.settings("toy", smoke=True, n_eval=6)
    train = study.load_data(s, "train")
    copies, _ = study.images_labels(train, np.array([3, 7]))
    real_val, _ = study.eval_set(s)
    r = study.nearest_training(s, torch.cat([copies, real_val]), n_train=40)
    assert r["n_train"] == 40 and list(r["index"][:2]) == [3, 7]
    assert np.allclose(r["distance"][:2], 0, atol=1e-6) and (r["distance"][2:] > 1e-3).all()


def test_image_grid_draws_empty_cells_a_colour_legend_and_a_caption(tmp_path):
    from PIL import Image

    rows = {"normal": np.full((2, 8, 16, 3), 200, np.uint8), "joint": [None, np.zeros((8, 16, 3), np.uint8)]}
    fig = study.image_grid(rows, titles=["t = 751", "t = 1"], caption="seed 0, 20 steps", empty="skipped",
                           legend={"road": (128, 64, 128), "sky": (70, 130, 180)}, path=tmp_path / "grid.png")
    cells = [ax.images[0].get_array() for ax in fig.axes]
    assert len(cells) == 4 and all(c.shape[:2] == (8, 16) for c in cells), "an empty cell keeps the images' shape"
    assert (np.asarray(cells[2]) == 235).all() and [t.get_text() for t in fig.axes[2].texts] == ["skipped"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "sky"]
    assert "seed 0, 20 steps" in [t.get_text() for t in fig.texts]
    assert fig.axes[0].get_ylabel() == "normal" and fig.axes[0].yaxis.label.get_rotation() == 0
    with Image.open(tmp_path / "grid.png") as im:  # the saved picture holds the legend and the caption below the grid
        assert im.size[1] > fig.get_size_inches()[1] * FIGURE_DPI
    plt.close(fig)


def test_label_legend_names_the_classes_present_and_leaves_out_the_ignore_id():
    labels = torch.tensor([[0, 2], [255, 2]])
    legend = study.label_legend(labels, [(1, 2, 3), (4, 5, 6), (7, 8, 9)], ["road", "sky", "car"], ignore_index=255)
    assert legend == {"road": (1, 2, 3), "car": (7, 8, 9)}


def _assigned_names(source: str) -> list[str]:
    """Names a cell binds in its own scope (assignments, for-loop targets; a comprehension's are its own), magics
    left out."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets += node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)):
            targets.append(node.target)
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def test_no_notebook_rebinds_a_count_after_resolving_it():
    """A parameter is bound at most once after the parameters cell (where the table resolves it): notebook 08's
    figure cell once reused ``n_maps`` for the scored maps, and its diversity study then ran on every map."""
    nbdir = Path(__file__).resolve().parents[1] / "notebooks"
    for name in NOTEBOOKS:
        nb = nbformat.read(nbdir / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        first = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
        params = set(_assigned_names(code[first].source))
        later = [n for c in code[first + 1:] for n in _assigned_names(c.source) if n in params]
        rebound = {n for n in later if later.count(n) > 1}
        assert not rebound, f"{name} binds {sorted(rebound)} more than once after its parameters cell"
