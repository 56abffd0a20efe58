"""Samplers: DDIM from step muT with any prior (Eq. 6), and the Fig. 3 mismatch sampler.

Which steps run. With ``num_inference_steps = N`` DDIM visits SD's "leading" timesteps
``t_i = (N - 1 - i) * (1000 // N) + 1``; for N = 20 that is 951, 901, ..., 51, 1. With
``mu`` the sampler keeps the *last* ``n = min(int(N * mu), N)`` of them, exactly diffusers'
img2img ``strength`` rule (a test checks it against ``get_timesteps``), noises the prior draw
to the first kept timestep ``t_start`` with Eq. 6 and denoises from there: ``n`` UNet (+ ControlNet)
evaluations, times two branches under classifier-free guidance. Examples for N = 20:

==========  =====  ========================  =====================================
mu          n      t_start                   kept timesteps
==========  =====  ========================  =====================================
1.0         20     951                       951, 901, ..., 1 (plain DDIM)
0.9         18     851                       851, 801, ..., 1
0.8         16     751                       751, 701, ..., 1
0.5         10     451                       451, 401, ..., 1
==========  =====  ========================  =====================================

The authors' release (ldm DDIM, timesteps 1, 51, ..., 951) noises the prior at t = 799 and
then runs the 17 of 20 steps at or below t = 801, i.e. it starts two steps of noise level
*above* the level it noised to. Our mu = 0.8 runs 16 steps from t = 751, and the sample is
noised to exactly the level the first step expects; the authors' setting corresponds to
about mu = 0.85 here (``int(20 * 0.85) = 17`` steps from t = 801).

Note that ``int`` truncates the float product: ``int(100 * 0.29) = 28``, because
``100 * 0.29 = 28.999999999999996``; that is diffusers' behaviour too, kept so that the same
``(N, mu)`` runs the same steps here and there.

With the normal prior the draw ``N(0, I)`` noised to any step is again ``N(0, I)``, so the
sampler draws it directly. The normal prior always runs at ``mu = 1`` (plain ControlNet):
``N(0, I)`` started at, say, t = 751 is neither plain ControlNet nor SCP-Diff, so
:func:`resolve_mu` refuses it. That rule lives in :func:`resolve_mu` alone, and only the pipeline
calls it: a caller passes what it asked for (or ``None``) and reads the ``mu`` and ``t_start`` that ran
from the pipeline's output.

This module owns the scheduler side of sampling: the mu rule, the timesteps, Eq. 6
(:func:`noise_to_step`), the one start function (:func:`start_latents`: a prior's draw, or real
latents for Fig. 3) and the DDIM loop.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch

from .priors import NormalPrior, Prior

DEFAULT_MU = 0.8  # the paper's (and the authors' release's) step fraction for the SCP priors


def _check_mu(mu) -> float:
    try:
        mu = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu must be a number in (0, 1], got {mu!r}") from None
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must lie in (0, 1], got {mu}; mu = 1 with the normal prior is plain ControlNet")
    return mu


def resolve_mu(prior: Prior | None, mu: float | None = None, default: float = DEFAULT_MU,
               real_start: bool = False) -> float:
    """The step fraction ``mu`` a start runs at: the one place that says "normal runs at mu = 1".

    Args:
        prior: the prior to sample from (``None`` means the normal prior).
        mu: what the caller asked for; ``None`` picks the default.
        default: the default ``mu`` of the SCP priors (spatial, categorical, joint).
        real_start: the start is real latents (the Fig. 3 sampler), not a prior's draw: ``mu`` is free
            there, the level the real image is noised to, and defaults to 1.

    Returns:
        ``1.0`` for the normal prior (plain ControlNet); ``mu`` (or ``default``) otherwise.

    Raises:
        ValueError: the normal prior with ``mu < 1``: ``N(0, I)`` started below step T is
            neither plain ControlNet nor SCP-Diff.
    """
    if mu is not None:
        mu = _check_mu(mu)
    if real_start:
        return 1.0 if mu is None else mu
    if prior is None or isinstance(prior, NormalPrior):
        if mu is not None and mu != 1.0:
            raise ValueError(f"the normal prior runs at mu = 1 (plain ControlNet), got mu = {mu}: N(0, I) started "
                             "below step T is neither plain ControlNet nor SCP-Diff. Pass mu=None (or 1.0), or a "
                             "spatial / categorical / joint prior for mu < 1")
        return 1.0
    return _check_mu(default if mu is None else mu)


def ddim_timesteps(scheduler, num_inference_steps: int, mu: float) -> torch.Tensor:
    """The DDIM timesteps that run for ``(mu, num_inference_steps)`` (see the module table).

    Args:
        scheduler: a diffusers ``DDIMScheduler`` (its ``set_timesteps`` is called).
        num_inference_steps: N, steps of the full schedule.
        mu: fraction of the schedule to run, in (0, 1].

    Returns:
        The last ``min(int(N * mu), N)`` timesteps (diffusers' img2img rule), descending; the
        first one is ``t_start``.
    """
    mu = _check_mu(mu)
    try:
        integral = int(num_inference_steps) == num_inference_steps
    except (TypeError, ValueError, OverflowError):
        integral = False
    if not integral or int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    num_inference_steps = int(num_inference_steps)
    scheduler.set_timesteps(int(num_inference_steps))
    n = min(int(num_inference_steps * mu), num_inference_steps)  # diffusers' img2img `strength` rule
    if n < 1:
        raise ValueError(f"mu = {mu} with {num_inference_steps} steps runs no step; raise mu or the steps")
    return scheduler.timesteps[num_inference_steps - n:]


def _expand(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    return embeds.expand(batch, *embeds.shape[1:]) if embeds.shape[0] == 1 else embeds


@torch.no_grad()
def ddim_denoise(latents: torch.Tensor, timesteps: torch.Tensor, *, unet, controlnet, scheduler,
                 control: torch.Tensor, prompt_embeds: torch.Tensor,
                 negative_prompt_embeds: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 controlnet_conditioning_scale: float = 1.0, eta: float = 0.0,
                 generator: torch.Generator | None = None,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None,
                 x0_callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) with a ControlNet, from ``latents`` at ``timesteps[0]``.

    Classifier-free guidance ``eps = eps_u + w (eps_c - eps_u)`` keeps the control map in
    the unconditional branch too (only the prompt is dropped), as ControlNet does.

    Args:
        latents: ``x_t`` at the first timestep, ``[B, C, h, w]``.
        control: control maps at image size, ``[B, 3, H, W]`` in [0, 1].
        callback: called as ``callback(i, t, latents)`` after every step.
        x0_callback: called as ``x0_callback(i, t, x0_hat)`` with the step's prediction of the clean
            latent, ``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)`` (the DDIM step's
            ``pred_original_sample``): what the model believes the image is at step ``t``.

    Returns:
        The denoised latents ``x_0``.
    """
    B = latents.shape[0]
    dtype = next(unet.parameters()).dtype
    cfg = guidance_scale is not None and guidance_scale > 1.0
    cond = _expand(prompt_embeds, B)
    if cfg:
        if negative_prompt_embeds is None:
            raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (the null prompt)")
        cond = torch.cat([_expand(negative_prompt_embeds, B), cond])
        control = torch.cat([control, control])
    cond, control = cond.to(latents.device, dtype), control.to(latents.device, dtype)
    with control_embedded_once(controlnet, control):
        for i, t in enumerate(timesteps):
            x_in = torch.cat([latents, latents]) if cfg else latents
            x_in = scheduler.scale_model_input(x_in, t).to(dtype)
            down, mid = controlnet(x_in, t, encoder_hidden_states=cond, controlnet_cond=control,
                                   conditioning_scale=controlnet_conditioning_scale, return_dict=False)
            eps = unet(x_in, t, encoder_hidden_states=cond, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid, return_dict=False)[0]
            if cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            step = scheduler.step(eps.to(latents.dtype), t, latents, eta=eta, generator=generator)
            latents = step.prev_sample
            if x0_callback is not None:
                x0_callback(i, int(t), step.pred_original_sample)
            if callback is not None:
                callback(i, int(t), latents)
    return latents


class _EmbeddedOnce(torch.nn.Module):
    """A ControlNet's conditioning embedding that returns its output for ``control`` computed once.

    The embedding (a stack of convolutions at image resolution) depends on the control map
    only, not on ``x_t`` or ``t``, yet diffusers' ``ControlNetModel.forward`` recomputes it at
    every step; at small latent sizes it is the larger part of a step. Any other input goes
    through the wrapped module as before.
    """

    def __init__(self, inner: torch.nn.Module, control: torch.Tensor):
        super().__init__()
        self.inner, self.control = inner, control
        self.value = inner(control)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        return self.value if conditioning is self.control else self.inner(conditioning)


@contextmanager
def control_embedded_once(controlnet, control: torch.Tensor):
    """Within the block, ``controlnet`` embeds ``control`` once instead of at every step.

    Bit-identical to the plain loop (the same module on the same input); a ControlNet without
    diffusers' ``controlnet_cond_embedding`` is left as it is, and so is a compiled one (swapping
    its submodule would make torch.compile trace it again at every call).
    """
    inner = getattr(controlnet, "controlnet_cond_embedding", None)
    if (not isinstance(inner, torch.nn.Module) or isinstance(inner, _EmbeddedOnce)
            or hasattr(controlnet, "_orig_mod")):
        yield
        return
    controlnet.controlnet_cond_embedding = _EmbeddedOnce(inner, control)
    try:
        yield
    finally:
        controlnet.controlnet_cond_embedding = inner


def noise_to_step(x: torch.Tensor, alpha_bar_t, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6: ``x_t = sqrt(alpha_bar_t) * x + sqrt(1 - alpha_bar_t) * eps``, ``eps ~ N(0, I)``.

    Args:
        x: a clean sample (a prior draw or a real latent ``x0``), ``[B, C, H, W]``.
        alpha_bar_t: cumulative alpha at the target step (float or 0-d tensor) in [0, 1].
        generator: source of ``eps`` (on ``x``'s device).
    """
    a = float(alpha_bar_t)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha_bar_t must lie in [0, 1], got {a}")
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return math.sqrt(a) * x + math.sqrt(1.0 - a) * eps


def start_latents(start: Prior | torch.Tensor, labels_latent: torch.Tensor | None, alpha_bar_start: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 6: the first DDIM step's ``x_{t_start}``, from a prior's draw or from real latents.

    Args:
        start: a prior (draw ``x ~ prior(M)``, then noise it) or real latents ``x0`` ``[B, C, h, w]`` (the
            Fig. 3 sampler: noise them, ``N(sqrt(alpha_bar) x0, (1 - alpha_bar) I)``).
        labels_latent: the label maps at latent size ``M`` (a prior's input; unused for real latents).
        alpha_bar_start: ``alpha_bar`` at ``t_start``.
        generator: the source of the draw and of the noise, in that order.

    The normal prior's draw is ``N(0, I)`` at every step, so it is returned as drawn.
    """
    if isinstance(start, torch.Tensor):
        return noise_to_step(start, alpha_bar_start, generator=generator)
    x = start.sample(labels_latent, generator=generator)
    if isinstance(start, NormalPrior):
        return x
    return noise_to_step(x, alpha_bar_start, generator=generator)


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x``, or a ``ValueError`` naming ``what`` when it holds NaN or Inf (a sampler never writes those)."""
    if not torch.isfinite(x).all():
        raise ValueError(f"sampling stopped: the {what} hold NaN or Inf values")
    return x
