"""The memorisation and painting checks of a real-image stack's report (scp_core.training.memorisation), on
features made to copy or not to copy: no network needed."""
import numpy as np
import pytest
import torch

from scp_core.metrics.frechet import nearest
from scp_core.training.memorisation import SHARE_GOAL, summarise


def _sets(seed=0, n_train=200, n_val=100, d=16):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n_train, d, generator=g, dtype=torch.float64)
    val = torch.randn(n_val, d, generator=g, dtype=torch.float64) + 0.3  # other frames, of another street
    return train, val


def test_nearest_finds_each_rows_closest_training_row():
    train, _ = _sets()
    d, i = nearest(train[[3, 7]] + 1e-3, train)
    assert i.tolist() == [3, 7] and np.allclose(d, 1e-3 * np.sqrt(train.shape[1]))


def test_a_generator_that_copies_its_training_frames_fails_the_memorisation_goal():
    train, val = _sets()
    copies = train[:len(val)] + 1e-6  # "generated" images that are training frames
    r = summarise(train, val, copies)
    assert r["share_below_closest_val"] == 1.0 and not r["share_goal_met"] and r["share_below_own_val"] == 1.0
    assert r["arrays"]["i_gen"].tolist() == list(range(len(val)))
    assert r["gen_nearest_median"] < r["val_nearest_median"]


def test_a_generator_of_new_frames_passes_it_and_a_far_one_fails_the_painting_goal():
    train, val = _sets()
    fresh = torch.randn(len(val), train.shape[1], generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.3
    r = summarise(train, val, fresh)
    assert r["share_below_closest_val"] <= SHARE_GOAL and r["share_goal_met"]
    assert r["kid_train_vs_val_x1e3"] > 0 and r["kid_goal_met"]
    assert r["kid_ratio"] == pytest.approx(r["kid_plain_vs_val_x1e3"] / r["kid_train_vs_val_x1e3"], rel=1e-2)
    far = summarise(train, val, fresh + 10.0)  # images nothing like the city's: KID far above the real floor
    assert far["kid_ratio"] > far["kid_goal"] and not far["kid_goal_met"] and far["share_goal_met"]


@pytest.mark.parametrize("met, schedule", [(False, "sd"), (True, "zero-snr")])
def test_index_md_says_what_the_model_can_do_from_its_checks(tmp_path, monkeypatch, met, schedule):
    """index.md's 'The model these numbers stand on': the KID verdict and the schedule, from training_facts.json."""
    import json
    from types import SimpleNamespace

    from scp_core import index_md

    zoo = tmp_path / "zoo" / "camvid"
    zoo.mkdir(parents=True)
    checks = {"n_generated": 101, "kid_plain_vs_val_x1e3": 150.0 if met else 510.7, "kid_train_vs_val_x1e3": 81.3,
              "kid_ratio": 1.84 if met else 6.28, "kid_goal": 2, "kid_goal_met": met, "share_below_closest_val": 0.0,
              "share_goal": 0.05, "share_goal_met": True}
    (zoo / "training_facts.json").write_text(json.dumps({"noise_schedule": schedule, "checks": checks}))
    monkeypatch.setattr(index_md, "PROFILES", {"camvid": SimpleNamespace(zoo=zoo)})
    monkeypatch.setattr(index_md, "REPO_ROOT", tmp_path)
    text = "\n".join(index_md._model_section(tmp_path / "reports" / "camvid", {"profile": "camvid"}))
    assert "## The model these numbers stand on" in text and "../../zoo/camvid/REPORT.md" in text
    assert ("paints on its own" in text and "not on a competent one" not in text) if met else \
        ("falls **short**" in text and "not on a competent one" in text)
    assert ("zero terminal SNR" in text) == (schedule == "zero-snr")
    assert f"{checks['kid_ratio']:.2f}x" in text


def test_plain_samples_are_the_pipelines_own_uint8_images_not_their_negatives():
    """The check scores what the pipeline paints: ``output_type="np"`` already gives uint8, which must not be
    scaled by 255 again (in uint8 that wraps to 256 - x: a negative image; the committed CamVid checks before
    this test scored negatives)."""
    from scp_core.data.profiles import TOY_PIPELINE_DIR
    if not (TOY_PIPELINE_DIR / "scp_pipeline.json").is_file():
        pytest.skip("needs the committed toy pipeline (zoo/toy/pipeline)")
    from scp_core.pipeline import load_pipeline
    from scp_core.priors import NormalPrior
    from scp_core.training.memorisation import plain_samples

    pipe = load_pipeline(None)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, pipe.num_classes, (3, *pipe.image_size), generator=g).numpy()
    got = plain_samples(pipe, labels, seed=5, batch=2, steps=2)
    first = pipe(torch.as_tensor(labels[:2]), prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0,
                 num_inference_steps=2, seed=5, output_type="np", progress=False).images
    assert got.dtype == np.uint8 and got.shape == (3, *pipe.image_size, 3)
    assert np.array_equal(got[:2], first)
