"""A checkpoint of the ControlNet repository's format converted to diffusers modules, with diffusers' own converters.

The authors' fine-tuned models are ``ControlLDM`` state dicts (one ``.ckpt`` or ``.safetensors``):
``control_model.*`` (the ControlNet), ``model.diffusion_model.*`` (the UNet, whose decoder they
fine-tune), ``first_stage_model.*`` (the VAE), ``cond_stage_model.model.*`` (the OpenCLIP ViT-H text
encoder of SD 2.x) and the schedule's buffers (``alphas_cumprod``, ...). Reading never runs code: a
``.safetensors`` holds tensors only, a ``.ckpt`` is read with ``torch.load(weights_only=True)``, which
refuses any pickled object that is not a tensor or a container of them.

The model configurations are given here (:data:`SD21_MODEL_CONFIG`: the ``model.params`` of the
ControlNet repository's ``cldm_v21.yaml`` and SD 2.1 base's text encoder), never fetched; diffusers'
``create_*_diffusers_config_from_ldm`` turns them into diffusers configs and ``convert_ldm_unet_checkpoint``,
``convert_controlnet_checkpoint``, ``convert_ldm_vae_checkpoint`` and ``convert_open_clip_checkpoint`` map
the weights. Two things diffusers 0.42 lacks are done here: the ControlNet's config (its
``create_controlnet_diffusers_config_from_ldm`` calls the UNet's without the checkpoint and fails) is the
UNet's encoder half with the hint channels and the embedding widths read from the ``input_hint_block``
weights; and the text encoder keeps all but the last OpenCLIP block (SD 2.x reads the penultimate layer,
``FrozenOpenCLIPEmbedder(layer="penultimate")``; diffusers drops block 23 by a list that fits ViT-H only).
Every module is loaded ``strict``: a checkpoint that does not fit the configuration is refused, naming
the first missing, unexpected or mis-shaped weights.
"""
from __future__ import annotations

import copy
import os
import pickle
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..io import sha256_file
from ..models import make_scheduler

__all__ = ["SD21_MODEL_CONFIG", "PREFIXES", "read_checkpoint", "check_schedule", "convert_checkpoint",
           "file_digest"]

PREFIXES = {"controlnet": "control_model.", "unet": "model.diffusion_model.", "vae": "first_stage_model.",
            "text_encoder": "cond_stage_model.model."}
# ``model.params`` of the ControlNet repository's models/cldm_v21.yaml (SD 2.1 base + ControlNet)
SD21_LDM_CONFIG = {"model": {"params": {
    "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "scale_factor": 0.18215,
    "control_stage_config": {"params": {"hint_channels": 3}},
    "unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
        "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "use_linear_in_transformer": True,
        "transformer_depth": 1, "context_dim": 1024}},
    "first_stage_config": {"params": {"ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}},
}}}
# SD 2.1 base's text_encoder/config.json (OpenCLIP ViT-H/14's text tower without its last block)
SD21_TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
                    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu",
                    "projection_dim": 512, "layer_norm_eps": 1e-5}
SD21_MODEL_CONFIG = {"ldm": SD21_LDM_CONFIG, "text_encoder": SD21_TEXT_CONFIG}


def file_digest(path: str | os.PathLike) -> dict:
    """``{"file", "bytes", "sha256"}`` of a file (the provenance of what was imported)."""
    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a ``.safetensors`` or ``.ckpt`` file (a Lightning ``{"state_dict": ...}`` is unwrapped).

    ``ValueError`` for a missing, truncated or corrupt file, and for a ``.ckpt`` that pickles anything
    but tensors (``weights_only=True`` refuses it; nothing in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} is not a readable safetensors file (truncated?): {e}") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"refused to read {path}: it pickles Python objects besides tensors, which "
                             f"torch.load(weights_only=True) does not run ({str(e).splitlines()[0]}). Convert it to "
                             ".safetensors where you trust the file, or strip it to its state_dict") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise ValueError(f"checkpoint {path} cannot be read (truncated or corrupt?): {e}") from e
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"checkpoint {path} is not a state dict of tensors")
    missing = [f"{p}*" for p in PREFIXES.values() if not any(k.startswith(p) for k in sd)]
    if missing:
        raise ValueError(f"checkpoint {path} is not of the ControlNet repository's format: it has no {missing} "
                         "weights (expected control_model.*, model.diffusion_model.*, first_stage_model.*, "
                         "cond_stage_model.model.*)")
    return sd


def check_schedule(sd: dict[str, torch.Tensor], source="the checkpoint") -> None:
    """Refuse a checkpoint whose stored ``alphas_cumprod`` is not SD's schedule (this project's, and the priors')."""
    ours = make_scheduler("ddim").alphas_cumprod.double()
    theirs = sd.get("alphas_cumprod")
    if theirs is None:
        return
    if theirs.shape != ours.shape or not torch.allclose(theirs.double(), ours, rtol=1e-4, atol=1e-6):
        raise ValueError(f"{source} was trained with another noise schedule (alphas_cumprod of shape "
                         f"{tuple(theirs.shape)} differs from SD's scaled-linear 0.00085..0.012, T = 1000)")


