"""ControlNet fine-tuning for any base (toy or SD 2.1), with accelerate.

It follows the authors' recipe by default: AdamW, lr 1e-5 for SD (the toy uses a larger one),
the dataset's fixed prompt, the colour-coded label map as control, and ``unlock=True`` (their
``sd_locked=False``: the UNet's up blocks and output layers train with the ControlNet).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .losses import dataset_controlnet_loss_fn
from .loop import TrainConfig, fit, make_accelerator

DECODER_PREFIXES = ("up_blocks.", "conv_norm_out.", "conv_out.")


def unlock_decoder(unet: torch.nn.Module) -> list[str]:
    """Make the UNet decoder trainable (the authors' ``sd_locked=False``); returns the names."""
    names = []
    for name, p in unet.named_parameters():
        trainable = name.startswith(DECODER_PREFIXES)
        p.requires_grad_(trainable)
        if trainable:
            names.append(name)
    return names


class ControlNetWithUNet(torch.nn.Module):
    """ControlNet plus its base UNet in one module, so one optimizer sees both (decoder unlock)."""

    def __init__(self, controlnet, unet):
        super().__init__()
        self.controlnet, self.unet = controlnet, unet

    def enable_gradient_checkpointing(self) -> None:
        """Activation checkpointing in both halves (recompute blocks in the backward pass)."""
        self.controlnet.enable_gradient_checkpointing()
        self.unet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.controlnet.disable_gradient_checkpointing()
        self.unet.disable_gradient_checkpointing()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.controlnet.is_gradient_checkpointing and self.unet.is_gradient_checkpointing

    def forward(self, xt, t, cond, control, conditioning_scale: float = 1.0):
        down, mid = self.controlnet(xt, t, encoder_hidden_states=cond, controlnet_cond=control,
                                    conditioning_scale=conditioning_scale, return_dict=False)
        return self.unet(xt, t, encoder_hidden_states=cond, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample


def prepare_controlnet_training(controlnet, unet, unlock: bool = True) -> tuple[ControlNetWithUNet, list[str]]:
    """Freeze the UNet except (optionally) its decoder; the ControlNet trains whole."""
    for p in unet.parameters():
        p.requires_grad_(False)
    names = unlock_decoder(unet) if unlock else []
    for p in controlnet.parameters():
        p.requires_grad_(True)
    return ControlNetWithUNet(controlnet, unet), names


def place_for_training(pipe, device, trainable_dtype: torch.dtype = torch.float32) -> torch.dtype:
    """Put every part of ``pipe`` that fine-tuning touches on ``device``; returns the previous weight dtype.

    The ControlNet and UNet (trained) become ``trainable_dtype`` (float32 master weights;
    half-precision compute comes from mixed precision), the frozen VAE keeps its dtype, and
    the prompt embeddings follow, so nothing is left on the device the pipeline was loaded on.
    """
    device = torch.device(device)
    old_dtype = pipe.dtype
    for m in (pipe.controlnet, pipe.unet):
        m.to(device) if m.dtype == trainable_dtype else m.to(device=device, dtype=trainable_dtype)
    pipe.vae.to(device)
    pipe.prompt_embeds = pipe.prompt_embeds.to(device=device, dtype=trainable_dtype)
    pipe.negative_prompt_embeds = pipe.negative_prompt_embeds.to(device=device, dtype=trainable_dtype)
    return old_dtype


def finetune_controlnet(pipe, dataset, cfg: TrainConfig, out_dir: str | Path, resume: str | None = None,
                        unlock: bool = True, save_to: str | Path | None = None, stop_after: int | None = None,
                        accelerator=None, device: str | None = None) -> dict:
    """Fine-tune ``pipe.controlnet`` (and, with ``unlock``, the UNet decoder) on a dataset.

    Works for the toy stack and for SD 2.1 alike; run it under ``accelerate launch`` for
    several processes or GPUs (each process takes its slice of every global batch).
    Whatever device the pipeline was loaded on, the whole pipeline (frozen VAE and prompt
    embeddings included) moves to the run's device (``accelerator.device``) and stays there;
    the trained modules train as float32 weights and return to the pipeline's previous
    dtype after saving (the saved pipeline holds the float32 weights).

    Args:
        pipe: an ``SCPDiffPipeline`` (its VAE stays frozen).
        dataset: items ``{"image", "labels"}`` at the pipeline's image size.
        cfg: hyper-parameters (the paper: AdamW, lr 1e-5 for SD); ``cfg.mixed_precision``
            and ``cfg.gradient_checkpointing`` apply to ControlNet and UNet alike.
        out_dir: checkpoints and the loss log.
        unlock: train the UNet's up blocks and output layers too (authors' ``sd_locked=False``).
        save_to: write the fine-tuned pipeline here (main process only).
        accelerator, device: the run's accelerator, or the device to make one for (see
            :func:`scp_core.training.loop.make_accelerator`).
    """
    accelerator = accelerator or make_accelerator(cfg.mixed_precision, device)
    pipe.vae.requires_grad_(False)
    old_dtype = place_for_training(pipe, accelerator.device)
    model, unlocked = prepare_controlnet_training(pipe.controlnet, pipe.unet, unlock=unlock)
    r = fit(model, dataset_controlnet_loss_fn(pipe, dataset), len(dataset), cfg, out_dir, resume=resume,
            desc="ControlNet fine-tuning", stop_after=stop_after, accelerator=accelerator)
    model = r["model"]
    if cfg.gradient_checkpointing:
        model.disable_gradient_checkpointing()
    pipe.controlnet, pipe.unet = model.controlnet.eval(), model.unet.eval()
    r["unlocked"] = unlocked
    if save_to is not None and r["accelerator"].is_main_process:
        pipe.save_pretrained(save_to)
    r["accelerator"].wait_for_everyone()
    if old_dtype != torch.float32:  # back to the dtype it sampled in (the VAE never changed)
        place_for_training(pipe, accelerator.device, trainable_dtype=old_dtype)
    return r
