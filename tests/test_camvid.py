"""The camvid profile: its hold-out split, its settings, and `scpdiff train --profile camvid` at seconds size.

Synthetic CamVid folders are built in a temporary directory; the checks on the real frames
and the training run need ``../shared/data/camvid`` and ``../shared/weights`` and skip with
the reason where they are absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scp_core.data import CAMVID_DUSK_HOLDOUT, CamVid, get_dataset
from scp_core.study import PROFILES, load_data, settings
from scp_core.weights import weights_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAMVID = SHARED / "data" / "camvid"


def _frame(root: Path, split: str, stem: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    for folder, arr in ((split, rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)),
                        (f"{split}annot", rng.integers(0, 12, (36, 48), dtype=np.uint8))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / folder / f"{stem}.png")


def _synthetic_camvid(root: Path) -> Path:
    # frame numbers of unequal length: numeric order differs from the names' order
    for i, n in enumerate([990, 1020, 1050, 960, 12000]):
        _frame(root, "train", f"0001TP_{n}", i)
    _frame(root, "train", "0006R0_f99999", 7)
    _frame(root, "val", "0016E5_00390", 8)
    return root


def test_holdout_is_the_last_frames_by_number(tmp_path):
    root = _synthetic_camvid(tmp_path / "camvid")
    train = CamVid(root, "train", size=(24, 32), holdout=("0001TP", 2))
    held = CamVid(root, "holdout", size=(24, 32), holdout=("0001TP", 2))
    assert [n for n, _, _ in held.files] == ["0001TP_1050", "0001TP_12000"]
    assert sorted(n for n, _, _ in train.files) == ["0001TP_1020", "0001TP_960", "0001TP_990", "0006R0_f99999"]
    assert len(CamVid(root, "train", size=(24, 32))) == 6  # no hold-out without the option
    assert len(CamVid(root, "val", size=(24, 32), holdout=("0001TP", 2))) == 1
    assert held[0]["image"].shape == (3, 24, 32) and held[0]["labels"].max() <= 11
    with pytest.raises(ValueError, match="needs holdout"):
        CamVid(root, "holdout")
    with pytest.raises(FileNotFoundError, match="only 5 frames of sequence 0001TP"):
        CamVid(root, "holdout", holdout=("0001TP", 6))


def test_camvid_without_annotations_names_the_folder(tmp_path):
    root = _synthetic_camvid(tmp_path / "camvid")
    for p in (root / "trainannot").iterdir():
        p.unlink()
    (root / "trainannot").rmdir()
    with pytest.raises(FileNotFoundError) as e:
        CamVid(root, "train", holdout=CAMVID_DUSK_HOLDOUT)
    assert str(root / "trainannot") in str(e.value) and "data/README.md" in str(e.value)


def test_profile_carries_the_split_and_size(tmp_path):
    s = PROFILES["camvid"]
    assert s.dataset == "camvid" and s.dataset_options["holdout"] == CAMVID_DUSK_HOLDOUT
    h, w = s.dataset_options["size"]
    assert (h, w) == (96, 128) and h * 4 == w * 3 and h % 32 == 0 and w % 32 == 0  # 8x TAEF2, 4x UNet
    root = _synthetic_camvid(tmp_path / "camvid")
    st = settings("camvid", smoke=False, data_root=str(root),
                  dataset_options={"size": (24, 32), "holdout": ("0001TP", 2)})
    ds = load_data(st, "train")
    assert len(ds) == 4 and ds.size == (24, 32)


def test_real_camvid_split():
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid absent: {CAMVID}")
    opts = PROFILES["camvid"].dataset_options
    train = get_dataset("camvid", root=CAMVID, split="train", **opts)
    held = get_dataset("camvid", root=CAMVID, split="holdout", **opts)
    names = [n for n, _, _ in held.files]
    assert len(train) == 355 and len(names) == 12 and names[0] == "0001TP_008190" and names[-1] == "0001TP_008520"
    assert not set(names) & {n for n, _, _ in train.files}
    assert train[0]["image"].shape == (3, 96, 128)


@pytest.mark.slow  # 25 s; its kin in the default run: the GPU recipe's test below trains the same stages from a pack
def test_train_stack_small_writes_only_under_its_folders(tmp_path, monkeypatch):
    """`scpdiff train --profile camvid` at seconds size: outputs, resume, and no stray files."""
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid absent: {CAMVID}")
    if not (weights_dir() / "taef2_encoder.safetensors").is_file():
        pytest.skip(f"TAEF2 weights absent in {weights_dir()}")
    from scp_core.data import REPO_ROOT
    from scp_core.pipeline import SCPDiffPipeline
    from scp_core.training.camvid import rewrite_report, train_stack
    from scp_core.training.recipes import recipe_for

    zoo = REPO_ROOT / "zoo" / "camvid"
    before = sorted((str(p), p.stat().st_mtime) for p in zoo.rglob("*")) if zoo.exists() else []
    out, work = tmp_path / "zoo", tmp_path / "work"
    facts = train_stack("camvid", out=out, work=work, data_root=CAMVID, recipe=recipe_for("camvid", small=True),
                        limit=3)
    assert facts["n_train_images"] == 3 and facts["n_train_latents"] == 6 and facts["unet"]["steps"] == 4
    assert facts["controlnet"]["steps"] == 4 and facts["segmenter"]["steps"] == 3 and facts["scale_factor"] > 0
    assert (out / "REPORT.md").is_file() and (out / "report" / "samples.png").is_file()
    assert (out / "segmenter" / "model.safetensors").is_file()
    pipe = SCPDiffPipeline.from_pretrained(out / "pipeline", device="cpu", dtype=torch.float32)
    assert pipe.latent_shape == (32, 12, 16) and pipe.prior_num_classes == 12
    # the recipe's noise schedule reaches the sampler (zero terminal SNR: v-prediction, alpha_bar(999) = 0)
    assert facts["noise_schedule"] == "zero-snr" and pipe.scheduler.config.prediction_type == "v_prediction"
    assert float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6 and "zero terminal SNR" in (out / "REPORT.md").read_text()
    assert sorted((str(p), p.stat().st_mtime) for p in zoo.rglob("*")) == before if zoo.exists() else not before
    # the report alone, written again from the run (with the run's notes)
    (work / "NOTES.md").write_text("a note on the sittings")
    text = rewrite_report("camvid", out=out, work=work, data_root=CAMVID, recipe=recipe_for("camvid", small=True))
    assert "a note on the sittings" in text.read_text() and text == out / "REPORT.md"
    # resume: finished stages are loaded, not retrained
    again = train_stack("camvid", out=out, work=work, data_root=CAMVID, resume="latest",
                        recipe=recipe_for("camvid", small=True), limit=3, report=False)
    assert again["unet"] == facts["unet"] and again["controlnet"] == facts["controlnet"]
    # another training seed of the ControlNet stage: the stack's base UNet shared, only the two modules written
    from scp_core.pipeline import load_pipeline
    from scp_core.training.camvid import train_controlnet_seed

    seed_out = tmp_path / "seed1"
    seeded = train_controlnet_seed("camvid", 1, out=seed_out, work=work, data_root=CAMVID,
                                   recipe=recipe_for("camvid", small=True), limit=3)
    assert seeded["training_seed"] == 1 and seeded["steps"] == 4 and seeded["config"]["seed"] == 1
    assert "shared with the stack" in seeded["base_unet"] and seeded["base_unet_wall_s"] == 0.0
    assert sorted(p.name for p in seed_out.iterdir()) == ["REPORT.md", "controlnet", "loss_controlnet.csv",
                                                          "loss_controlnet.png", "modules.json",
                                                          "training_facts.json", "unet"]
    assert "training seed 1" in (seed_out / "REPORT.md").read_text()
    two = load_pipeline(out / "pipeline", trained=seed_out)
    one = SCPDiffPipeline.from_pretrained(out / "pipeline", device="cpu", dtype=torch.float32)
    w1, w0 = (dict(m.controlnet.named_parameters()) for m in (two, one))
    assert any(not torch.equal(w1[k], w0[k]) for k in w0)  # another ControlNet ...
    assert two.scale_factor == one.scale_factor  # ... on the stack's autoencoder and scale factor
    # a run folder without the base UNet trains it first, by the recipe (its seed 0)
    fresh = train_controlnet_seed("camvid", 2, out=tmp_path / "seed2", work=tmp_path / "w-fresh", data_root=CAMVID,
                                  recipe=recipe_for("camvid", small=True), limit=3)
    assert "trained in this run" in fresh["base_unet"] and (tmp_path / "w-fresh" / "unet" / "final").is_dir()
    with pytest.raises(ValueError, match="seed 0 is the stack"):
        train_controlnet_seed("camvid", 0, work=work, data_root=CAMVID, recipe=recipe_for("camvid", small=True))
    # more steps in the recipe continue the base UNet from its newest checkpoint, then retrain ControlNet
    from dataclasses import replace

    longer = recipe_for("camvid", small=True)
    longer = replace(longer, unet_cfg=replace(longer.unet_cfg, steps=6))
    more = train_stack("camvid", out=out, work=work, data_root=CAMVID, resume="latest", recipe=longer, limit=3,
                       report=False)
    assert more["unet"]["steps"] == 6 and more["controlnet"]["steps"] == 4
    assert (work / "unet" / "checkpoint-4").is_dir()  # it went on from there
    # stages trained under one noise schedule are not resumed under another
    with pytest.raises(ValueError, match="noise schedule 'zero-snr'.*asks for 'sd'"):
        train_stack("camvid", out=out, work=work, data_root=CAMVID, resume="latest",
                    recipe=replace(longer, noise_schedule="sd"), limit=3, report=False)
    # a missing weight file stops before anything is written
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="taef2_encoder.safetensors"):
        train_stack("camvid", out=tmp_path / "o2", work=tmp_path / "w2", data_root=CAMVID,
                    recipe=recipe_for("camvid", small=True), limit=3)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "w2").exists()


def test_train_stack_missing_dataset_root(tmp_path):
    if not (weights_dir() / "taef2_encoder.safetensors").is_file():
        pytest.skip(f"TAEF2 weights absent in {weights_dir()}")
    from scp_core.training.camvid import train_stack
    from scp_core.training.recipes import recipe_for

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        train_stack("camvid", out=tmp_path / "o", work=tmp_path / "w", data_root=tmp_path / "nowhere",
                    recipe=recipe_for("camvid", small=True), limit=2)
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_study_loads_a_toy_recipe_segmenter_folder(tmp_path):
    from scp_core import study
    from scp_core.metrics.toy_segmenter import ToySegmenter

    torch.manual_seed(0)
    ToySegmenter(11, (8, 8, 8, 8)).save_pretrained(tmp_path / "seg")
    seg = study.load_segmenter(settings("camvid", smoke=False, segmenter=str(tmp_path / "seg")))
    assert isinstance(seg, ToySegmenter) and seg.num_classes == 11
    assert seg.predict(torch.zeros(1, 3, 16, 16)).shape == (1, 16, 16)


@pytest.mark.parametrize("name", ["camvid", "camvid-sd"])
def test_committed_camvid_zoo_is_small_and_has_no_machine_paths(name):
    """The stack under 25 MB; each training seed (``seeds/seed<N>``) only its two trained modules (ControlNet and
    the UNet whose decoder trained beside it, float16: about 20 MB) and its report, nothing the stack already holds."""
    from scp_core.data import REPO_ROOT

    zoo = REPO_ROOT / "zoo" / name
    if not (zoo / "pipeline" / "scp_pipeline.json").is_file():
        pytest.skip(f"zoo/{name} not trained yet (scpdiff train --profile {name})")
    files = [p for p in zoo.rglob("*") if p.is_file()]
    stack = [p for p in files if "seeds" not in p.relative_to(zoo).parts]
    assert sum(p.stat().st_size for p in stack) < 25 * 2**20
    for seed in sorted((zoo / "seeds").glob("seed*")):
        assert sorted(p.name for p in seed.iterdir() if p.is_dir()) == ["controlnet", "unet"], seed
        assert sum(p.stat().st_size for p in seed.rglob("*") if p.is_file()) < 22 * 2**20, seed
    here = str(REPO_ROOT.parent)  # no path of the machine that trained it
    assert not [p for p in files if p.suffix in (".json", ".md") and here in p.read_text()]
    assert sorted(p.name for p in (zoo / "pipeline" / "vae").iterdir()) == ["config.json"]  # TAEF2 not copied


def test_readable_table_names_the_metric_and_shows_kid_times_1e3():
    import pandas as pd

    from scp_core.study import readable

    df = pd.DataFrame([{"prior": "joint", "fd": 80.0, "fd_ci": [70.0, 90.0], "kid": 0.0123, "kid_ci": [0.011, 0.014],
                        "n": 101}])
    out = readable(df, "FID", ["prior", "fd", "fd_ci", "n"])
    assert list(out.columns) == ["prior", "FID", "FID 95% CI", "KID x1e3", "KID x1e3 95% CI", "n"]
    assert out["KID x1e3"].iloc[0] == pytest.approx(12.3)
    assert out["KID x1e3 95% CI"].iloc[0] == pytest.approx([11.0, 14.0])
    toy = readable(df.drop(columns=["kid", "kid_ci"]), "FD-toy", ["prior", "fd", "fd_ci", "absent"])
    assert list(toy.columns) == ["prior", "FD-toy", "FD-toy 95% CI"]


def test_camvid_batch_passes_its_counts_to_the_notebooks(tmp_path):
    from scp_core.reproduce import notebook_params
    from scp_core.study.settings import PROFILE_PARAMS

    p = notebook_params("camvid", "04_mu_sweep", False, tmp_path)
    assert p == {"profile": "camvid", "smoke": False, "out_dir": str(tmp_path),
                 **PROFILE_PARAMS["camvid"]["04_mu_sweep"]}
    assert notebook_params("toy", "04_mu_sweep", True, tmp_path) == {
        "profile": "toy", "smoke": True, "out_dir": str(tmp_path)}


def test_camvid_table1_has_fid_and_kid_on_real_frames(tmp_path, monkeypatch):
    """Table 1's functions on the camvid profile at a few frames: FID with KID on real frames from the committed zoo,
    and index.md's Table 1 shows KID (notebook 03 itself runs under nbval on the toy profile)."""
    from dataclasses import replace

    from scp_core import study
    from scp_core.data import REPO_ROOT
    from scp_core.index_md import _table1_section

    if not CAMVID.is_dir() or not (weights_dir() / "taef2_encoder.safetensors").is_file():
        pytest.skip("needs ../shared/data/camvid and ../shared/weights (TAEF2, FID Inception)")
    if not (REPO_ROOT / "zoo" / "camvid" / "pipeline" / "scp_pipeline.json").is_file():
        pytest.skip("zoo/camvid not trained yet (scpdiff train --profile camvid)")
    monkeypatch.setenv("SCP_DATA_ROOT", str(CAMVID))
    s = replace(study.settings("camvid", smoke=True, notebook="03_prior_comparison", out_dir=str(tmp_path)),
                n_ref=16, n_eval=8)
    table, images, comp = study.prior_comparison(s, kinds=("normal", "joint"))
    rows = study.records(table)
    assert {r["metric"] for r in rows} == {"FID"}
    assert all(r["kid_ci"][1] > r["kid_ci"][0] and r["fd_ci"][1] > r["fd_ci"][0] for r in rows)
    assert "fid" not in rows[0]  # real scale: FID is judge 1 already, no second judge
    assert images["joint"].shape == (8, 96, 128, 3)
    assert comp.record("joint", "normal", "kid")["metric"] == "KID"
    real = study.real_reference(s)  # real training frames against the validation reference
    assert real["kid_ci"][1] > real["kid_ci"][0] and real["metric"] == "FID" and "real_versus_real" in real
    study.write_metrics(s, "prior_comparison", {"tables": {"camvid": rows}, "metric": "FID",
                                                "real_reference": {"camvid": real}, "verdict": {"camvid": "-"},
                                                "paper_table1": study.records(study.PAPER_TABLE1)})
    assert "KID x1e3" in "\n".join(_table1_section(tmp_path))


