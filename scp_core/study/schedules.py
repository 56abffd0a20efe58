"""The noise schedule's signal leak, and what zero terminal SNR changes (notebook 09).

SD's scaled-linear schedule never reaches pure noise: at the last training step
``sqrt(alpha_bar(999)) = 0.068`` of the image is still in ``x_t`` (Eq. 6), and 20 DDIM steps
with SD's "leading" spacing start at ``t = 951`` (0.090). The network learns to read the
image's low frequencies, its overall brightness first, from that leak; a start from
``N(0, I)`` has no leak, so it asks for an image of average brightness. Zero terminal SNR
(Lin et al., WACV 2024; :data:`scp_core.models.ZERO_SNR_SCHEDULER_CONFIG`) rescales the betas
so that ``alpha_bar(T) = 0``: training at ``T`` then sees pure noise, like the sampler's start.

:func:`oracle_spread` shows the mechanism without any trained model: for Gaussian data the
exact network is known in closed form, so DDIM's output spread depends only on the schedule
and the steps.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..models import SCHEDULES, make_scheduler
from ..sampling import ddim_denoise, ddim_timesteps


def leak_table(steps: int = 20) -> pd.DataFrame:
    """Per schedule: ``sqrt(alpha_bar)`` at the last training step and at the first of ``steps`` DDIM steps."""
    rows = []
    for name in SCHEDULES:
        sched = make_scheduler("ddim", name)
        t0 = int(ddim_timesteps(sched, steps, 1.0)[0])
        rows.append({"schedule": name, "prediction": sched.config.prediction_type,
                     "sqrt(alpha_bar) at t = 999": float(sched.alphas_cumprod[-1].sqrt()),
                     "first DDIM step": t0, "sqrt(alpha_bar) there": float(sched.alphas_cumprod[t0].sqrt())})
    return pd.DataFrame(rows)


class GaussianOracle(torch.nn.Module):
    """The exact network for data ``x0 ~ N(0, std^2)`` in every coordinate.

    With ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` (Eq. 6), ``Var x_t = ab std^2 + 1 - ab`` and
    ``E[x0 | x_t] = sqrt(ab) std^2 x_t / Var x_t``, ``E[eps | x_t] = sqrt(1 - ab) x_t / Var x_t``;
    it returns ``E[eps | x_t]`` or ``E[v | x_t] = sqrt(ab) E[eps | x_t] - sqrt(1 - ab) E[x0 | x_t]``
    as the scheduler's ``prediction_type`` asks. It takes a UNet's call signature.
    """

    def __init__(self, scheduler, std: float):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the sampler reads the dtype off a parameter
        self.scheduler, self.std = scheduler, float(std)

    def forward(self, x, t, encoder_hidden_states=None, down_block_additional_residuals=None,
                mid_block_additional_residual=None, return_dict=False):
        ab = self.scheduler.alphas_cumprod[int(t)].double()
        x = x.double()
        var = ab * self.std ** 2 + 1 - ab
        x0 = ab.sqrt() * self.std ** 2 / var * x
        eps = (1 - ab).sqrt() / var * x
        out = eps if self.scheduler.config.prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return (out.float(),)


class _NoControl(torch.nn.Module):
    """A ControlNet stand-in that adds nothing."""

    def forward(self, *args, **kwargs):
        return None, None


def oracle_spread(schedule: str, std: float, steps: int = 20, n: int = 20000, seed: int = 0) -> float:
    """``std(DDIM output) / std`` for Gaussian data of ``std``, the exact network, a start from ``N(0, I)``
    at ``mu = 1`` (1 would be right; the gap is the start's mismatch plus DDIM's discretisation)."""
    sched = make_scheduler("ddim", schedule)
    x = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(seed))
    out = ddim_denoise(x, ddim_timesteps(sched, steps, 1.0), unet=GaussianOracle(sched, std), controlnet=_NoControl(),
                       scheduler=sched, control=torch.zeros(n, 3, 1, 1), prompt_embeds=torch.zeros(1, 1, 1))
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"DDIM under the {schedule!r} schedule returned non-finite values")
    return float(out.std() / std)
