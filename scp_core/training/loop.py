"""Training: the toy VAE and base UNet, and ControlNet fine-tuning for any base (with accelerate).

One loop, :func:`fit`, serves every stage. It is deterministic and resumable:

* the batch of global step ``s`` is a function of ``(seed, s)`` alone (a seeded
  permutation per epoch), and each process takes its slice of that global batch;
* the noise and timesteps of step ``s`` come from a generator seeded with ``(seed, s)``;
* checkpoints (``accelerator.save_state``: weights, optimizer, LR schedule) are written to
  a temporary folder and renamed, every ``checkpoint_every`` steps; ``resume="latest"``
  continues from the newest one with the same data order and LR schedule, so the next
  step's loss equals that of a run that never stopped.

ControlNet fine-tuning follows the authors' recipe by default: AdamW, lr 1e-5 for SD
(the toy uses a larger one), the dataset's fixed prompt, the colour-coded label map as
control, and ``unlock_decoder=True`` (their ``sd_locked=False``: the UNet's up blocks and
output layers train with the ControlNet).
"""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import _tv_compat  # noqa: F401
from ..io import atomic_path, write_json
from ..models import fresh_accelerate_state, run_on_cpu

DECODER_PREFIXES = ("up_blocks.", "conv_norm_out.", "conv_out.")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage.

    Attributes:
        steps: optimizer steps. batch_size: global batch (split across processes).
        lr: AdamW learning rate (constant after ``warmup`` linear steps).
        checkpoint_every: steps between checkpoints (0: only at the end).
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` (GPU only).
        gradient_checkpointing: trade compute for memory (GPU-size models).
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the global batch of ``step``: epoch ``e`` walks a permutation seeded by ``(seed, e)``."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch_size:
        perm = np.resize(perm, batch_size)
    return perm[k * batch_size:(k + 1) * batch_size]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one step's random draws (noise, timesteps, dropout)."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, rank, 7]).integers(2**62)))


def unlock_decoder(unet: torch.nn.Module) -> list[str]:
    """Make the UNet decoder trainable (the authors' ``sd_locked=False``); returns the names."""
    names = []
    for name, p in unet.named_parameters():
        trainable = name.startswith(DECODER_PREFIXES)
        p.requires_grad_(trainable)
        if trainable:
            names.append(name)
    return names


def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = [(int(m.group(1)), p) for p in out_dir.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "step.json").is_file()]
    return max(ckpts)[1] if ckpts else None


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that no kill can leave a partial ``checkpoint-N``: rename, then remove."""
    doomed = path.with_name(f".{path.name}.del")
    path.rename(doomed)
    shutil.rmtree(doomed)


def _sweep_partial(out_dir: Path) -> None:
    """Remove what an interrupted save or prune left behind (hidden ``.checkpoint-*`` folders)."""
    for p in out_dir.glob(".checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


def _save_checkpoint(accelerator, out_dir: Path, step: int, keep: int) -> None:
    if accelerator.is_main_process:
        tmp = out_dir / f".checkpoint-{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    tmp = out_dir / f".checkpoint-{step}.tmp"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "step.json", {"step": step})
        final = out_dir / f"checkpoint-{step}"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # a checkpoint is visible only once complete
        old = sorted((int(p.name.split("-")[1]), p) for p in out_dir.glob("checkpoint-*") if p.name[11:].isdigit())
        for _, p in old[:-keep] if keep > 0 else []:
            _remove_checkpoint(p)
    accelerator.wait_for_everyone()


def make_accelerator(mixed_precision: str = "no", device: str | None = None):
    """The ``accelerate.Accelerator`` of a training run.

    Args:
        mixed_precision: ``"no"``, ``"fp16"`` (CUDA only) or ``"bf16"``.
        device: ``None`` / ``"auto"``: accelerate's device for this process (its GPU under
            ``accelerate launch`` where GPUs exist, else the CPU), unless ``SCP_DEVICE=cpu``;
            ``"cpu"``; ``"cuda"`` (refused where no GPU exists).

    In a single process, a second run with another ``mixed_precision`` gets a fresh
    accelerate state (accelerate otherwise refuses to change it).
    """
    from accelerate import Accelerator

    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    cpu = run_on_cpu(device)
    if cpu and mixed_precision == "fp16":
        raise ValueError("mixed_precision='fp16' needs a GPU (accelerate would silently train in float32 on the "
                         "CPU); use 'bf16' or 'no' there")
    fresh_accelerate_state(cpu, mixed_precision)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, int, np.ndarray, torch.Generator], torch.Tensor],
        n_items: int, cfg: TrainConfig, out_dir: str | Path, resume: str | None = None,
        accelerator=None, desc: str = "train", stop_after: int | None = None, device: str | None = None) -> dict:
    """The shared training loop (AdamW, warmup then constant LR, grad clipping, checkpoints).

    Args:
        model: a module holding every trainable parameter (``requires_grad`` set).
        loss_fn: ``loss_fn(model, step, indices, generator) -> loss`` for this process's
            slice of the global batch.
        n_items: size of the training set (for the batch order).
        cfg: hyper-parameters.
        out_dir: checkpoints, ``loss.csv`` and ``loss.png`` go here.
        resume: ``"latest"`` or a checkpoint folder.
        stop_after: stop (without finishing) after this global step; for tests that
            simulate an interrupted run.
        accelerator: an ``accelerate.Accelerator`` to use (default: :func:`make_accelerator`).
        device: ``None`` / ``"auto"`` (accelerate's choice: this process's GPU where there is
            one, else the CPU; ``SCP_DEVICE=cpu`` pins the CPU), ``"cpu"`` or ``"cuda"``.

    Returns:
        dict with ``steps``, ``wall_s``, ``final_loss``, ``losses`` (list of floats), the
        ``accelerator`` and the unwrapped ``model`` (on ``accelerator.device``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = accelerator or make_accelerator(cfg.mixed_precision, device)
    if cfg.gradient_checkpointing:
        if not hasattr(model, "enable_gradient_checkpointing"):
            raise ValueError(f"gradient_checkpointing=True, but {type(model).__name__} has no "
                             "enable_gradient_checkpointing(); train without it or wrap the model in a module that has it")
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter of the model requires grad")
    half = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if half:
        raise ValueError(f"the trainable parameters are {', '.join(half)}: train float32 weights (cast the model "
                         "with .float()) and pick half-precision compute with mixed_precision='fp16' or 'bf16'")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0)
    model, opt, sched = accelerator.prepare(model, opt, sched)

    start = 0
    log_path = out_dir / "loss.csv"
    if accelerator.is_main_process:
        _sweep_partial(out_dir)
    accelerator.wait_for_everyone()
    if resume:
        ckpt = _latest_checkpoint(out_dir) if resume == "latest" else Path(resume)
        if ckpt is not None:
            accelerator.load_state(str(ckpt))
            start = json.loads((ckpt / "step.json").read_text())["step"]
            accelerator.print(f"resumed from {ckpt} at step {start}")
    losses: list[tuple[int, float]] = []
    if start and log_path.exists():
        with open(log_path) as f:
            losses = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if int(r["step"]) <= start]

    world, rank = accelerator.num_processes, accelerator.process_index
    t0 = time.time()
    model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), desc=desc, disable=not accelerator.is_main_process, initial=start, total=cfg.steps)
    for step in bar:
        idx = batch_indices(step, n_items, cfg.batch_size, cfg.seed)[rank::world]
        with accelerator.autocast():
            loss = loss_fn(model, step, idx, step_generator(cfg.seed, step, rank))
        accelerator.backward(loss)
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        mean_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss became {mean_loss} at step {step}; lower the learning rate")
        losses.append((step + 1, mean_loss))
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_checkpoint(accelerator, out_dir, done, cfg.keep_checkpoints)
            if accelerator.is_main_process:
                _write_log(log_path, losses)
    wall = time.time() - t0
    if accelerator.is_main_process:
        _write_log(log_path, losses)
        plot_losses(log_path, out_dir / "loss.png", title=desc)
    model.eval()
    return {"steps": end, "wall_s": wall, "final_loss": losses[-1][1] if losses else float("nan"),
            "losses": [l for _, l in losses], "accelerator": accelerator,
            "model": accelerator.unwrap_model(model)}


def _write_log(path: Path, losses) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows(losses)


def plot_losses(csv_path: Path, png_path: Path, title: str = "") -> None:
    """Loss curve (raw and a moving average) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    if df.empty:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(df["step"], df["loss"], alpha=0.3, lw=0.8, label="loss")
    ax.plot(df["step"], df["loss"].rolling(max(len(df) // 50, 1), min_periods=1).mean(), lw=1.5, label="moving avg")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------- stage losses
def vae_loss_fn(images: torch.Tensor, kl_weight: float = 1e-6):
    """Reconstruction (L1 + L2) plus a small KL term, on uint8 images ``[N, H, W, 3]``."""
    def loss_fn(vae, step, idx, gen):
        x = torch.as_tensor(images[np.sort(idx)]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        x = x.to(next(vae.parameters()).device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(x.device)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
    return loss_fn


class LatentCache:
    """VAE posterior moments of a whole image set, so diffusion training samples ``x0`` cheaply."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scale_factor: float):
        self.mean, self.std, self.scale_factor = mean, std, scale_factor

    @classmethod
    @torch.no_grad()
    def build(cls, vae, images: np.ndarray, scale_factor: float, batch_size: int = 64) -> "LatentCache":
        dev = next(vae.parameters()).device
        means, stds = [], []
        for s in tqdm(range(0, len(images), batch_size), desc="encoding latents", leave=False):
            x = torch.as_tensor(images[s:s + batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            d = vae.encode(x.to(dev)).latent_dist
            means.append(d.mean.cpu())
            stds.append(d.std.cpu())
        return cls(torch.cat(means), torch.cat(stds), scale_factor)

    def sample(self, idx, gen: torch.Generator) -> torch.Tensor:
        idx = torch.as_tensor(np.sort(idx))
        m, s = self.mean[idx], self.std[idx]
        return (m + s * torch.randn(m.shape, generator=gen)) * self.scale_factor


def fit_scale_factor(cache_mean: torch.Tensor) -> float:
    """LDM's rescaling: ``1 / std`` of the latents, so that scaled latents have unit variance."""
    return float(1.0 / cache_mean.float().std())


def _noisy(x0, scheduler, gen):
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    return scheduler.add_noise(x0, eps, t), eps, t


def prediction_target(scheduler, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network learns to output: ``eps`` (epsilon prediction, SD's), or for a
    v-prediction schedule ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` (Salimans & Ho 2022)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, eps, t)
    raise ValueError(f"prediction_type {kind!r} is not supported; use 'epsilon' or 'v_prediction'")


