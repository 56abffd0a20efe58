"""Noise priors: the paper's (Eqs. 5-8), those that keep global factors, their numpy definitions, their files.

* :mod:`.scp` -- the normal, spatial, categorical and joint priors (Eqs. 5-8; Eq. 6, the noising to step
  muT, is the sampler's: ``scp_core.sampling.noise_to_step``); :mod:`.accumulator` -- their exact streaming statistics.
* :mod:`.global_factor` -- priors that keep each image's global factor (joint + global factor,
  mixture of joint priors); :mod:`.signal_leak` -- the signal-leak initialisation; both are
  compared in notebook 08; :mod:`.gaussian` -- the streamed full-covariance Gaussian they share.
* :mod:`.definitions` -- the three SCP priors as their few-line numpy definitions (the reference
  the accumulator is tested against).

This ``__init__`` owns :data:`KINDS`, the table from a file's ``kind`` to its class, and
:func:`load_prior`, which reads any of them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open

from ..labels import downsample_labels, map_ignore
from .accumulator import PriorAccumulator
from .global_factor import GlobalJointPrior, MixtureJointPrior
from .scp import FALLBACKS, MIN_COUNT, CategoricalPrior, JointPrior, NormalPrior, Prior, SpatialPrior, cell_lookup
from .signal_leak import SignalLeakPrior

__all__ = [
    "downsample_labels", "map_ignore", "cell_lookup", "FALLBACKS", "MIN_COUNT", "KINDS",
    "PriorAccumulator", "Prior", "NormalPrior", "SpatialPrior", "CategoricalPrior", "JointPrior",
    "GlobalJointPrior", "MixtureJointPrior", "SignalLeakPrior", "load_prior",
]

KINDS: dict[str, type[Prior]] = {cls.kind: cls for cls in (
    NormalPrior, SpatialPrior, CategoricalPrior, JointPrior, GlobalJointPrior, MixtureJointPrior, SignalLeakPrior)}


# Largest |mean| or std a prior file may hold: scaled latents are of order 1 (SD's unscaled ones reach ~50);
# 1e30 is a corrupt file, which would otherwise be found only by the sampler's non-finite check.
MAX_ABS_STATISTIC = 1e4


def load_prior(path: str | os.PathLike, num_classes: int | None = None,
               latent_shape: Sequence[int] | None = None, device: str | torch.device = "cpu") -> Prior:
    """Load a prior written by :meth:`Prior.save`, checking it against the intended use.

    Args:
        path: the ``.safetensors`` file.
        num_classes, latent_shape: if given, the prior must match them (else ``ValueError``
            saying what differs).
        device: where to put the tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prior file {path} does not exist; build one with `scpdiff priors` "
                         "or PriorAccumulator(...).joint().save(path)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"prior file {path} is not a readable safetensors file (corrupt or truncated?): "
                         f"{e}. Re-create it with `scpdiff priors`.") from e
    if meta.get("format") != "scp-prior" or meta.get("kind") not in KINDS:
        raise ValueError(f"{path} is a safetensors file but not an SCP prior (metadata format="
                         f"{meta.get('format')!r}, kind={meta.get('kind')!r})")
    try:
        cls = KINDS[meta["kind"]]
        shape = json.loads(meta["latent_shape"])
        kw = dict(num_classes=json.loads(meta["num_classes"]),
                  latent_shape=tuple(shape) if shape is not None else None,
                  num_images=int(meta["num_images"]), provenance=json.loads(meta["provenance"]))
        kw.update(cls._meta_kwargs(meta))
        for name in cls.TENSORS:
            kw[name] = tensors[name].to(device)
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"prior file {path} has incomplete metadata or tensors ({e!r}); re-create it") from e
    prior = cls(**kw)
    _validate_tensors(prior, path)
    prior.check_compatible(num_classes=num_classes, latent_shape=latent_shape)
    return prior


def _validate_tensors(prior: Prior, path) -> None:
    """Refuse a prior file whose tensors cannot be sampled from, naming the file and the problem; a
    ``latent_shape`` missing from the metadata is read from the tensors (mean ``[C, H, W]`` / ``[K, C, H, W]``)."""
    for name in prior.TENSORS:
        t = getattr(prior, name)
        if name in ("mean", "std") and not t.is_floating_point():
            raise ValueError(f"prior file {path}: tensor {name!r} has dtype {t.dtype}; a prior's mean and std are "
                             "floating point (statistics of latents), re-create it with `scpdiff priors`")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"prior file {path}: tensor {name!r} has NaN or Inf values; re-create it")
        if name == "std" and (t < 0).any():
            raise ValueError(f"prior file {path}: tensor 'std' has negative values; re-create it")
        if name in ("mean", "std") and t.numel() and float(t.abs().max()) > MAX_ABS_STATISTIC:
            raise ValueError(f"prior file {path}: tensor {name!r} reaches {float(t.abs().max()):.3g}, beyond the "
                             f"{MAX_ABS_STATISTIC:g} that statistics of scaled latents (order 1) never approach; "
                             "the file is corrupt or was built without the autoencoder's scale factor, re-create it "
                             "with `scpdiff priors`")
    mean = getattr(prior, "mean", None)
    if prior.latent_shape is None and isinstance(mean, torch.Tensor) and mean.dim() in (3, 4):
        prior.latent_shape = tuple(int(s) for s in mean.shape[-3:])
    if prior.latent_shape is None:
        if prior.kind in ("normal", "categorical"):  # these need no latent size (categorical: [K, C])
            return
        raise ValueError(f"prior file {path}: its metadata has no latent_shape and its tensors do not give one; "
                         "re-create it with `scpdiff priors`")
    for name, shape in prior.expected_shapes().items():
        t = getattr(prior, name)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"prior file {path}: tensor {name!r} has shape {tuple(t.shape)}, "
                             f"metadata says {tuple(shape)}; the file is inconsistent, re-create it")
