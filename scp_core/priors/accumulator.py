"""Exact streaming statistics of latent tokens for the SCP priors (Eqs. 5, 7, 8).

:class:`PriorAccumulator` stores only the finest grouping, per ``(class, y, x)``: count, mean and
the sum of squared deviations ``M2`` (Welford's running moments, batches combined with Chan et
al.'s parallel rule). The categorical, spatial and global statistics are *exact* pooled
reductions of those cells, so one scatter per batch serves all three priors and shards merge
without loss. Variances are population variances (divide by the count).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..labels import check_ids, label_batch
from .scp import FALLBACKS, MIN_COUNT, CategoricalPrior, JointPrior, SpatialPrior

__all__ = ["PriorAccumulator"]


def _pool(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor, dims: Sequence[int]):
    """Exact pooled moments of groups: Chan et al.'s rule for many groups at once.

    For groups ``g`` with counts ``n_g``, means ``m_g`` and squared-deviation sums ``M2_g``:
    ``n = sum n_g``, ``m = sum n_g m_g / n``, ``M2 = sum (M2_g + n_g (m_g - m)^2)``.
    ``count`` broadcasts against ``mean`` / ``m2``; reduces over ``dims``.
    """
    n = count.sum(dim=dims, keepdim=True)
    safe = n.clamp(min=1)
    pooled_mean = (count * mean).sum(dim=dims, keepdim=True) / safe
    pooled_m2 = (m2 + count * (mean - pooled_mean) ** 2).sum(dim=dims, keepdim=True)
    return n, pooled_mean, pooled_m2


class PriorAccumulator:
    """Streaming, exact statistics of latent tokens for the three SCP priors.

    Args:
        num_classes: number of label ids ``K`` (ids ``0 .. K-1``; give ignore ids a class
            of their own with :func:`scp_core.labels.map_ignore`).
        latent_shape: ``(C, H, W)`` of one latent.
        device: where the running statistics live (default CPU).

    The state is, per cell ``(c, y, x)``: ``count`` ``[K, H, W]``, ``mean`` and ``m2``
    ``[K, C, H, W]``, all float64; its size does not depend on the number of images.
    """

    def __init__(self, num_classes: int, latent_shape: Sequence[int], device: str | torch.device = "cpu"):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        latent_shape = tuple(int(s) for s in latent_shape)
        if len(latent_shape) != 3 or min(latent_shape) < 1:
            raise ValueError(f"latent_shape must be (C, H, W) with positive sizes, got {latent_shape}")
        self.num_classes = int(num_classes)
        self.latent_shape = latent_shape
        C, H, W = latent_shape
        K = self.num_classes
        kw = dict(dtype=torch.float64, device=device)
        self.count = torch.zeros(K, H, W, **kw)
        self.mean = torch.zeros(K, C, H, W, **kw)
        self.m2 = torch.zeros(K, C, H, W, **kw)
        self.num_images = 0

    # ---- updating
    @torch.no_grad()
    def update(self, latents: torch.Tensor, labels) -> "PriorAccumulator":
        """Add a batch: ``latents [B, C, H, W]`` with ``labels [B, H, W]`` at latent size.

        Batch moments per cell come from two scatters (sum, then squared deviations), and
        are merged into the running moments with Chan's rule, all in float64.
        """
        C, H, W = self.latent_shape
        K = self.num_classes
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a [B, C, H, W] tensor, got {shape}")
        labels = label_batch(labels)
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents have shape {tuple(latents.shape[1:])} per image but this "
                             f"accumulator was made for latent_shape={self.latent_shape}")
        if labels.shape[0] != latents.shape[0] or tuple(labels.shape[1:]) != (H, W):
            raise ValueError(
                f"labels must be [B, H, W] = [{latents.shape[0]}, {H}, {W}] to match the latents, got "
                f"{tuple(labels.shape)}; downsample full-size maps with downsample_labels(labels, ({H}, {W}))")
        if latents.shape[0] == 0:
            return self
        x = latents.detach().to(device=self.mean.device, dtype=torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("latents contain NaN or Inf; check the VAE encoding (half precision overflow?)")
        labels = labels.to(self.mean.device)
        check_ids(labels, K)

        B = x.shape[0]
        HW = H * W
        # cell index of every token: c * HW + (y * W + x)
        pos = torch.arange(HW, device=x.device).expand(B, HW)
        cell = (labels.reshape(B, HW) * HW + pos).reshape(-1)
        tokens = x.permute(0, 2, 3, 1).reshape(-1, C)  # [B*HW, C]

        n_b = torch.zeros(K * HW, dtype=torch.float64, device=x.device).index_add_(
            0, cell, torch.ones_like(cell, dtype=torch.float64))
        s_b = torch.zeros(K * HW, C, dtype=torch.float64, device=x.device).index_add_(0, cell, tokens)
        mean_b = s_b / n_b.clamp(min=1)[:, None]
        dev = tokens - mean_b[cell]
        m2_b = torch.zeros(K * HW, C, dtype=torch.float64, device=x.device).index_add_(0, cell, dev * dev)

        # to the state layout [K, C, H, W] / [K, H, W]
        n_b = n_b.view(K, H, W)
        mean_b = mean_b.view(K, H, W, C).permute(0, 3, 1, 2)
        m2_b = m2_b.view(K, H, W, C).permute(0, 3, 1, 2)
        self._combine(n_b, mean_b, m2_b)
        self.num_images += B
        return self

    def _combine(self, n_b, mean_b, m2_b) -> None:
        """Chan et al.: merge moments ``(n_b, mean_b, m2_b)`` into the running ones."""
        n_a = self.count
        n = n_a + n_b
        safe = n.clamp(min=1)[:, None]
        delta = mean_b - self.mean
        self.mean += delta * (n_b[:, None] / safe)
        self.m2 += m2_b + delta * delta * (n_a * n_b)[:, None] / safe
        self.count = n

    def merge(self, other: "PriorAccumulator") -> "PriorAccumulator":
        """Fold another shard's statistics into this one (exactly one pass over both)."""
        if not isinstance(other, PriorAccumulator):
            raise ValueError(f"can only merge a PriorAccumulator, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.latent_shape != self.latent_shape:
            raise ValueError(
                f"cannot merge accumulators of different shape: num_classes {self.num_classes} vs "
                f"{other.num_classes}, latent_shape {self.latent_shape} vs {other.latent_shape}")
        dev = self.mean.device
        self._combine(other.count.to(dev), other.mean.to(dev), other.m2.to(dev))
        self.num_images += other.num_images
        return self

    # ---- state (for checkpoints and for gathering across processes)
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2,
                "num_images": torch.tensor(self.num_images, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device="cpu") -> "PriorAccumulator":
        """The accumulator whose :meth:`state_dict` is ``state``; ``ValueError`` saying what is missing or wrong."""
        missing = [k for k in ("count", "mean", "m2", "num_images") if k not in state] if isinstance(state, dict) \
            else ["count", "mean", "m2", "num_images"]
        if missing:
            raise ValueError(f"not a PriorAccumulator state dict: it lacks {missing}; pass what "
                             "PriorAccumulator.state_dict() returns (or load a file written by save_accumulator)")
        shapes = [tuple(getattr(state[k], "shape", ())) for k in ("count", "mean", "m2")]
        if len(shapes[1]) != 4 or shapes[2] != shapes[1] or shapes[0] != (shapes[1][0], *shapes[1][2:]):
            raise ValueError(f"not a PriorAccumulator state dict: count, mean, m2 have shapes {shapes}, not "
                             "[K, H, W], [K, C, H, W], [K, C, H, W]")
        K, C, H, W = state["mean"].shape
        acc = cls(K, (C, H, W), device=device)
        acc.count = state["count"].to(device, torch.float64).clone()
        acc.mean = state["mean"].to(device, torch.float64).clone()
        acc.m2 = state["m2"].to(device, torch.float64).clone()
        acc.num_images = int(state["num_images"])
        return acc

    # ---- derived statistics (exact reductions of the per-cell moments)
    def _require_data(self) -> None:
        if self.num_images == 0:
            raise ValueError("the accumulator is empty: call update(latents, labels) with reference "
                             "latents before asking for a prior")

    def class_counts(self) -> torch.Tensor:
        """Tokens per class, ``[K]``."""
        return self.count.sum(dim=(1, 2))

    def _global_moments(self):
        n, mean, m2 = _pool(self.count[:, None], self.mean, self.m2, dims=(0, 2, 3))
        return n.view(()), mean.view(-1), (m2.view(-1) / n.clamp(min=1).view(()))

    def categorical_moments(self):
        """``(count [K], mean [K, C], var [K, C])`` of Eq. 7 (float64).

        Eq. 7: ``m_c = mean of {x0_i(y, x) : M_i(y, x) = c}`` over every image and position,
        i.e. the cells ``(c, y, x)`` pooled over ``(y, x)``.
        """
        n, mean, m2 = _pool(self.count[:, None], self.mean, self.m2, dims=(2, 3))  # pool over (y, x)
        n = n.view(-1)
        return n, mean[..., 0, 0], m2[..., 0, 0] / n.clamp(min=1)[:, None]     # sigma_c^2 = M2 / n

    def spatial_moments(self):
        """``(count [H, W], mean [C, H, W], var [C, H, W])`` of Eq. 5 (float64).

        Eq. 5: ``m(y, x) = 1/N sum_i x0_i(y, x)``, i.e. the cells ``(c, y, x)`` pooled over ``c``.
        """
        n, mean, m2 = _pool(self.count[:, None], self.mean, self.m2, dims=(0,))  # pool over c
        n = n[0, 0]
        return n, mean[0], m2[0] / n.clamp(min=1)[None]                          # sigma^2(y, x) = M2 / N

    def joint_moments(self):
        """``(count [K, H, W], mean [K, C, H, W], var [K, C, H, W])`` of Eq. 8 (float64).

        Eq. 8: ``m_c(y, x) = mean of {x0_i(y, x) : M_i(y, x) = c}``: the cells themselves.
        """
        return self.count.clone(), self.mean.clone(), self.m2 / self.count.clamp(min=1)[:, None]

    def _meta(self) -> dict:
        return {"num_classes": self.num_classes, "latent_shape": self.latent_shape,
                "num_images": self.num_images}

    def spatial(self, provenance: dict | None = None) -> "SpatialPrior":
        """The spatial prior (Eq. 5)."""
        self._require_data()
        _, mean, var = self.spatial_moments()
        return SpatialPrior(mean=mean.float(), std=var.sqrt().float(), provenance=provenance, **self._meta())

    def categorical(self, provenance: dict | None = None) -> "CategoricalPrior":
        """The categorical prior (Eq. 7). Classes never seen take the global token statistics."""
        self._require_data()
        n, mean, var = self.categorical_moments()
        _, g_mean, g_var = self._global_moments()
        unseen = n == 0
        mean = torch.where(unseen[:, None], g_mean[None], mean)
        var = torch.where(unseen[:, None], g_var[None], var)
        return CategoricalPrior(mean=mean.float(), std=var.sqrt().float(), class_counts=n.float(),
                                provenance=provenance, **self._meta())

    def joint(self, min_count: int = MIN_COUNT, fallback: str = "class",
              provenance: dict | None = None) -> JointPrior:
        """The joint spatial-categorical prior (Eq. 8) with a fallback for rare cells.

        Args:
            min_count: cells ``(c, y, x)`` with fewer tokens take the fallback statistics
                (the paper's rule; the authors' code only falls back at count 0, i.e.
                ``min_count=1``).
            fallback: ``"class"`` (the categorical prior of ``c``, as in the paper) or
                ``"spatial"`` (the spatial prior at ``(y, x)``).
        """
        self._require_data()
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if int(min_count) < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        n, mean, var = self.joint_moments()                                       # Eq. 8 per (c, y, x)
        if fallback == "class":                                                   # the class prior of c (Eq. 7)
            cat = self.categorical()
            fb_mean = cat.mean.double()[:, :, None, None].expand_as(mean)
            fb_std = cat.std.double()[:, :, None, None].expand_as(mean)
        else:                                                                     # the spatial prior at (y, x) (Eq. 5)
            sp = self.spatial()
            fb_mean = sp.mean.double()[None].expand_as(mean)
            fb_std = sp.std.double()[None].expand_as(mean)
        rare = (n < int(min_count))[:, None]                                      # cells too thin to estimate
        mean = torch.where(rare, fb_mean, mean).float()
        std = torch.where(rare, fb_std, var.sqrt()).float()
        return JointPrior(mean=mean, std=std, count=n.float(), min_count=int(min_count), fallback=fallback,
                          provenance=provenance, **self._meta())


    def priors(self, min_count: int = MIN_COUNT, fallback: str = "class", provenance: dict | None = None) -> dict:
        """The three SCP priors of these statistics: ``{"spatial", "categorical", "joint"}``."""
        return {"spatial": self.spatial(provenance), "categorical": self.categorical(provenance),
                "joint": self.joint(min_count, fallback, provenance)}
