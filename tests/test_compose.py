"""Any diffusers ControlNet on any SD base, training-free (`scpdiff compose`), on miniature folders.

A miniature SD 2.1 base in the hub layout and a miniature "public" segmentation ControlNet (a diffusers
``ControlNetModel`` folder trained nowhere here) are written by the test; ``scpdiff compose``, ``priors`` and
``sample`` run on miniature Cityscapes as the README says, and the images equal those of the same modules
loaded directly with diffusers and sampled with the same prior, seeds and ADE20K-coloured control maps.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minisd import make_mini_cityscapes, make_mini_sd
from scp_core.compose import ADE20K_COUNTERPART, control_palette
from scp_core.data import get_dataset, images_labels
from scp_core.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

SIZE = (64, 128)


def _public_controlnet(sd: Path, folder: Path, **overrides) -> Path:
    """A ControlNet for ``sd``'s UNet whose zero convolutions are no longer zero (as after someone's training)."""
    from diffusers import UNet2DConditionModel

    from scp_core.models import controlnet_from_unet

    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    if overrides:
        unet = UNet2DConditionModel.from_config({**unet.config, **overrides})
    cn = controlnet_from_unet(unet, vae_factor=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            zero_initialised = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
            if name.startswith(zero_initialised):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cn.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("compose")
    sd = make_mini_sd(base / "models" / "sd21-base")
    return {"base": base, "sd": sd, "cn": _public_controlnet(sd, base / "models" / "seg-controlnet"),
            "cs": make_mini_cityscapes(base / "data" / "cityscapes")}


def run_cli(args, capsys) -> tuple[int, str]:
    from scp_core.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_the_ade20k_control_colours_each_class_as_its_ade20k_counterpart():
    ade = {n: i for i, n in enumerate(ADE20K_CLASSES)}
    pal, unmapped = control_palette("cityscapes", "ade20k")
    assert pal.shape == (19, 3) and unmapped == ["train"]
    for c, name in enumerate(CITYSCAPES_CLASSES):
        target = ADE20K_COUNTERPART.get(name, name)
        want = ADE20K_PALETTE[ade[target]] if target else (0, 0, 0)
        assert tuple(pal[c]) == tuple(want), name
    assert tuple(pal[CITYSCAPES_CLASSES.index("road")]) == tuple(ADE20K_PALETTE[ade["road"]])
    assert tuple(pal[CITYSCAPES_CLASSES.index("vegetation")]) == tuple(ADE20K_PALETTE[ade["tree"]])
    assert np.array_equal(control_palette("ade20k", "ade20k")[0], ADE20K_PALETTE)  # ADE20K itself: unchanged
    assert np.array_equal(control_palette("cityscapes", "dataset")[0], CITYSCAPES_PALETTE)
    with pytest.raises(ValueError, match="control must be one of"):
        control_palette("cityscapes", "rainbow")
    with pytest.raises(ValueError, match="'toy-city-gv' is not one"):
        control_palette("toy-city-gv", "ade20k")


def test_compose_then_priors_then_sample_equals_the_modules_loaded_directly(world, capsys, monkeypatch):
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from scp_core.models import encode_prompt, make_scheduler
    from scp_core.pipeline import SCPDiffPipeline
    from scp_core.priors import load_prior
    from scp_core.reference import autoencoder_fingerprint

    monkeypatch.setenv("SCP_DEVICE", "cpu")
    b = world["base"]
    code, err = run_cli(["compose", "--base", world["sd"], "--controlnet", world["cn"], "--dataset", "cityscapes",
                         "--control", "ade20k", "--size", *SIZE, "--out", b / "composed"], capsys)
    assert code == 0, err
    cfg = json.loads((b / "composed" / "scp_pipeline.json").read_text())
    assert cfg["info"]["control"] == {"palette": "ade20k", "unmapped_classes": ["train"]}
    assert cfg["scale_factor"] == 0.18215  # the base's autoencoder, whose latents the priors describe
    assert run_cli(["priors", "--pipeline", b / "composed", "--dataset", "cityscapes", "--root", world["cs"],
                    "--n", "4", "--out", b / "priors"], capsys)[0] == 0
    joint = load_prior(b / "priors" / "joint.safetensors")
    assert joint.provenance["autoencoder"] == autoencoder_fingerprint(b / "composed")
    code, err = run_cli(["sample", "--pipeline", b / "composed", "--dataset", "cityscapes", "--root", world["cs"],
                         "--split", "val", "--n", "2", "--prior", b / "priors" / "joint.safetensors", "--mu", "0.8",
                         "--steps", "3", "--guidance", "2.0", "--batch-size", "2", "--seed", "5",
                         "--out", b / "samples"], capsys)
    assert code == 0, err
    got = np.stack([np.asarray(Image.open(b / "samples" / f"{i:06d}.png")) for i in range(2)])

    # the same modules, loaded directly with diffusers and transformers
    sd = world["sd"]
    tok = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    te = CLIPTextModel.from_pretrained(sd / "text_encoder")
    ds = get_dataset("cityscapes", root=world["cs"], split="val", size=SIZE)
    direct = SCPDiffPipeline(AutoencoderKL.from_pretrained(sd / "vae"),
                             UNet2DConditionModel.from_pretrained(sd / "unet"),
                             ControlNetModel.from_pretrained(world["cn"]), make_scheduler("ddim"),
                             encode_prompt(te, tok, ds.prompt, "cpu"), encode_prompt(te, tok, "", "cpu"),
                             num_classes=19, palette=control_palette("cityscapes", "ade20k")[0], image_size=SIZE,
                             ignore_index=255, scale_factor=0.18215)
    labels = images_labels(ds, np.arange(2))[1]
    want = direct(labels, prior=joint, mu=0.8, num_inference_steps=3, guidance_scale=2.0, seed=5, batch_size=2,
                  output_type="np", progress=False).images
    assert got.shape == (2, *SIZE, 3) and got.std() > 0
    assert np.array_equal(got, want)
    # the control map the ControlNet saw: ADE20K's road colour where the map says road
    road = CITYSCAPES_CLASSES.index("road")
    ctrl = direct.control(labels)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    assert (ctrl[labels[0].numpy() == road] == ADE20K_PALETTE[ADE20K_CLASSES.index("road")]).all()


def test_a_controlnet_for_another_base_is_refused_naming_what_differs_and_writes_nothing(world, capsys):
    b = world["base"]
    other = _public_controlnet(world["sd"], b / "models" / "other-controlnet", cross_attention_dim=16)
    code, err = run_cli(["compose", "--base", world["sd"], "--controlnet", other, "--dataset", "cityscapes",
                         "--size", *SIZE, "--out", b / "refused"], capsys)
    assert code == 2 and "does not fit this base: cross_attention_dim 16 (the base UNet's: 32)" in err
    assert not (b / "refused").exists() and not [p for p in b.iterdir() if p.name.startswith(".refused")]
    code, err = run_cli(["compose", "--base", b / "nowhere", "--controlnet", world["cn"], "--dataset", "cityscapes",
                         "--out", b / "refused"], capsys)
    assert code == 2 and "Stable Diffusion not found at" in err and not (b / "refused").exists()
