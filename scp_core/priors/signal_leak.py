"""The signal-leak initialisation of Everaert et al. (WACV 2024) as a prior (``signal-leak``).

The low-frequency part of the latents (average-pooled to a small grid) gets a full-covariance
Gaussian, the rest per-channel white noise of the measured variance. It ignores the label map.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .files import prior_kind
from .gaussian import GaussianAccumulator, mvn_draw
from .scp import Prior

__all__ = ["SignalLeakAccumulator", "SignalLeakPrior"]


def _low(latents: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return F.adaptive_avg_pool2d(latents, grid)


def _up(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


class SignalLeakAccumulator:
    """One pass for :class:`SignalLeakPrior`: the Gaussian of the pooled latents, the variance of the rest."""

    def __init__(self, latent_shape: Sequence[int], grid: Sequence[int] = (4, 4), device="cpu"):
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.grid = (int(grid[0]), int(grid[1]))
        C = self.latent_shape[0]
        self.low = GaussianAccumulator(C * self.grid[0] * self.grid[1], device)
        self.high = GaussianAccumulator(C, device)  # per-channel moments of the high-frequency tokens
        self.num_images = 0

    @torch.no_grad()
    def update(self, latents: torch.Tensor, labels=None) -> "SignalLeakAccumulator":
        x = latents.double()
        low = _low(x, self.grid)
        self.low.update(low.flatten(1))
        high = x - _up(low, self.latent_shape[1:])
        self.high.update(high.permute(0, 2, 3, 1).reshape(-1, x.shape[1]))
        self.num_images += len(x)
        return self

    def merge(self, other: "SignalLeakAccumulator") -> "SignalLeakAccumulator":
        self.low.merge(other.low)
        self.high.merge(other.high)
        self.num_images += other.num_images
        return self

    def prior(self, num_classes: int | None = None, provenance: dict | None = None) -> "SignalLeakPrior":
        return SignalLeakPrior(low_mean=self.low.mean.float(), low_cov=self.low.cov().float(),
                               high_std=torch.diagonal(self.high.cov()).sqrt().float(), grid=self.grid,
                               num_classes=num_classes, latent_shape=self.latent_shape, num_images=self.num_images,
                               provenance=provenance or {})


@prior_kind
@dataclass(eq=False, repr=False)
class SignalLeakPrior(Prior):
    """Everaert et al.'s signal leak: low frequencies from a fitted Gaussian, the rest white noise.

    A draw is ``up(z) + high_std * eps`` with ``z ~ N(low_mean, low_cov)`` on the ``grid`` of
    pooled latents, bilinearly upsampled. The label map only sets the batch size.
    """

    kind = "signal-leak"
    TENSORS = ("low_mean", "low_cov", "high_std")
    low_mean: torch.Tensor = None
    low_cov: torch.Tensor = None
    high_std: torch.Tensor = None
    grid: tuple = (4, 4)

    def _extra_meta(self):
        return {"grid": list(self.grid)}

    @classmethod
    def _meta_kwargs(cls, meta):
        return {"grid": tuple(json.loads(meta["grid"]))}

    def expected_shapes(self):
        D = self.latent_shape[0] * self.grid[0] * self.grid[1]
        return {"low_mean": (D,), "low_cov": (D, D), "high_std": (self.latent_shape[0],)}

    def _map(self, labels):
        B, H, W = labels.shape
        C = self.latent_shape[0]
        mean = _up(self.low_mean.to(labels.device).view(1, C, *self.grid), (H, W)).expand(B, -1, -1, -1)
        # marginal variance of a token: the upsampled low-frequency variance (interpolation weights ignored) + high
        var_low = _up(torch.diagonal(self.low_cov).to(labels.device).view(1, C, *self.grid), (H, W))
        std = (var_low + self.high_std.to(labels.device)[None, :, None, None] ** 2).sqrt().expand(B, -1, -1, -1)
        return mean.contiguous(), std.contiguous()

    def sample(self, labels, generator: torch.Generator | None = None) -> torch.Tensor:
        labels = self.check_labels(labels)
        B, H, W = labels.shape
        C = self.latent_shape[0]
        eps = torch.randn(B, C, H, W, generator=generator, device=labels.device)
        z = mvn_draw(self.low_mean.to(labels.device), self.low_cov, B, generator).view(B, C, *self.grid)
        return _up(z, (H, W)) + self.high_std.to(labels.device)[None, :, None, None] * eps
