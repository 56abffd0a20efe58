"""What the toy, toy-gv and real-image stacks share: the stage runner, the ControlNet stage, the
pipeline a stack writes, and the autoencoder's round-trip PSNR.

A *stage* lives in one folder of the run (``work/unet``, ``work/controlnet``, ...): :func:`.loop.fit`
writes its checkpoints and loss log there, :func:`run_stage` its ``facts.json`` (steps, wall time,
final loss, extras) and, for a module that later stages load, ``final/`` (diffusers' folder).
A stage counts as finished when ``final/config.json`` exists and its facts record the recipe's steps.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data import control_map, to_float
from ..io import follow_umask, portable, write_json
from ..models import controlnet_from_unet, make_scheduler
from ..pipeline import SCPDiffPipeline
from ..pipeline_folder import HASHES_KEY, MODULES_NAME, put_in_place, weight_hashes
from .finetune import prepare_controlnet_training
from .loop import TrainConfig, fit
from .losses import LatentCache, controlnet_loss_fn


# ---------------------------------------------------------------------------- stages
def read_facts(stage_dir: str | Path) -> dict:
    """``stage_dir/facts.json`` (``{}`` when the stage never finished)."""
    path = Path(stage_dir) / "facts.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_facts(stage_dir: str | Path, r: dict, **extra) -> dict:
    """Write what :func:`.loop.fit` returned (steps, wall time, final loss) and ``extra`` to ``facts.json``."""
    write_json(Path(stage_dir) / "facts.json", {"steps": r["steps"], "wall_s": round(r["wall_s"], 1),
                                                "final_loss": r["final_loss"], **extra})
    return read_facts(stage_dir)


def stage_done(stage_dir: str | Path, steps: int | None = None) -> bool:
    """The stage saved its module (with ``steps`` steps, when given: more steps in the recipe continue it)."""
    if not (Path(stage_dir) / "final" / "config.json").is_file():
        return False
    return steps is None or read_facts(stage_dir).get("steps") == steps


def save_final(module, final: Path) -> None:
    """``module.save_pretrained(final)``: the stage's product that later stages load (with the umask's
    permissions: diffusers' safetensors files are 0600)."""
    module.save_pretrained(final)
    follow_umask(final)


def run_stage(stage_dir: str | Path, train: Callable[[], tuple[Any, dict, dict]], *, reuse_from: Path | None = None,
              steps: int | None = None, load: Callable[[Path], Any] | None = None,
              save: Callable[[Any, Path], None] | None = save_final) -> tuple[Any, dict, bool]:
    """Reuse a finished stage, or train it and record it.

    Args:
        stage_dir: the stage's folder in this run.
        train: trains the stage (resuming from its checkpoints as the caller asked) and returns
            ``(module, fit result, extra facts)``.
        reuse_from: a stage folder to reuse when :func:`stage_done` (with ``steps``) there;
            ``None``: always train.
        load: ``load(reuse_from / "final")`` -> the module of a reused stage.
        save: ``save(module, stage_dir / "final")`` after training; ``None``: the stage keeps
            only its facts (its module goes into the pipeline).

    Returns:
        ``(module, facts, trained)``. ``final/`` is removed before the new facts are written, so
        an interrupted save never leaves a stage that looks finished.
    """
    if reuse_from is not None and stage_done(reuse_from, steps):
        return load(Path(reuse_from) / "final"), read_facts(reuse_from), False
    module, r, extra = train()
    final = Path(stage_dir) / "final"
    if save is not None and final.exists():
        shutil.rmtree(final)
    facts = write_facts(stage_dir, r, **extra)
    if save is not None:
        save(module, final)
    return module, facts, True


def controlnet_stage(unet, cache: LatentCache, labels: np.ndarray, ds, scheduler, cond: torch.Tensor,
                     uncond: torch.Tensor, cfg: TrainConfig, stage_dir: Path, resume: str | None, desc: str,
                     control_channels: tuple | None = None, unlock: bool = True,
                     device: str | None = None) -> tuple[Any, dict, dict]:
    """Fine-tune a ControlNet made from ``unet`` with the UNet decoder unlocked (the authors' ``sd_locked=False``;
    ``unlock=False``: the UNet stays frozen whole, as in the original ControlNet).

    ``labels[i]`` is the label map of ``cache``'s item ``i``; the control is its colour-coded map
    in ``ds``'s palette. Returns what :func:`run_stage` expects of ``train``; the module is the
    :class:`~scp_core.training.finetune.ControlNetWithUNet`.
    """
    controlnet = controlnet_from_unet(unet, conditioning_embedding_out_channels=control_channels)
    controls = lambda idx: control_map(torch.as_tensor(labels[idx]).long(), ds.palette,  # noqa: E731
                                       ignore_index=ds.ignore_index)
    model, unlocked = prepare_controlnet_training(controlnet, unet, unlock=unlock)
    r = fit(model, controlnet_loss_fn(cache, controls, scheduler, cond, uncond), len(labels), cfg, stage_dir,
            resume=resume, desc=desc, device=device)
    return r["model"], r, {"unlocked_unet_tensors": len(unlocked)}


# ---------------------------------------------------------------------------- the pipeline
def assemble_pipeline(vae, unet, controlnet, cond: torch.Tensor, uncond: torch.Tensor, ds, scale_factor: float,
                      info: dict, schedule: str = "sd") -> SCPDiffPipeline:
    """The trained stack as a pipeline (frozen, in eval mode) for ``ds``'s label set, sampled with DDIM."""
    return SCPDiffPipeline(vae, unet.eval().requires_grad_(False), controlnet.eval().requires_grad_(False),
                           make_scheduler("ddim", schedule), cond, uncond, num_classes=ds.num_classes,
                           palette=ds.palette, image_size=ds.size, ignore_index=ds.ignore_index,
                           scale_factor=scale_factor, info=info)


def save_modules(modules: dict, out: Path) -> None:
    """Write ``{name: diffusers module}`` into ``out/<name>`` with float16 weights, as one unit: built in a
    temporary folder beside ``out`` (with ``modules.json``: the sha256 of every weight file) and renamed
    into place, so ``out`` is never half-written. The modules stay float32."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, m in modules.items():
            m.to(dtype=torch.float16)
            try:
                m.save_pretrained(tmp / name)
            finally:
                m.to(dtype=torch.float32)
        for cfg in tmp.glob("*/config.json"):  # diffusers records where a module was loaded from
            cfg.write_text(portable(cfg.read_text()))
        write_json(tmp / MODULES_NAME, {HASHES_KEY: weight_hashes(tmp)})
        put_in_place(follow_umask(tmp), out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_half(pipe: SCPDiffPipeline, out: Path) -> None:
    """Save with float16 weights (half the size in git), keeping the pipeline in float32."""
    pipe.to(dtype=torch.float16)
    try:
        pipe.save_pretrained(out)
    finally:
        pipe.to(dtype=torch.float32)


# ---------------------------------------------------------------------------- autoencoder quality
def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


@torch.no_grad()
def reconstruction_psnr(vae, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Per-image PSNR (dB) of uint8 images ``[N, H, W, 3]`` through the autoencoder (posterior mean)."""
    vals = []
    for s in range(0, len(images), batch_size):
        x = to_float(images[s:s + batch_size]).to(next(vae.parameters()).device)  # wherever training left it
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        vals.append(psnr(rec.float(), x).cpu())
    return torch.cat(vals)
