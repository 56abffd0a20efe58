"""Prior files: the table of kinds, the file format, writing, reading and the checks on reading.

A prior file is a safetensors file. Its tensors are the prior class's ``TENSORS`` (a prior
without tensors, ``normal``, holds one empty marker tensor ``_empty``); its metadata, all
strings, in this order:

* ``format``: ``"scp-prior"``; ``format_version``: :data:`FORMAT_VERSION` (``"1"``, written by
  every version of this project so far);
* ``kind``: the key of the prior's class in :data:`KINDS`;
* ``num_classes``, ``latent_shape`` (JSON: an int / a ``[C, H, W]`` list, or ``null``),
  ``num_images`` (an int), ``provenance`` (a JSON object);
* the class's own fields (its ``_extra_meta``, each value JSON; read back by its ``_meta_kwargs``).

:func:`load_prior` refuses, naming the file and the fix, a file that is missing, unreadable, not a
prior, of a ``format_version`` this code does not read, with incomplete metadata, or with tensors
that cannot be sampled from (non-finite, negative std, implausibly large, shapes that disagree).

This module sits *below* the prior classes: ``Prior.save`` (in :mod:`.scp`) writes through
:func:`save_prior`, and each class enters itself in :data:`KINDS` with :func:`prior_kind`, so the
format has one home and there is no import circle between the classes and their files.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open

from ..io import save_safetensors

__all__ = ["FORMAT", "FORMAT_VERSION", "KINDS", "MAX_ABS_STATISTIC", "prior_digest", "prior_kind", "prior_metadata",
           "save_prior", "load_prior"]

FORMAT = "scp-prior"
FORMAT_VERSION = "1"  # raise it when a file of the new layout could not be read by this code

# Largest |mean| or std a prior file may hold: scaled latents are of order 1 (SD's unscaled ones reach ~50);
# 1e30 is a corrupt file, which would otherwise be found only by the sampler's non-finite check.
MAX_ABS_STATISTIC = 1e4

# a file's ``kind`` -> its prior class; filled by :func:`prior_kind` as the classes are defined (importing any
# part of scp_core.priors runs its __init__, which imports every module that defines a prior class)
KINDS: dict[str, type] = {}


def prior_kind(cls: type) -> type:
    """Class decorator: enter a prior class in :data:`KINDS` under its ``kind``, the name its files carry."""
    known = KINDS.get(cls.kind)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"prior kind {cls.kind!r} is taken by {known.__qualname__}; give "
                         f"{cls.__qualname__} a kind of its own")
    KINDS[cls.kind] = cls
    return cls


# --------------------------------------------------------------------------- writing
def prior_metadata(prior) -> dict[str, str]:
    """The metadata a prior's file carries (the keys and order of the module docstring)."""
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": prior.kind,
        "num_classes": json.dumps(prior.num_classes), "latent_shape": json.dumps(
            list(prior.latent_shape) if prior.latent_shape is not None else None),
        "num_images": str(int(prior.num_images)), "provenance": json.dumps(prior.provenance or {}),
    }
    meta.update({k: json.dumps(v) for k, v in prior._extra_meta().items()})
    return meta


def prior_digest(prior) -> str:
    """sha256 of what a prior's file holds (its metadata and tensors): equal digests, equal draws. Caches key
    generated images by it (``scp_core.study.cache``)."""
    h = hashlib.sha256(json.dumps(prior_metadata(prior), sort_keys=True).encode())
    for n in prior.TENSORS:
        t = getattr(prior, n).detach().cpu().contiguous()
        h.update(f"{n}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def save_prior(prior, path: str | os.PathLike) -> Path:
    """Write ``prior`` as safetensors with its metadata, atomically, to the file ``path``."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"cannot save the prior to {path}: it is a folder; give a file path "
                                f"such as {Path(path) / 'prior.safetensors'}")
    tensors = {n: getattr(prior, n).detach().cpu().contiguous() for n in prior.TENSORS}
    if not tensors:  # safetensors needs at least a header; keep a marker tensor
        tensors = {"_empty": torch.zeros(0)}
    return save_safetensors(tensors, path, metadata=prior_metadata(prior))


# --------------------------------------------------------------------------- reading
def load_prior(path: str | os.PathLike, num_classes: int | None = None,
               latent_shape: Sequence[int] | None = None, device: str | torch.device = "cpu"):
    """Load a prior written by :func:`save_prior` (``Prior.save``), checking it against the intended use.

    Args:
        path: the ``.safetensors`` file.
        num_classes, latent_shape: if given, the prior must match them (else ``ValueError``
            saying what differs).
        device: where to put the tensors.

    Returns:
        the prior, an instance of ``KINDS[kind]``.
    """
    path = Path(path)
    meta, tensors = _read(path)
    _check_format(meta, path)
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


def _read(path: Path) -> tuple[dict, dict]:
    """``(metadata, tensors)`` of a safetensors file, or ``ValueError`` saying it is missing or unreadable."""
    if not path.is_file():
        raise ValueError(f"prior file {path} does not exist; build one with `scpdiff priors` "
                         "or PriorAccumulator(...).joint().save(path)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"prior file {path} is not a readable safetensors file (corrupt or truncated?): "
                         f"{e}. Re-create it with `scpdiff priors`.") from e


def _check_format(meta: dict, path: Path) -> None:
    """Refuse a safetensors file that is not a prior, or a prior of a format version this code does not read.

    Every prior file this project has written carries ``format_version`` ``"1"``; a prior file without
    the key is read as version 1.
    """
    if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise ValueError(f"{path} is a safetensors file but not an SCP prior (metadata format="
                         f"{meta.get('format')!r}, kind={meta.get('kind')!r})")
    version = meta.get("format_version", FORMAT_VERSION)
    if version == FORMAT_VERSION:
        return
    newer = version.isdigit() and int(version) > int(FORMAT_VERSION)
    raise ValueError(
        f"prior file {path} has format_version {version!r}, but this scp_core reads format_version "
        f"{FORMAT_VERSION!r} only" + (" (the file was written by a newer scp_core)" if newer else "")
        + ": update scp_core, or re-create the file with `scpdiff priors`")


def _validate_tensors(prior, path) -> None:
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
