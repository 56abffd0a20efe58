"""The committed toy zoo: it loads, fits its size budget, and its samples follow the label maps."""
import json
from pathlib import Path

import pytest
import torch

from scp_core.data import get_dataset
from scp_core.metrics import SegmentationMeter, load_toy_segmenter
from scp_core.priors import NormalPrior
from scp_core.training.toy import GV_PIPELINE_DIR, GV_ZERO_SNR_PIPELINE_DIR, PIPELINE_DIR, ZOO
from scp_core.pipeline import load_pipeline
from scp_core.pipeline_folder import check_weight_hashes

ROOT = Path(__file__).resolve().parents[1]


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20


def test_committed_pipelines_record_the_sha256_of_every_weight_file():
    folders = sorted(ROOT.glob("zoo/*/pipeline"))
    assert PIPELINE_DIR in folders
    for folder in folders:
        cfg = json.loads((folder / "scp_pipeline.json").read_text())
        assert sorted(cfg["weights_sha256"]) == sorted(p.relative_to(folder).as_posix()
                                                       for p in folder.rglob("*.safetensors")), folder
        check_weight_hashes(folder, cfg)  # raises naming a file that differs


def test_toy_stack_weights_fit_the_budget_and_have_a_report():
    assert (PIPELINE_DIR / "scp_pipeline.json").is_file()
    assert _mb(PIPELINE_DIR) + _mb(ZOO / "segmenter") <= 25.0
    report = (ZOO / "REPORT.md").read_text()
    assert "PSNR" in report and "samples.png" in report
    facts = json.loads((ZOO / "training_facts.json").read_text())
    assert facts["vae_psnr_val_db"] >= 25 and facts["controlnet"]["steps"] >= 1000
    for stage in ("vae", "unet", "controlnet"):
        assert (ZOO / "report" / f"loss_{stage}.png").is_file()


@pytest.mark.parametrize("pipeline,dataset", [(PIPELINE_DIR, "toy-city"), (GV_PIPELINE_DIR, "toy-city-gv"),
                                              (GV_ZERO_SNR_PIPELINE_DIR, "toy-city-gv")])
def test_samples_follow_the_masks(pipeline, dataset):
    """Plain ControlNet sampling (normal prior, mu = 1): the toy segmenter must find the input map."""
    pipe = load_pipeline(pipeline)
    labels = torch.tensor(get_dataset(dataset, split="val").labels[:8], dtype=torch.long)
    out = pipe(labels, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=10, seed=0,
               output_type="pt", progress=False)
    seg = load_toy_segmenter()
    meter = SegmentationMeter(10, ignore_index=None)
    meter.update(seg.predict(out.images * 2 - 1), labels)
    r = meter.compute()
    # an unconditional model scores far below this (the prediction would ignore the map)
    assert r["acc"] > 0.75 and r["miou"] > 0.40, r


def test_write_report_writes_beside_its_own_pipeline_and_never_into_the_committed_zoo(tmp_path):
    """`scpdiff train --profile toy --out X` must not replace zoo/toy/REPORT.md (it did before)."""
    from scp_core.training.recipes import TOY_FULL
    from scp_core.training.report import write_toy_report
    from scp_core.training.stacks import save_half

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in ZOO.rglob("*") if p.is_file() and "pipeline" not in p.parts}

    before = snapshot()
    pipe = load_pipeline()
    save_half(pipe, tmp_path / "pipeline")
    facts = json.loads((ZOO / "training_facts.json").read_text())
    (tmp_path / "work").mkdir()
    write_toy_report(pipe, facts, TOY_FULL, tmp_path / "work", report_dir=tmp_path, prior_n=64)  # small prior: fast
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "report" / "samples.png").is_file()
    assert json.loads((tmp_path / "training_facts.json").read_text()) == facts
    assert snapshot() == before, "the committed zoo report was touched"


def test_a_toy_gv_run_refuses_a_base_unet_of_another_schedule(tmp_path):
    """`scpdiff train --profile toy-gv --schedule zero-snr` on an SD-schedule base would mix two schedules."""
    from scp_core.io import write_json
    from scp_core.training.toy import train_toy_gv

    write_json(tmp_path / "unet" / "facts.json", {"steps": 1, "wall_s": 0.0, "final_loss": 0.0})  # an older run: sd
    with pytest.raises(ValueError, match="'sd' schedule, not 'zero-snr'"):
        train_toy_gv(base_work=tmp_path, schedule="zero-snr", out=tmp_path / "out", work=tmp_path / "w")
    assert not (tmp_path / "out").exists()


def test_the_zero_snr_option_is_refused_outside_the_toy_profiles(capsys):
    from scp_core.cli import main

    assert main(["train", "--profile", "camvid", "--schedule", "zero-snr"]) == 2
    assert "experiment of the toy profiles" in capsys.readouterr().err
