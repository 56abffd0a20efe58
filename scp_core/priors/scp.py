"""Noise priors of SCP-Diff (Gao et al., ECCV 2024, Eqs. 5-8); the step-muT noising of Eq. 6 is the sampler's.

A *reference set* of N real latents ``x0`` (VAE posterior samples times the scale factor)
with their label maps downsampled to latent size gives Gaussian statistics of latent
*tokens* (the ``C``-vector at one position):

* spatial prior (Eq. 5): per position ``(y, x)`` and channel, mean and variance over N;
* categorical prior (Eq. 7): per class ``c``, over all tokens labelled ``c``;
* joint prior (Eq. 8): per ``(y, x, c)``, over the tokens at ``(y, x)`` labelled ``c``;
  cells seen fewer than ``min_count`` times fall back to the class (or spatial) statistics.

At inference a label map selects a per-token ``(mean, std)`` (the *distribution map*), a
draw ``x ~ N(mean, std^2)`` is noised to step muT (Eq. 6) and DDIM denoises from there.

The statistics come from :class:`~scp_core.priors.accumulator.PriorAccumulator` (exact,
streaming; described there). Variances are population variances (divide by the count), the
maximum-likelihood Gaussian.
Names: ``mean`` / ``std`` are a Gaussian's; ``mu`` in this project is always the step
fraction of Eq. 6 (DDIM starts at step ``mu T``), never a mean. ``priors.definitions`` holds
the same three priors written as their definitions, for reading and for the tests. Their files
(format, saving, loading, the table of kinds) live in :mod:`.files`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..labels import check_ids, label_batch
from .files import prior_kind, prior_metadata, save_prior

__all__ = [
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
        labels = label_batch(labels)
        if self.latent_shape is not None and tuple(labels.shape[1:]) != tuple(self.latent_shape[1:]):
            h, w = self.latent_shape[1:]
            raise ValueError(
                f"labels are {tuple(labels.shape[1:])} but this {self.kind} prior is for latents "
                f"{tuple(self.latent_shape)}: downsample the maps with downsample_labels(labels, ({h}, {w})), "
                "or build a prior for this resolution")
        if self.num_classes is not None:
            check_ids(labels, self.num_classes)
        return labels

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
        channels = self.channels
        if latent_shape is not None and len(latent_shape) == 3 and channels is not None \
                and channels != int(latent_shape[0]) and not problems:
            problems.append(f"latent channels: prior has {channels}, the model's latents have {int(latent_shape[0])}")
        if problems:
            raise ValueError(f"{self.kind} prior does not fit: " + "; ".join(problems)
                             + ". Build a prior for this model and label set (scpdiff priors ...).")

    @property
    def channels(self) -> int | None:
        """Latent channels of the prior's draws: from ``latent_shape``, else from its mean (``None``: unknown)."""
        if self.latent_shape is not None:
            return int(self.latent_shape[0])
        mean = getattr(self, "mean", None)
        if isinstance(mean, torch.Tensor) and mean.dim() >= 2:
            return int(mean.shape[-3] if mean.dim() >= 3 else mean.shape[-1])
        return None

    # ---- persistence (the file format lives in scp_core.priors.files)
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
        """The metadata of this prior's file (:func:`~scp_core.priors.files.prior_metadata`)."""
        return prior_metadata(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the prior to the file ``path``, atomically (:func:`~scp_core.priors.files.save_prior`)."""
        return save_prior(self, path)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, latent_shape={self.latent_shape}, "
                f"num_images={self.num_images})")


@prior_kind
@dataclass(eq=False, repr=False)
class NormalPrior(Prior):
    """N(0, I): the standard start of DDIM (with ``mu = 1`` this is plain ControlNet)."""

    kind = "normal"
    latent_channels: int = 4

    def __post_init__(self):
        if self.latent_shape is not None:
            self.latent_channels = int(self.latent_shape[0])

    @property
    def channels(self) -> int:
        return int(self.latent_channels)

    def _map(self, labels):
        B, H, W = labels.shape
        mean = torch.zeros(B, self.latent_channels, H, W, device=labels.device)
        return mean, torch.ones_like(mean)

    def _extra_meta(self):
        return {"latent_channels": self.latent_channels}

    @classmethod
    def _meta_kwargs(cls, meta):
        return {"latent_channels": json.loads(meta["latent_channels"])}


@prior_kind
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


@prior_kind
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


@prior_kind
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