def eps_mse(predict: Callable, x0: torch.Tensor, scheduler, gen: torch.Generator, cond: torch.Tensor,
            uncond: torch.Tensor, p_uncond: float, device) -> torch.Tensor:
    """The DDPM loss ``|eps - eps_theta(x_t, t, c)|^2`` with ``x_t`` from Eq. 6 and prompt dropout.

    ``t``, ``eps`` and the dropout mask (the prompt becomes ``uncond`` with probability
    ``p_uncond``, which is what classifier-free guidance needs) are drawn from ``gen``.
    ``predict(x_t, t, c)`` returns ``eps_theta`` (``v_theta`` for a v-prediction schedule,
    :func:`prediction_target`).
    """
    xt, eps, t = _noisy(x0, scheduler, gen)
    drop = torch.rand(x0.shape[0], generator=gen) < p_uncond
    c = torch.where(drop[:, None, None], uncond.cpu(), cond.cpu()).to(device)
    target = prediction_target(scheduler, x0, eps, t)
    return F.mse_loss(predict(xt.to(device), t.to(device), c).float(), target.to(device))


def unet_loss_fn(cache: LatentCache, scheduler, cond: torch.Tensor, uncond: torch.Tensor, p_uncond: float = 0.1):
    """Epsilon- (or v-) prediction MSE of the base UNet on cached latents, with prompt dropout for CFG."""
    def loss_fn(unet, step, idx, gen):
        dev = next(unet.parameters()).device
        return eps_mse(lambda xt, t, c: unet(xt, t, encoder_hidden_states=c).sample,
                       cache.sample(idx, gen), scheduler, gen, cond, uncond, p_uncond, dev)
    return loss_fn


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