def _load(module: torch.nn.Module, weights: dict, what: str) -> torch.nn.Module:
    """``module`` with ``weights`` loaded strictly, as float32; ``ValueError`` naming what does not fit.

    The checkpoint's tensors become the parameters (``assign=True``): no second copy of a 14 GB file's
    weights is made."""
    try:
        module.load_state_dict({k: v.contiguous() for k, v in weights.items()}, strict=True, assign=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise ValueError(f"the checkpoint's {what} weights do not fit the model configuration (another "
                         f"architecture? give its configuration with --model-config): {' '.join(lines[:4])[:900]}") \
            from None
    return module.float().eval()


def _controlnet_config(unet_cfg: dict, sd: dict, hint_channels: int) -> dict:
    """The ControlNet's diffusers config: the UNet's encoder half, the hint channels and the embedding widths
    (``input_hint_block.{0, 2, 4, ...}`` convolutions, the last one excepted)."""
    convs = sorted(int(k.split(".")[2]) for k in sd if k.startswith("control_model.input_hint_block.")
                   and k.endswith(".weight"))
    widths = [int(sd[f"control_model.input_hint_block.{i}.weight"].shape[0]) for i in convs[:-1]]
    widths = [w for i, w in enumerate(widths) if i == 0 or i % 2 == 0]  # conv_in, then each stride-2 conv's width
    keep = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "class_embed_type", "addition_embed_type",
            "addition_time_embed_dim", "projection_class_embeddings_input_dim", "transformer_layers_per_block")
    return {**{k: unet_cfg[k] for k in keep if k in unet_cfg}, "conditioning_channels": int(hint_channels),
            "conditioning_embedding_out_channels": tuple(widths)}


def _text_encoder(sd: dict, text_cfg: dict):
    """OpenCLIP's text tower -> ``CLIPTextModel`` (diffusers' ``convert_open_clip_checkpoint``), penultimate layer."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint  # needs transformers: here only
    from transformers import CLIPTextConfig, CLIPTextModel  # slow to import; needed for the text encoder only

    prefix = PREFIXES["text_encoder"]
    blocks = {int(k[len(prefix):].split(".")[2]) for k in sd if k.startswith(prefix + "transformer.resblocks.")}
    layers = int(text_cfg["num_hidden_layers"])
    if len(blocks) != layers + 1:
        raise ValueError(f"the text encoder has {len(blocks)} OpenCLIP blocks; SD 2.x reads the penultimate layer, "
                         f"so the configuration's num_hidden_layers must be {len(blocks) - 1}, not {layers}")
    model = CLIPTextModel(CLIPTextConfig(**text_cfg))
    weights = convert_open_clip_checkpoint(model, sd, prefix=prefix)
    weights = {k: v for k, v in weights.items() if not k.startswith(f"text_model.encoder.layers.{layers}.")
               and k != "text_projection.weight"}  # the last block and the projection: unused by SD 2.x
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    expected = model.state_dict()
    weights.update({k: expected[k] for k in expected if k.endswith("position_ids") and k not in weights})
    return _load(model, weights, "text encoder")


def convert_checkpoint(sd: dict[str, torch.Tensor], model_config: dict | None = None,
                       image_size: int = 512, text_encoder: bool = True, device: str = "cpu") -> dict:
    """``{"unet", "controlnet", "vae", "text_encoder", "scale_factor"}`` from a ControlNet-format state dict.

    Args:
        sd: the state dict (:func:`read_checkpoint`).
        model_config: ``{"ldm": <cldm yaml as a dict>, "text_encoder": <CLIPTextConfig keywords>}``
            (default :data:`SD21_MODEL_CONFIG`).
        image_size: the configs' nominal sample size (a default only; sampling takes the pipeline's size).
        text_encoder: also convert the text encoder (``None`` in the result otherwise).
        device: where the modules are built; ``"meta"`` checks a configuration against a checkpoint's
            key layout and shapes without memory (a state dict of meta tensors, the modules empty).
    """
    from diffusers.loaders import single_file_utils as sfu  # needs transformers: loaded for a conversion only

    cfg = copy.deepcopy(model_config or SD21_MODEL_CONFIG)
    ldm = cfg["ldm"]
    check_schedule(sd)
    with warnings.catch_warnings():  # image_size is "deprecated" there, but without it the type is guessed
        warnings.simplefilter("ignore", FutureWarning)
        unet_cfg = sfu.create_unet_diffusers_config_from_ldm(ldm, sd, image_size=image_size)
        vae_cfg = sfu.create_vae_diffusers_config_from_ldm(ldm, sd, image_size=image_size)
    hint = ldm["model"]["params"]["control_stage_config"]["params"]["hint_channels"]
    cn_cfg = _controlnet_config(unet_cfg, sd, hint)
    with torch.device(device):
        unet = _load(UNet2DConditionModel(**unet_cfg), sfu.convert_ldm_unet_checkpoint(sd, unet_cfg), "UNet")
        controlnet = _load(ControlNetModel(**cn_cfg), sfu.convert_controlnet_checkpoint(sd, cn_cfg), "ControlNet")
        vae = _load(AutoencoderKL(**vae_cfg), sfu.convert_ldm_vae_checkpoint(sd, vae_cfg), "VAE")
        te = _text_encoder(sd, cfg["text_encoder"]) if text_encoder else None
    return {"unet": unet, "controlnet": controlnet, "vae": vae, "text_encoder": te,
            "scale_factor": float(vae_cfg["scaling_factor"])}
