"""Any diffusers ControlNet on any Stable Diffusion base, training-free, as a pipeline folder.

A public segmentation ControlNet (ControlNet's own ``seg`` models take ADE20K maps coloured with
the ADE20K benchmark palette) was never fine-tuned here. :func:`compose_pipeline` writes the
pipeline folder that ``scpdiff priors`` and ``scpdiff sample`` read from two folders the user has:

* the base (the hub layout: ``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``;
  epsilon prediction, as SD 1.5 and SD 2.1 base), whose text encoder encodes the prompt once and
  whose autoencoder and scale factor the priors are then built with (``scpdiff priors --pipeline``
  on the user's own data: statistics of *this* autoencoder's latents);
* the ControlNet (a diffusers ``ControlNetModel`` folder), checked against the base's UNet.

The control input must be what the ControlNet saw in training (:func:`control_palette`):
``control="dataset"`` colours each class with the dataset's own palette (this project's encoding:
what a ControlNet fine-tuned here, or on the dataset's official colour maps, saw);
``control="ade20k"`` colours each class with the ADE20K colour of its ADE20K counterpart
(:data:`ADE20K_COUNTERPART`), as ControlNet's segmentation annotator does; a class without one is
drawn black and named in the folder's ``info``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .data import DATASETS
from .data.palettes import ADE20K_CLASSES, ADE20K_PALETTE
from .models import load_sd_components
from .pipeline import SCPDiffPipeline

__all__ = ["CONTROLS", "ADE20K_COUNTERPART", "control_palette", "check_controlnet_fits", "compose_pipeline"]

CONTROLS = ("dataset", "ade20k")
# Class names of this project's datasets whose ADE20K class has another name (equal names map to themselves);
# None: ADE20K has no counterpart (drawn black).
ADE20K_COUNTERPART = {"pavement": "sidewalk", "traffic sign": "signboard", "sign symbol": "signboard",
                      "vegetation": "tree", "terrain": "grass", "pedestrian": "person", "rider": "person",
                      "bicyclist": "person", "motorcycle": "minibike", "train": None}


def control_palette(dataset: str, control: str = "dataset") -> tuple[np.ndarray, list[str]]:
    """``(uint8 [K, 3] colours of the dataset's classes 0..K-1, names of the classes drawn black)``.

    ``"dataset"``: the dataset's palette. ``"ade20k"``: each class's ADE20K counterpart's colour in
    the ADE20K benchmark palette (the colours ControlNet's segmentation models were trained with).
    """
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}, got {control!r}: 'dataset' for a ControlNet that saw "
                         "the dataset's own colours, 'ade20k' for one trained on ADE20K colour maps")
    cls = DATASETS.get(dataset)
    if not getattr(cls, "class_names", None) or not getattr(cls, "default_size", None):
        known = [k for k, c in DATASETS.items() if getattr(c, "class_names", None) and getattr(c, "default_size", None)]
        raise ValueError(f"a composed pipeline needs a dataset with a label set and an image size: {dataset!r} is "
                         f"not one; choose from {', '.join(known)}")
    if control == "dataset":
        return np.asarray(cls.palette, dtype=np.uint8), []
    ade = {name: i for i, name in enumerate(ADE20K_CLASSES)}
    colours, unmapped = [], []
    for name in cls.class_names:
        target = ADE20K_COUNTERPART.get(name, name)
        if target in ade:
            colours.append(ADE20K_PALETTE[ade[target]])
        else:
            colours.append((0, 0, 0))
            unmapped.append(name)
    return np.asarray(colours, dtype=np.uint8), unmapped


def check_controlnet_fits(unet, controlnet, source: str = "the ControlNet") -> None:
    """Refuse a ControlNet made for another base: its residuals must match the UNet's blocks and text width."""
    u, c = unet.config, controlnet.config
    problems = [f"{key} {c[key]!r} (the base UNet's: {u[key]!r})"
                for key in ("in_channels", "block_out_channels", "cross_attention_dim", "layers_per_block")
                if key in c and key in u and tuple(np.atleast_1d(c[key])) != tuple(np.atleast_1d(u[key]))]
    if c.get("conditioning_channels", 3) != 3:
        problems.append(f"conditioning_channels {c['conditioning_channels']} (a colour-coded label map has 3)")
    if problems:
        raise ValueError(f"{source} does not fit this base: " + "; ".join(problems)
                         + ". Pass the base the ControlNet was trained on (SD 1.5 ControlNets need an SD 1.5 base, "
                           "SD 2.1 ones SD 2.1 base)")


def compose_pipeline(base: str | os.PathLike, controlnet: str | os.PathLike, dataset: str, control: str = "dataset",
                     prompt: str | None = None, negative_prompt: str = "",
                     image_size: tuple[int, int] | None = None) -> SCPDiffPipeline:
    """The pipeline (float32, CPU) of ``controlnet`` on ``base`` for ``dataset``'s label set, not trained here.

    ``prompt``: default the dataset's fixed prompt; ``image_size``: default the dataset's paper size.
    Save it with ``save_pretrained`` (``scpdiff compose`` does, atomically).
    """
    palette, unmapped = control_palette(dataset, control)  # bad names are refused before any loading
    ds = DATASETS[dataset]
    size = tuple(int(s) for s in (image_size or ds.default_size))
    prompt = ds.prompt if prompt is None else prompt
    comps = load_sd_components(str(base), controlnet=str(controlnet), prompt=prompt, negative_prompt=negative_prompt,
                               device="cpu", dtype=torch.float32)
    check_controlnet_fits(comps["unet"], comps["controlnet"], f"the ControlNet in {controlnet}")
    info = {"dataset": dataset, "prompt": prompt, "negative_prompt": negative_prompt,
            "source": "composed with scpdiff compose (training-free)", "base": Path(base).name,
            "controlnet": Path(controlnet).name, "control": {"palette": control, "unmapped_classes": unmapped}}
    pipe = SCPDiffPipeline.from_components(comps, num_classes=ds.num_classes, palette=palette, image_size=size,
                                           ignore_index=ds.ignore_index,
                                           scale_factor=float(comps["vae"].config.scaling_factor), info=info)
    if any(s % pipe.vae_factor for s in size):
        raise ValueError(f"image size {size} is not a multiple of the autoencoder's factor {pipe.vae_factor}")
    return pipe
