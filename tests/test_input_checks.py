"""Priors, label maps and sampled values are checked before they are used (issue 22): a prior file that
cannot be sampled from, or was built for another autoencoder, is refused naming the file and the problem;
a sampler that produces NaN / Inf stops; a colour image passed as a label map is recognised."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scp_core.labels import as_label_tensor, check_ids, downsample_labels, ids_from_colours
from scp_core.priors import CategoricalPrior, NormalPrior, SpatialPrior, load_prior
from scp_core.data.profiles import TOY_PIPELINE_DIR as PIPELINE_DIR

needs_toy = pytest.mark.skipif(not (PIPELINE_DIR / "scp_pipeline.json").is_file(),
                               reason="needs the committed toy pipeline (zoo/toy/pipeline)")
LAT = (4, 8, 16)


def _spatial(mean=None, std=None, latent_shape=LAT, **kw) -> SpatialPrior:
    mean = torch.zeros(latent_shape or LAT) if mean is None else mean
    return SpatialPrior(mean=mean, std=torch.ones(mean.shape) if std is None else std, latent_shape=latent_shape,
                        **kw)


@pytest.mark.parametrize("make, message", [
    (lambda: _spatial(mean=torch.full(LAT, float("nan")), latent_shape=None), "tensor 'mean' has NaN or Inf"),
    (lambda: _spatial(std=torch.full(LAT, float("inf"))), "tensor 'std' has NaN or Inf"),
    (lambda: _spatial(mean=torch.zeros(LAT, dtype=torch.int64)), "tensor 'mean' has dtype torch.int64"),
    (lambda: _spatial(std=-torch.ones(LAT)), "'std' has negative values"),
    (lambda: _spatial(std=torch.full(LAT, 1e30)), "tensor 'std' reaches 1e\\+30, beyond the 10000"),
    (lambda: _spatial(mean=torch.full(LAT, -3e5)), "tensor 'mean' reaches 3e\\+05"),
])
def test_a_prior_that_cannot_be_sampled_from_is_refused_naming_the_file(tmp_path, make, message):
    path = make().save(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=message) as e:
        load_prior(path)
    assert str(path) in str(e.value)


def test_a_missing_latent_shape_is_read_from_the_tensors_and_checked(tmp_path):
    path = _spatial(mean=torch.zeros(3, 8, 16), latent_shape=None).save(tmp_path / "s.safetensors")
    assert load_prior(path).latent_shape == (3, 8, 16)
    with pytest.raises(ValueError, match=r"latent_shape: prior has \(3, 8, 16\), requested \(4, 8, 16\)"):
        load_prior(path, latent_shape=LAT)
    cat = CategoricalPrior(mean=torch.zeros(5, 3), std=torch.ones(5, 3), class_counts=torch.ones(5), num_classes=5)
    path = cat.save(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="latent channels: prior has 3, the model's latents have 4"):
        load_prior(path, num_classes=5, latent_shape=LAT)


@needs_toy
def test_normal_prior_with_other_channels_and_non_finite_sampling_stop_with_a_clear_error():
    from scp_core.pipeline import load_pipeline

    pipe = load_pipeline(None)
    labels = torch.zeros(1, *pipe.image_size, dtype=torch.long)
    with pytest.raises(ValueError, match=f"the normal prior has 3 channels, this model's latents have "
                                         f"{pipe.latent_shape[0]}"):
        pipe(labels, prior=NormalPrior(latent_channels=3), num_inference_steps=1, seed=0, progress=False)
    wild = _spatial(std=torch.full(pipe.latent_shape, 1e30), latent_shape=pipe.latent_shape)
    with pytest.raises(ValueError, match=r"latents of the spatial prior .* hold NaN or Inf"):
        pipe(labels, prior=wild, mu=1.0, num_inference_steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"eta=nan\) hold NaN or Inf"):
        pipe(labels, num_inference_steps=2, eta=float("nan"), seed=0, progress=False)


@needs_toy
def test_a_prior_from_another_autoencoder_is_refused_unless_force(tmp_path, capsys):
    from scp_core import cli
    from scp_core.pipeline import load_pipeline
    from scp_core.reference import autoencoder_fingerprint

    pipe = load_pipeline(None)
    good = {"scale_factor": pipe.scale_factor, "image_size": list(pipe.image_size),
            "autoencoder": autoencoder_fingerprint(None)}
    for name, prov, message in (("scale", {**good, "scale_factor": 0.5}, "autoencoder scale factor 0.5"),
                                ("vae", {**good, "autoencoder": "0" * 64}, "autoencoder fingerprint 000000000000"),
                                ("ok", good, None)):
        path = _spatial(latent_shape=pipe.latent_shape, num_classes=pipe.prior_num_classes,
                        provenance=prov).save(tmp_path / f"{name}.safetensors")
        args = ["sample", "--prior", str(path), "--n", "1", "--steps", "1", "--mu", "1", "--device", "cpu"]
        code = cli.main([*args, "--out", str(tmp_path / f"out-{name}")])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0, err
            continue
        assert code == 2 and message in err and str(path) in err and "--force" in err
        assert not (tmp_path / f"out-{name}").exists()
        assert cli.main([*args, "--force", "--out", str(tmp_path / f"forced-{name}")]) == 0


def test_a_colour_image_passed_as_a_label_map_is_recognised_and_explained():
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255]], np.uint8)
    ids = np.random.default_rng(0).integers(0, 3, (16, 32))
    rgb = palette[ids]
    for bad in (rgb, rgb[None], rgb.astype(np.float32) / 255):
        with pytest.raises(ValueError, match="look like a colour image .*ids_from_colours"):
            as_label_tensor(bad)
    with pytest.raises(ValueError, match="look like a colour image"):
        downsample_labels(rgb, (4, 8))
    with pytest.raises(ValueError, match="look like a colour image"):
        check_ids(torch.as_tensor(rgb).long(), 3)
    assert torch.equal(ids_from_colours(rgb, palette), torch.as_tensor(ids))
    with pytest.raises(ValueError, match=r"colours not in the palette, e.g. \(255, 0, 0\)"):
        ids_from_colours(rgb, palette[[0, 2]])
    assert as_label_tensor(ids[:, :3]).shape == (16, 3)  # a narrow map of ids is still a map


# ------------------------------------------------------------------ the Python API names the problem (issue 22)
def test_saving_onto_the_wrong_kind_of_path_names_the_problem(tmp_path):
    from test_sampling import _tiny_pipeline

    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="it is a file, and a pipeline is a folder"):
        _tiny_pipeline().save_pretrained(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="holds other files and no scp_pipeline.json"):
        _tiny_pipeline().save_pretrained(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep"
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file path"):
        _spatial().save(tmp_path / "other")


def test_an_accumulator_state_without_its_tensors_names_what_is_missing():
    from scp_core.priors import PriorAccumulator

    with pytest.raises(ValueError, match=r"lacks \['count', 'mean', 'm2', 'num_images'\]"):
        PriorAccumulator.from_state_dict({})
    state = PriorAccumulator(3, (4, 2, 2)).state_dict()
    with pytest.raises(ValueError, match="shapes"):
        PriorAccumulator.from_state_dict({**state, "mean": torch.zeros(3, 4)})
    assert PriorAccumulator.from_state_dict(state).mean.shape == (3, 4, 2, 2)


def test_get_dataset_without_a_name_lists_the_names():
    from scp_core.data import get_dataset

    with pytest.raises(ValueError, match="must be a string, got None; known: toy-city"):
        get_dataset(None)


@needs_toy
def test_cuda_without_a_gpu_is_refused_naming_the_device(monkeypatch):
    from scp_core.pipeline import load_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' was asked for, but torch .* sees no CUDA GPU"):
        load_pipeline(device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        load_pipeline(device="gpu0")