def test_the_gpu_recipe_trains_from_a_pack_where_no_frame_is_then_is_evaluated_where_they_are(tmp_path):
    """Issue 25's device run at tiny counts on the CPU: the pack (latents and label maps) is all the training reads;
    the GPU recipe's networks fit the zoo's 25 MB in float16; the committed segmenter is reused; the evaluation and
    the report follow where the frames are."""
    if not (CAMVID / "train").is_dir() or not (weights_dir() / "taef2_encoder.safetensors").is_file():
        pytest.skip("needs ../shared/data/camvid and ../shared/weights (TAEF2)")
    import json

    from scp_core.data import REPO_ROOT
    from scp_core.pipeline import SCPDiffPipeline
    from scp_core.training.camvid import rewrite_report, train_stack, write_training_pack
    from scp_core.training.recipes import recipe_for

    recipe = recipe_for("camvid", small=True, gpu=True)
    assert recipe.unet_cfg.mixed_precision == "bf16" and recipe.unet_cfg.ema_decay and recipe.unet_cfg.max_wall_s
    pack = write_training_pack(tmp_path / "camvid.pack", "camvid", data_root=CAMVID, work=tmp_path / "w0",
                               recipe=recipe, limit=3)
    from safetensors import safe_open

    with safe_open(str(pack), framework="pt") as f:  # the frames' maps only: their flips are made again on reading
        assert f.get_slice("labels").get_shape() == [3, 96, 128] and f.get_slice("latents").get_shape()[0] == 6
    out, work = tmp_path / "zoo", tmp_path / "w1"
    facts = train_stack("camvid", out=out, work=work, data_root=tmp_path / "no-frames-here", recipe=recipe,
                        pack=pack, device="cpu")
    assert facts["n_train_images"] == 3 and facts["n_train_latents"] == 6 and facts["device"] == "cpu"
    assert facts["unet"]["steps"] == 4 and facts["controlnet"]["steps"] == 4 and "segmenter" not in facts
    pipe = SCPDiffPipeline.from_pretrained(out / "pipeline", device="cpu", dtype=torch.float32)
    assert tuple(pipe.unet.config.block_out_channels) == (64, 96, 160) and pipe.latent_shape == (32, 12, 16)
    committed = REPO_ROOT / "zoo" / "camvid" / "segmenter"
    weights = [*(out / "pipeline").rglob("*.safetensors"), *committed.glob("*.safetensors")]
    assert sum(p.stat().st_size for p in weights) <= 25 * 2**20, "the zoo's weights stay under 25 MB"
    assert not (out / "segmenter").exists(), "a reused segmenter stays in its own folder, not copied"
    report = rewrite_report("camvid", out=out, work=work, data_root=CAMVID, recipe=recipe, limit=3)
    evaluated = json.loads((out / "training_facts.json").read_text())
    assert evaluated["segmenter"]["n_val"] == 3 and evaluated["taef2_psnr_val_db"] > 10 and report.is_file()
    checks = evaluated["checks"]  # does it paint, does it copy: on the 3 val maps against the 3 training frames
    assert checks["n_generated"] == 3 and checks["n_train"] == 3 and 0 <= checks["share_below_closest_val"] <= 1
    assert "## Does it paint, and does it copy?" in report.read_text()
    assert (out / "report" / "memorisation.png").is_file()
    with pytest.raises(ValueError, match="not a training pack of profile 'camvid'"):
        train_stack("camvid", out=tmp_path / "o", work=tmp_path / "w2", recipe=recipe,
                    pack=committed / "model.safetensors")


def test_training_seed_folders_live_in_their_stack():
    from scp_core.data.profiles import seed_folder, training_seed_folder

    assert training_seed_folder("camvid-sd", 1) == "zoo/camvid-sd/seeds/seed1"
    assert training_seed_folder("camvid", 2) == "zoo/camvid/seeds/seed2"
    assert training_seed_folder("toy", 1) == seed_folder(1)
    with pytest.raises(ValueError, match="has no zoo stack.*camvid"):
        training_seed_folder("cityscapes", 1)
