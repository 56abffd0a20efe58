"""Noise priors of SCP-Diff (Gao et al., ECCV 2024, Eqs. 5-8) and the step-muT noising of Eq. 6.

A *reference set* of N real latents ``x0`` (VAE posterior samples times the scale factor)
with their label maps downsampled to latent size gives Gaussian statistics of latent
*tokens* (the ``C``-vector at one position):

* spatial prior (Eq. 5): per position ``(y, x)`` and channel, mean and variance over N;
* categorical prior (Eq. 7): per class ``c``, over all tokens labelled ``c``;
* joint prior (Eq. 8): per ``(y, x, c)``, over the tokens at ``(y, x)`` labelled ``c``;
  cells seen fewer than ``min_count`` times fall back to the class (or spatial) statistics.

At inference a label map selects a per-token ``(mean, std)`` (the *distribution map*), a
draw ``x ~ N(mean, std^2)`` is noised to step muT (Eq. 6) and DDIM denoises from there.

:class:`PriorAccumulator` keeps exact, streaming float64 statistics. It stores only the
finest grouping, per ``(class, y, x)``: count, mean and sum of squared deviations ``M2``
(Welford's running moments, batches combined with Chan et al.'s parallel rule). The
categorical, spatial and global statistics are *exact* pooled reductions of those cells,
so one scatter per batch serves all three priors and shards merge without loss.

Variances are population variances (divide by the count), the maximum-likelihood Gaussian.
Names: ``mean`` / ``std`` are a Gaussian's; ``mu`` in this project is always the step
fraction of Eq. 6 (DDIM starts at step ``mu T``), never a mean. ``priors.definitions`` holds
the same three priors written as their definitions, for reading and for the tests.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_path
from ..labels import as_label_tensor, check_ids

__all__ = [
    "noise_to_step",
    "PriorAccumulator",
    "Prior",
    "NormalPrior",
    "SpatialPrior",
    "CategoricalPrior",
    "JointPrior",
    "FALLBACKS",
    "MIN_COUNT",
]

FALLBACKS = ("class", "spatial")
MIN_COUNT = 5  # joint cells seen fewer times than this fall back to the class (or spatial) statistics
FORMAT_VERSION = "1"


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


# --------------------------------------------------------------------------- accumulator
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
            of their own with :func:`map_ignore`).
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
        labels = as_label_tensor(labels)
        if labels.dim() == 2:
            labels = labels[None]
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents have shape {tuple(latents.shape[1:])} per image but this "
                             f"accumulator was made for latent_shape={self.latent_shape}")
        if labels.dim() != 3 or labels.shape[0] != latents.shape[0] or tuple(labels.shape[1:]) != (H, W):
            raise ValueError(
                f"labels must be [B, H, W] = [{latents.shape[0]}, {H}, {W}] to match the latents, got "
                f"{tuple(labels.shape)}; downsample full-size maps with downsample_labels(labels, ({H}, {W}))")
        if latents.shape[0] == 0:
            return self
        x = latents.detach().to(device=self.mean.device, dtype=torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("latents contain NaN or Inf; check the VAE encoding (half precision overflow?)")
        labels = labels.to(self.mean.device).long()
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

    def joint(self, min_count: int = MIN_COUNT, fallback: str = "class", provenance: dict | None = None) -> "JointPrior":
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


# --------------------------------------------------------------------------- priors
@dataclass(eq=False)
class Prior:
    """A Gaussian over latents whose per-token ``(mean, std)`` is chosen by a label map.

    Subclasses implement :meth:`_map`; everything else (checks, sampling, saving) is shared.
    """

    kind = "base"
    TENSORS = ()  # names of the tensor fields written to the file
    num_classes: int | None = None
    latent_shape: tuple | None = None
    num_images: int = 0
    provenance: dict = field(default_factory=dict)

    # ---- interface
    def distribution_map(self, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``(mean, std)``, each ``[B, C, H, W]``, for label maps at latent size."""
        labels = self.check_labels(labels)
        return self._map(labels)

    def sample(self, labels, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x ~ N(mean, std^2)`` per token for the given label maps, ``[B, C, H, W]``."""
        mean, std = self.distribution_map(labels)                 # Eq. 6: the map chosen by M
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps                                   # x ~ N(mean, std^2), token by token

    def to(self, device=None, dtype=None) -> "Prior":
        """Move the prior's tensors (returns self)."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        return self

    # ---- checks
    def check_labels(self, labels) -> torch.Tensor:
        """Validate label maps against this prior; returns them as ``[B, H, W]`` int64."""
        labels = as_label_tensor(labels)
        if labels.dim() == 2:
            labels = labels[None]
        if labels.dim() != 3:
            raise ValueError(f"labels must be [B, H, W] at latent size, got shape {tuple(labels.shape)}")
        if self.latent_shape is not None and tuple(labels.shape[1:]) != tuple(self.latent_shape[1:]):
            h, w = self.latent_shape[1:]
            raise ValueError(
                f"labels are {tuple(labels.shape[1:])} but this {self.kind} prior is for latents "
                f"{tuple(self.latent_shape)}: downsample the maps with downsample_labels(labels, ({h}, {w})), "
                "or build a prior for this resolution")
        if self.num_classes is not None:
            check_ids(labels, self.num_classes)
        return labels.long()

    def check_compatible(self, num_classes: int | None = None, latent_shape: Sequence[int] | None = None) -> None:
        """Refuse, saying what differs, if this prior does not fit a model / label set."""
        problems = []
        if num_classes is not None and self.num_classes is not None and int(num_classes) != self.num_classes:
            problems.append(f"num_classes: prior has {self.num_classes}, requested {num_classes}")
        if latent_shape is not None and self.latent_shape is not None:
            want = tuple(int(s) for s in latent_shape)
            if len(want) == 3 and want != tuple(self.latent_shape):
                problems.append(f"latent_shape: prior has {tuple(self.latent_shape)}, requested {want}")
            if len(want) == 2 and want != tuple(self.latent_shape[1:]):
                problems.append(f"latent size: prior has {tuple(self.latent_shape[1:])}, requested {want}")
        if problems:
            raise ValueError(f"{self.kind} prior does not fit: " + "; ".join(problems)
                             + ". Build a prior for this model and label set (scpdiff priors ...).")

    # ---- persistence
    def _extra_meta(self) -> dict:
        """Scalar fields written to the file's metadata (JSON) beside the tensors."""
        return {}

    @classmethod
    def _meta_kwargs(cls, meta: dict) -> dict:
        """The constructor keywords of :meth:`_extra_meta`, read back from a file's metadata."""
        return {}

    def expected_shapes(self) -> dict:
        """``{tensor name: shape}`` that the metadata implies (checked when a file is loaded)."""
        return {}

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": "scp-prior", "format_version": FORMAT_VERSION, "kind": self.kind,
            "num_classes": json.dumps(self.num_classes), "latent_shape": json.dumps(
                list(self.latent_shape) if self.latent_shape is not None else None),
            "num_images": str(int(self.num_images)), "provenance": json.dumps(self.provenance or {}),
        }
        meta.update({k: json.dumps(v) for k, v in self._extra_meta().items()})
        return meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write the prior as safetensors with its metadata, atomically."""
        from safetensors.torch import save_file

        tensors = {n: getattr(self, n).detach().cpu().contiguous() for n in self.TENSORS}
        if not tensors:  # safetensors needs at least a header; keep a marker tensor
            tensors = {"_empty": torch.zeros(0)}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=self.metadata())
        return Path(path)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, latent_shape={self.latent_shape}, "
                f"num_images={self.num_images})")


@dataclass(eq=False, repr=False)
class NormalPrior(Prior):
    """N(0, I): the standard start of DDIM (with ``mu = 1`` this is plain ControlNet)."""

    kind = "normal"
    latent_channels: int = 4

    def __post_init__(self):
        if self.latent_shape is not None:
            self.latent_channels = int(self.latent_shape[0])

    def _map(self, labels):
        B, H, W = labels.shape
        mean = torch.zeros(B, self.latent_channels, H, W, device=labels.device)
        return mean, torch.ones_like(mean)

    def _extra_meta(self):
        return {"latent_channels": self.latent_channels}

    @classmethod
    def _meta_kwargs(cls, meta):
        return {"latent_channels": json.loads(meta["latent_channels"])}


@dataclass(eq=False, repr=False)
class SpatialPrior(Prior):
    """Eq. 5: per-position mean and std ``[C, H, W]``, the same for every label map."""

    kind = "spatial"
    TENSORS = ("mean", "std")
    mean: torch.Tensor = None
    std: torch.Tensor = None


    def expected_shapes(self):
        return {"mean": tuple(self.latent_shape), "std": tuple(self.latent_shape)}

    def _map(self, labels):
        B = labels.shape[0]
        mean = self.mean.to(labels.device)
        std = self.std.to(labels.device)
        return mean.expand(B, *mean.shape).clone(), std.expand(B, *std.shape).clone()


@dataclass(eq=False, repr=False)
class CategoricalPrior(Prior):
    """Eq. 7: per-class mean and std ``[K, C]``, indexed by the label of each token."""

    kind = "categorical"
    TENSORS = ("mean", "std", "class_counts")
    mean: torch.Tensor = None
    std: torch.Tensor = None
    class_counts: torch.Tensor = None


    def expected_shapes(self):
        K, C = self.num_classes, self.latent_shape[0]
        return {"mean": (K, C), "std": (K, C), "class_counts": (K,)}

    def _map(self, labels):
        mean = self.mean.to(labels.device)[labels].permute(0, 3, 1, 2).contiguous()  # [B,H,W,C]->[B,C,H,W]
        std = self.std.to(labels.device)[labels].permute(0, 3, 1, 2).contiguous()
        return mean, std


@dataclass(eq=False, repr=False)
class JointPrior(Prior):
    """Eq. 8: per ``(class, y, x)`` mean and std ``[K, C, H, W]`` with rare cells filled in.

    ``count [K, H, W]`` is the number of reference tokens behind each cell; cells with
    ``count < min_count`` hold the ``fallback`` statistics (see :attr:`fallback_mask`).
    """

    kind = "joint"
    TENSORS = ("mean", "std", "count")
    mean: torch.Tensor = None
    std: torch.Tensor = None
    count: torch.Tensor = None
    min_count: int = 1
    fallback: str = "class"


    def _extra_meta(self):
        return {"min_count": self.min_count, "fallback": self.fallback}

    @classmethod
    def _meta_kwargs(cls, meta):
        return {"min_count": json.loads(meta["min_count"]), "fallback": json.loads(meta["fallback"])}

    def expected_shapes(self):
        K, (C, H, W) = self.num_classes, self.latent_shape
        return {"mean": (K, C, H, W), "std": (K, C, H, W), "count": (K, H, W)}

    @property
    def fallback_mask(self) -> torch.Tensor:
        """``[K, H, W]`` bool: cells that use the fallback statistics."""
        return self.count < self.min_count

    def _map(self, labels):
        return cell_lookup(self.mean, labels), cell_lookup(self.std, labels)


def cell_lookup(table: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``table [K, C, H, W]`` read at ``(labels[b, y, x], :, y, x)`` for every position: ``[B, C, H, W]``."""
    B, H, W = labels.shape
    t = table.to(labels.device).permute(0, 2, 3, 1)  # [K, H, W, C]
    yy = torch.arange(H, device=labels.device)[None, :, None].expand(B, H, W)
    xx = torch.arange(W, device=labels.device)[None, None, :].expand(B, H, W)
    return t[labels, yy, xx].permute(0, 3, 1, 2).contiguous()