def controlnet_loss_fn(cache: LatentCache, controls: Callable[[np.ndarray], torch.Tensor], scheduler,
                       cond: torch.Tensor, uncond: torch.Tensor, p_uncond: float = 0.1):
    """ControlNet fine-tuning loss: epsilon (or v) MSE with the control map; the prompt (not the control) drops."""
    def loss_fn(model, step, idx, gen):
        dev = next(model.parameters()).device
        control = controls(np.sort(idx)).to(dev)
        return eps_mse(lambda xt, t, c: model(xt, t, c, control), cache.sample(idx, gen), scheduler, gen,
                       cond, uncond, p_uncond, dev)
    return loss_fn


def prepare_controlnet_training(controlnet, unet, unlock: bool = True) -> tuple[ControlNetWithUNet, list[str]]:
    """Freeze the UNet except (optionally) its decoder; the ControlNet trains whole."""
    for p in unet.parameters():
        p.requires_grad_(False)
    names = unlock_decoder(unet) if unlock else []
    for p in controlnet.parameters():
        p.requires_grad_(True)
    return ControlNetWithUNet(controlnet, unet), names


# ---------------------------------------------------------------------------- any base, any dataset
def dataset_controlnet_loss_fn(pipe, dataset, p_uncond: float = 0.1):
    """ControlNet loss reading items from a dataset and encoding them with the frozen VAE."""
    ddpm = make_ddpm_like(pipe.scheduler)

    def loss_fn(model, step, idx, gen):
        dev = next(model.parameters()).device
        items = [dataset[int(i)] for i in np.sort(idx)]
        images = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["labels"] for it in items])
        with torch.no_grad():  # the frozen VAE encodes where it lives (finetune_controlnet puts it on dev)
            vae_dev = next(pipe.vae.parameters()).device
            post = pipe.vae.encode(images.to(vae_dev, pipe.vae.dtype)).latent_dist
            x0 = (post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(vae_dev)).float() * pipe.scale_factor
        control = pipe.control(labels).to(dev, pipe.dtype)
        return eps_mse(lambda xt, t, c: model(xt.to(pipe.dtype), t, c.to(pipe.dtype), control), x0.cpu(), ddpm, gen,
                       pipe.prompt_embeds, pipe.negative_prompt_embeds, p_uncond, dev)
    return loss_fn


def make_ddpm_like(scheduler):
    """A DDPM scheduler with the same betas as ``scheduler`` (for ``add_noise`` in training)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
            "rescale_betas_zero_snr", "timestep_spacing")
    return DDPMScheduler(**{k: scheduler.config[k] for k in keys if k in scheduler.config})


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
            :func:`make_accelerator`).
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
