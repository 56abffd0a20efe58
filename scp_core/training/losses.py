"""What each stage minimises: the VAE loss, the diffusion (epsilon or v) loss of the base UNet and of
ControlNet, and what they are computed from (cached latents, the scale factor, the DDPM schedule).

Every loss is a factory returning ``loss_fn(model, step, indices, generator)`` for
:func:`scp_core.training.loop.fit`; all of its random draws come from ``generator``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..data import to_float


def vae_loss_fn(images: torch.Tensor, kl_weight: float = 1e-6):
    """Reconstruction (L1 + L2) plus a small KL term, on uint8 images ``[N, H, W, 3]``."""
    def loss_fn(vae, step, idx, gen):
        x = to_float(images[np.sort(idx)])
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
            d = vae.encode(to_float(images[s:s + batch_size]).to(dev)).latent_dist
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


def make_ddpm_like(scheduler):
    """A DDPM scheduler with the same betas as ``scheduler`` (for ``add_noise`` in training)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
            "rescale_betas_zero_snr", "timestep_spacing")
    return DDPMScheduler(**{k: scheduler.config[k] for k in keys if k in scheduler.config})


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


def controlnet_loss_fn(cache: LatentCache, controls: Callable[[np.ndarray], torch.Tensor], scheduler,
                       cond: torch.Tensor, uncond: torch.Tensor, p_uncond: float = 0.1):
    """ControlNet fine-tuning loss: epsilon (or v) MSE with the control map; the prompt (not the control) drops.

    ``model(x_t, t, c, control)`` is a :class:`scp_core.training.finetune.ControlNetWithUNet`.
    """
    def loss_fn(model, step, idx, gen):
        dev = next(model.parameters()).device
        control = controls(np.sort(idx)).to(dev)
        return eps_mse(lambda xt, t, c: model(xt, t, c, control), cache.sample(idx, gen), scheduler, gen,
                       cond, uncond, p_uncond, dev)
    return loss_fn


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
            noise = torch.randn(post.mean.shape, generator=gen).to(vae_dev)
            x0 = (post.mean + post.std * noise).float() * pipe.scale_factor
        control = pipe.control(labels).to(dev, pipe.dtype)
        return eps_mse(lambda xt, t, c: model(xt.to(pipe.dtype), t, c.to(pipe.dtype), control), x0.cpu(), ddpm, gen,
                       pipe.prompt_embeds, pipe.negative_prompt_embeds, p_uncond, dev)
    return loss_fn
