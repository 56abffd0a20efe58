"""Miniature inputs of the authors' release, in their exact layouts, built in the test.

* :func:`mini_modules`: a tiny SD 2.x stack whose shapes the ControlNet repository's LDM modules can
  express (GroupNorm of 32 groups everywhere), with its LDM model configuration.
* :func:`to_ldm`: those diffusers modules' state dicts written back in the ControlNet repository's key
  layout (``control_model.*``, ``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.model.*`` with one more OpenCLIP block than the CLIP model reads, and the schedule's
  buffers): the inverse of diffusers' single-file converters, so importing it must give the modules back.
* :func:`toolkit_statistics`: the three ``*_mean_std.npy`` files of SCP-Diff-Toolkit's ``noise_prior.py``,
  with its pickle structures (``np.save`` of dicts), at tiny sizes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

import scp_core  # noqa: F401  (the torchvision shim first)

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
LPB = 1  # layers per block of the mini UNet


def mini_ldm_config(tok, vocab_size: int) -> dict:
    """The model configuration of the mini stack, in the form of the ControlNet repository's cldm yaml."""
    return {"ldm": {"model": {"params": {
        "scale_factor": 0.18215, "control_stage_config": {"params": {"hint_channels": 3}},
        "unet_config": {"params": {"in_channels": 4, "out_channels": 4, "model_channels": 32,
                                   "attention_resolutions": [4, 2, 1], "num_res_blocks": LPB,
                                   "channel_mult": [1, 1, 2, 2], "num_head_channels": 16,
                                   "use_linear_in_transformer": True, "transformer_depth": 1,
                                   "context_dim": 32}},
        "first_stage_config": {"params": {"ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64,
                                                       "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 2, 2],
                                                       "num_res_blocks": 1, "attn_resolutions": []}}}}}},
        "text_encoder": {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "gelu",
                         "projection_dim": 32, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                         "pad_token_id": tok.pad_token_id}}


def mini_modules(seed: int = 0):
    """``(unet, controlnet, vae, text_encoder, tokenizer, config)``: tiny, random, every weight non-zero."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from minisd import _tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    from scp_core.models import controlnet_from_unet

    tok, vocab = _tokenizer()
    cfg = mini_ldm_config(tok, vocab)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=LPB, block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=32,
        attention_head_dim=(2, 2, 4, 4), use_linear_projection=True, norm_num_groups=32)
    cn = controlnet_from_unet(unet, vae_factor=8)
    with torch.no_grad():  # the zero convolutions too: the ControlNet must change the images
        for p in cn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
                        layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=0.18215)
    te = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    return unet.eval(), cn.eval(), vae.eval(), te.eval(), tok, cfg


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{RESNET.get(head, head)}.{tail}"


def _encoder_half(k: str, lpb: int = LPB) -> str | None:
    """A UNet / ControlNet encoder key (diffusers) in LDM's layout, or ``None`` if it is not one."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for d, ldm in fixed.items():
        if k.startswith(d + "."):
            return ldm + k[len(d):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        i = b * (lpb + 1) + j + 1
        return f"input_blocks.{i}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
    return None


def unet_to_ldm(sd: dict, has_attn, lpb: int = LPB) -> dict:
    out = {}
    for k, v in sd.items():
        ldm = _encoder_half(k, lpb)
        if ldm is None and (m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k)):
            i = int(m[1]) * (lpb + 1) + int(m[3])
            ldm = f"output_blocks.{i}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
        elif ldm is None and (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k)):
            b = int(m[1])
            ldm = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attn(b) else 1}.conv.{m[2]}"
        assert ldm is not None, k
        out["model.diffusion_model." + ldm] = v
    return out


def controlnet_to_ldm(sd: dict, lpb: int = LPB) -> dict:
    out = {}
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    for k, v in sd.items():
        ldm = _encoder_half(k, lpb)
        if ldm is None and (m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k)):
            ldm = f"zero_convs.{m[1]}.0.{m[2]}"
        elif ldm is None and k.startswith("controlnet_mid_block."):
            ldm = "middle_block_out.0." + k.split(".")[-1]
        elif ldm is None and (m := re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.*)", k)):
            idx = 0 if m[1] == "conv_in" else 2 * (n_blocks + 1) if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
            ldm = f"input_hint_block.{idx}.{m[3]}"
        assert ldm is not None, k
        out["control_model." + ldm] = v
    return out


def vae_to_ldm(sd: dict, n_blocks: int = 4) -> dict:
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        ldm = k.replace("conv_norm_out", "norm_out")
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", k):
            ldm = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            v = v[:, :, None, None] if v.dim() == 2 else v
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", k):
            ldm = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            ldm = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            ldm = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            ldm = f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            ldm = f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        out["first_stage_model." + ldm.replace("conv_shortcut", "nin_shortcut")] = v
    return out


def clip_to_open_clip(sd: dict, seed: int = 0) -> dict:
    """CLIPTextModel -> OpenCLIP's text tower with one more block (SD 2.x reads the penultimate layer)."""
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out = {"token_embedding.weight": sd["embeddings.token_embedding.weight"],
           "positional_embedding": sd["embeddings.position_embedding.weight"],
           "ln_final.weight": sd["final_layer_norm.weight"], "ln_final.bias": sd["final_layer_norm.bias"]}
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        p = f"encoder.layers.{i}."
        for t in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{t}"] = torch.cat(
                [sd[f"{p}self_attn.{q}_proj.{t}"] for q in "qkv"])
        for d, o in names.items():
            for t in ("weight", "bias"):
                out[f"transformer.resblocks.{i}.{o}.{t}"] = sd[f"{p}{d}.{t}"]
    g = torch.Generator().manual_seed(seed)
    last = len(layers)
    for k in [k for k in out if k.startswith("transformer.resblocks.0.")]:  # the block SD 2.x does not read
        out[k.replace(".0.", f".{last}.", 1)] = torch.randn(out[k].shape, generator=g)
    width = out["positional_embedding"].shape[1]
    out["text_projection"] = torch.randn(width, width, generator=g)
    out["logit_scale"] = torch.tensor(4.6052)
    return {"cond_stage_model.model." + k: v for k, v in out.items()}


def to_ldm(unet, controlnet, vae, text_encoder) -> dict:
    """The four modules as one state dict of the ControlNet repository's format (with the schedule's buffers)."""
    from scp_core.models import make_scheduler

    attn_up = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    lpb = unet.config.layers_per_block
    sd = {**controlnet_to_ldm(controlnet.state_dict(), lpb), **unet_to_ldm(unet.state_dict(), lambda b: b in attn_up,
                                                                            lpb),
          **vae_to_ldm(vae.state_dict()), **clip_to_open_clip(text_encoder.state_dict())}
    sched = make_scheduler("ddim")
    sd.update({"betas": sched.betas.clone(), "alphas_cumprod": sched.alphas_cumprod.clone()})
    return {k: v.detach() if v.is_meta else v.detach().clone().contiguous() for k, v in sd.items()}


def toolkit_statistics(folder: Path, name: str, shape=(4, 8, 16), labels=(*range(19), 255), seed: int = 0,
                       slots: int = 256) -> dict:
    """The three statistics files of ``noise_prior.py`` (``np.save`` of its dicts) for label values ``labels``;
    returns the dicts written. Joint cells of some present labels are left unseen (count 0, mean 0, std 0)."""
    rng = np.random.default_rng(seed)
    C, H, W = shape
    folder.mkdir(parents=True, exist_ok=True)
    spatial = {"mean": rng.normal(size=shape).astype(np.float32),
               "std": rng.uniform(0.5, 1.5, size=shape).astype(np.float32)}
    categorical = {int(v): {"mean": rng.normal(size=C).astype(np.float32),
                            "std": rng.uniform(0.5, 1.5, size=C).astype(np.float32)} for v in labels}
    joint = {"mean": np.zeros((slots, C, H, W), np.float32), "std": np.zeros((slots, C, H, W), np.float32),
             "count": np.zeros((slots, 1, H, W), np.float32)}
    owner = rng.choice(np.asarray(labels), size=(3, H, W))  # three "images": the labels at each position
    for img in owner:
        for v in np.unique(img):
            joint["count"][v, 0] += img == v
    seen = joint["count"] > 0
    joint["mean"][:] = np.where(seen, rng.normal(size=(slots, C, H, W)), 0)
    joint["std"][:] = np.where(seen, rng.uniform(0.2, 1.0, size=(slots, C, H, W)), 0)
    for suffix, obj in (("spatial", spatial), ("categorical", categorical), ("spatial_class", joint)):
        np.save(folder / f"{name}_{suffix}_mean_std.npy", obj, allow_pickle=True)
    return {"spatial": spatial, "categorical": categorical, "joint": joint}
