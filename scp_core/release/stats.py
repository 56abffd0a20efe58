"""The authors' statistics files (SCP-Diff-Toolkit ``noise_prior.py``) read safely and made this project's priors.

Each file is ``np.save(path, some_dict)``: a ``.npy`` of a 0-d object array whose payload is a pickle.
The header is read with numpy's format module and the pickle with :mod:`scp_core.safe_pickle` (numpy
arrays and builtin containers only), so a tampered file is refused, never run. Their structures:

* ``<name>_spatial_mean_std.npy``: ``{"mean": [4, h, w], "std": [4, h, w]}``, float32, over the
  ``sample_size`` latents ``x0`` (posterior sample times the scale factor) of images drawn with
  replacement; ``std`` is numpy's population std.
* ``<name>_categorical_mean_std.npy``: ``{label: {"mean": [4], "std": [4]}}`` for every label value seen,
  from *one random token per image and class* (up to ``sample_size`` per class); ``std`` is torch's
  *unbiased* std (NaN for a class seen once). No counts are stored.
* ``<name>_spatial_class_mean_std.npy``: ``{"mean": [256, 4, h, w], "std": [256, 4, h, w],
  "count": [256, 1, h, w]}``, float32, indexed by label value (256 slots); streaming moments with an
  ``epsilon = 1e-6`` in each denominator (population std); a cell never seen has count 0, mean 0 and
  std 0. Their inference falls back to the spatial (or class) statistics exactly where count is 0.

:func:`release_priors` maps their label values onto this project's prior classes (real classes
``0..K-1``, the ignore id as class ``K``), pools label values that map to one class exactly (joint, by
count), drops label values the label set lacks (their loaders resize label maps with torchvision's
default *bilinear* ``Resize``, which invents values on class boundaries, e.g. 127 between road 0 and
ignore 255) unless they carry more than :data:`MAX_UNKNOWN` of the joint tokens (then the file is of
another dataset and is refused), fills what was never seen (categorical: the global token statistics, as
:class:`~scp_core.priors.PriorAccumulator` does; joint: the chosen fallback at count 0, i.e.
``min_count = 1``) and records where every number came from in each prior's provenance.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .. import safe_pickle
from .checkpoint import file_digest
from ..priors import FALLBACKS, CategoricalPrior, JointPrior, SpatialPrior

__all__ = ["STAT_SUFFIXES", "read_release_npy", "find_stat_files", "prior_class_map", "release_priors"]

STAT_SUFFIXES = {"spatial": "_spatial_mean_std.npy", "categorical": "_categorical_mean_std.npy",
                 "joint": "_spatial_class_mean_std.npy"}
TOOLKIT = "SCP-Diff-Toolkit (AIR-DISCOVER), noise_prior.py"
MAX_UNKNOWN = 0.05  # share of the joint tokens with label values outside the label set above which a file is foreign


def read_release_npy(path: str | os.PathLike) -> dict:
    """The dict inside one of the authors' ``.npy`` files; ``ValueError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"statistics file {path} does not exist")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version} (the authors' files are 1.0)")
            if dtype != np.dtype(object) or shape != ():
                raise ValueError(f"it holds a plain {dtype} array of shape {shape}, not a pickled dict: is it a "
                                 "*_raw.npy dump? import the *_mean_std.npy files")
            array = safe_pickle.RestrictedUnpickler(f, path).load()
    except safe_pickle.UnsafePickleError as e:
        raise ValueError(str(e)) from None
    except (ValueError, EOFError, pickle.UnpicklingError, OSError, TypeError, AttributeError) as e:
        raise ValueError(f"statistics file {path} is not one of the authors' .npy files, or it is truncated or "
                         f"corrupt: {e}") from e
    if not isinstance(array, np.ndarray) or array.shape != () or not isinstance(array.item(), dict):
        raise ValueError(f"statistics file {path} does not hold a dict (np.save of the toolkit's statistics)")
    return array.item()


def find_stat_files(stat_dir: str | os.PathLike, name: str) -> dict[str, Path]:
    """``{"spatial" | "categorical" | "joint": path}`` of ``<stat_dir>/<name><suffix>`` that exist (at least one)."""
    stat_dir = Path(stat_dir)
    found = {k: stat_dir / f"{name}{s}" for k, s in STAT_SUFFIXES.items() if (stat_dir / f"{name}{s}").is_file()}
    if not found:
        raise ValueError(f"no statistics named {name!r} in {stat_dir}: expected "
                         + ", ".join(f"{name}{s}" for s in STAT_SUFFIXES))
    return found


def _float_array(obj, what: str, path, ndim: int) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.dtype.kind != "f" or obj.ndim != ndim:
        desc = f"{obj.dtype} array of shape {obj.shape}" if isinstance(obj, np.ndarray) else type(obj).__name__
        raise ValueError(f"statistics file {path}: {what} must be a float array with {ndim} axes, got {desc}")
    return obj.astype(np.float64)


def _keys(obj, want: set, path) -> None:
    if not isinstance(obj, dict) or set(obj) != want:
        got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"statistics file {path}: expected a dict with keys {sorted(want)}, got {got}")


def _finite(mean, std, path) -> None:
    if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std < 0).any():
        raise ValueError(f"statistics file {path}: its means and stds must be finite and its stds >= 0 (corrupt?)")


def _spatial(obj, path) -> tuple[np.ndarray, np.ndarray]:
    _keys(obj, {"mean", "std"}, path)
    mean, std = (_float_array(obj[k], f"'{k}'", path, 3) for k in ("mean", "std"))
    if mean.shape != std.shape:
        raise ValueError(f"statistics file {path}: mean {mean.shape} and std {std.shape} differ in shape")
    _finite(mean, std, path)
    return mean, std


def _categorical(obj, path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"statistics file {path}: expected a non-empty dict {{label: {{'mean', 'std'}}}}")
    out = {}
    for label, entry in obj.items():
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"statistics file {path}: label keys must be integers, got {label!r}")
        _keys(entry, {"mean", "std"}, path)
        mean, std = (_float_array(entry[k], f"'{k}' of label {label}", path, 1) for k in ("mean", "std"))
        if mean.shape != std.shape:
            raise ValueError(f"statistics file {path}: label {label} has mean {mean.shape} and std {std.shape}")
        out[int(label)] = (mean, std)
    if len({m.shape for m, _ in out.values()}) != 1:
        raise ValueError(f"statistics file {path}: labels have different channel counts")
    return out


def _joint(obj, path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _keys(obj, {"mean", "std", "count"}, path)
    mean, std, count = (_float_array(obj[k], f"'{k}'", path, 4) for k in ("mean", "std", "count"))
    K, _, H, W = mean.shape
    if std.shape != mean.shape or count.shape != (K, 1, H, W):
        raise ValueError(f"statistics file {path}: shapes mean {mean.shape}, std {std.shape}, count {count.shape} "
                         "do not fit ([K, C, h, w], [K, C, h, w], [K, 1, h, w])")
    if (count < 0).any() or not np.isfinite(count).all():
        raise ValueError(f"statistics file {path}: counts must be finite and >= 0")
    _finite(mean, std, path)
    return mean, std, count[:, 0]


def prior_class_map(id_map: dict[int, int], num_classes: int, ignore_index: int | None) -> dict[int, int]:
    """The authors' label values -> this project's prior classes (the ignore id is class ``num_classes``)."""
    out = {}
    for value, dataset_id in id_map.items():
        if ignore_index is not None and dataset_id == ignore_index:
            out[int(value)] = int(num_classes)
        elif 0 <= dataset_id < num_classes:
            out[int(value)] = int(dataset_id)
    return out


def _foreign(bad, path, num_prior_classes, share: str) -> ValueError:
    return ValueError(f"statistics file {path} holds label values {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                      f"({share}) that the label set ({num_prior_classes} prior classes, ignore id included) lacks: "
                      "the statistics are of another dataset or class count (check --dataset)")


def _unknown_joint(count, cmap, path, num_prior_classes) -> tuple[list[int], float]:
    """Label values of the joint file outside the label set, and their share of the tokens; refused above
    :data:`MAX_UNKNOWN` (a foreign file), else dropped (their loaders' bilinear label resize invents a few)."""
    bad = [v for v in range(count.shape[0]) if v not in cmap and count[v].any()]
    share = float(count[bad].sum() / max(count.sum(), 1))
    if share > MAX_UNKNOWN:
        raise _foreign(bad, path, num_prior_classes, f"{share:.1%} of the tokens")
    return bad, share


def _unknown_categorical(cat, cmap, path, num_prior_classes, joint_checked: bool) -> list[int]:
    """Label keys of the categorical file outside the label set: dropped when the joint file vouched for the
    label set (same dataset), or when they are fewer than the known keys; refused otherwise."""
    bad = sorted(v for v in cat if v not in cmap)
    if bad and not joint_checked and len(bad) >= len(cat) - len(bad):
        raise _foreign(bad, path, num_prior_classes, f"{len(bad)} of {len(cat)} labels")
    return bad


def _pool_joint(mean, std, count, cmap, K):
    """The authors' ``[256, C, h, w]`` cells pooled exactly (Chan's rule, by count) into ``K`` prior classes."""
    _, C, H, W = mean.shape
    n = np.zeros((K, H, W))
    m = np.zeros((K, C, H, W))
    v = np.zeros((K, C, H, W))
    for value in range(mean.shape[0]):
        nb = count[value]
        if value not in cmap or not nb.any():
            continue
        c = cmap[value]
        na, tot = n[c], n[c] + nb
        safe = np.maximum(tot, 1)[None]
        mb, vb = mean[value], std[value] ** 2
        delta = mb - m[c]
        v[c] = (na[None] * v[c] + nb[None] * vb) / safe + delta ** 2 * (na * nb)[None] / safe ** 2
        m[c] = (na[None] * m[c] + nb[None] * mb) / safe
        n[c] = tot
    return n, m, np.sqrt(v)


def _global(spatial, joint) -> tuple[np.ndarray, np.ndarray]:
    """Global token mean and std (every position of every latent) from the spatial, else the joint statistics."""
    if spatial is not None:
        mean, std = spatial
        g = mean.mean(axis=(1, 2))
        return g, np.sqrt((std ** 2 + (mean - g[:, None, None]) ** 2).mean(axis=(1, 2)))
    n, m, s = joint
    w = n[:, None] / max(n.sum(), 1)
    g = (w * m).sum(axis=(0, 2, 3))
    return g, np.sqrt((w * (s ** 2 + (m - g[None, :, None, None]) ** 2)).sum(axis=(0, 2, 3)))


def _latent_shape(spatial, cat, joint, latent_shape) -> tuple[int, int, int]:
    """The one ``(C, h, w)`` of the files (and of the pipeline, if given); ``ValueError`` when they disagree."""
    shapes = {}
    if spatial is not None:
        shapes["spatial"] = spatial[0].shape
    if joint is not None:
        shapes["joint"] = joint[0].shape[1:]
    if cat is not None:
        shapes["categorical"] = next(iter(cat.values()))[0].shape
    if latent_shape is not None:
        shapes["the pipeline's latents"] = tuple(int(s) for s in latent_shape)
    full = {tuple(s) for s in shapes.values() if len(s) == 3}
    if len(full) > 1 or len({s[0] for s in shapes.values()}) > 1:
        raise ValueError("statistics files do not fit each other: latent shapes " + ", ".join(
            f"{k} {tuple(s)}" for k, s in shapes.items()) + " (statistics of another resolution or model?)")
    if not full:
        raise ValueError("the categorical statistics need the spatial or joint file (for the latent size and the "
                         "classes they never saw)")
    return next(iter(full))


def _categorical_prior(cat, cmap, K, g_mean, g_std, joint_counts, path, **kw) -> CategoricalPrior:
    """Their per-label mean / std as ``[K, C]``; unseen (or NaN, seen once) classes take the global statistics."""
    dropped = _unknown_categorical(cat, cmap, path, K, joint_counts is not None)
    mean, std, seen = np.tile(g_mean, (K, 1)), np.tile(g_std, (K, 1)), np.zeros(K)
    owners: dict[int, int] = {}
    for value, (m, s) in sorted(cat.items()):
        if value in dropped:
            continue
        c = cmap[value]
        if c in owners:
            raise ValueError(f"statistics file {path}: label values {owners[c]} and {value} both map to class {c}, "
                             "and the file has no counts to pool them by")
        owners[c] = value
        if np.isfinite(m).all() and np.isfinite(s).all():
            mean[c], std[c], seen[c] = m, s, 1
    counts = joint_counts * seen if joint_counts is not None else seen
    prov = kw.pop("provenance")
    prov = {**prov, "kind": "categorical", "std": "unbiased (torch std) of one token per image and class",
            "unseen_classes": [int(c) for c in np.flatnonzero(seen == 0)],
            "unseen_take": "the global token statistics", "dropped_label_values": dropped,
            "class_counts": "tokens of the joint file" if joint_counts is not None else "1 = seen (no counts)"}
    return CategoricalPrior(mean=torch.from_numpy(mean).float(), std=torch.from_numpy(std).float(),
                            class_counts=torch.from_numpy(counts).float(), provenance=prov, **kw)


def release_priors(files: dict[str, str | os.PathLike], id_map: dict[int, int], num_classes: int,
                   ignore_index: int | None, fallback: str = "spatial", latent_shape=None) -> dict:
    """The authors' statistics as this project's priors: ``{"spatial", "categorical", "joint"}`` (those given).

    Args:
        files: ``{"spatial" | "categorical" | "joint": path}`` (:func:`find_stat_files`).
        id_map: their label value -> this project's dataset id (``conventions.authors_id_map``).
        num_classes, ignore_index: this project's label set (the ignore id becomes class ``num_classes``).
        fallback: the joint prior's cells seen 0 times take the ``"spatial"`` (their script's
            ``spatial-class-joint``) or ``"class"`` (``class-spatial-joint``) statistics.
        latent_shape: ``(C, h, w)`` the priors must have (a pipeline's), if known.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if not files or set(files) - set(STAT_SUFFIXES):
        raise ValueError(f"statistics kinds must be among {sorted(STAT_SUFFIXES)}, got {sorted(files)}")
    need = {"spatial": "spatial", "class": "categorical"}[fallback]
    if "joint" in files and need not in files:
        raise ValueError(f"the joint statistics fall back to the {need} ones (fallback={fallback!r}): give the "
                         f"*{STAT_SUFFIXES[need]} file too, or choose the other fallback")
    files = {k: Path(p) for k, p in files.items()}
    K = int(num_classes) + (1 if ignore_index is not None else 0)
    cmap = prior_class_map(id_map, num_classes, ignore_index)
    raw = {k: read_release_npy(p) for k, p in files.items()}
    spatial = _spatial(raw["spatial"], files["spatial"]) if "spatial" in raw else None
    cat = _categorical(raw["categorical"], files["categorical"]) if "categorical" in raw else None
    joint = _joint(raw["joint"], files["joint"]) if "joint" in raw else None
    shape = _latent_shape(spatial, cat, joint, latent_shape)
    pooled, dropped, images = None, ([], 0.0), 0
    if joint is not None:
        dropped = _unknown_joint(joint[2], cmap, files["joint"], K)
        pooled = _pool_joint(*joint, cmap, K)
        images = int(joint[2].sum(axis=0).max())  # one token per position and image: the images behind the file
    prov = {"source": TOOLKIT, "files": {k: file_digest(p) for k, p in files.items()},
            "label_map": {str(v): c for v, c in sorted(cmap.items())}}
    kw = dict(num_classes=K, latent_shape=shape, num_images=images)
    out = {}
    if spatial is not None:
        out["spatial"] = SpatialPrior(mean=torch.from_numpy(spatial[0]).float(), std=torch.from_numpy(spatial[1])
                                      .float(), provenance={**prov, "kind": "spatial", "std": "population"}, **kw)
    if cat is not None:
        g_mean, g_std = _global(spatial, pooled)
        out["categorical"] = _categorical_prior(cat, cmap, K, g_mean, g_std,
                                                pooled[0].sum(axis=(1, 2)) if pooled is not None else None,
                                                files["categorical"], provenance=prov, **kw)
    if pooled is not None:
        n, m, s = pooled
        if fallback == "spatial":
            fb_m, fb_s = spatial[0][None], spatial[1][None]
        else:
            fb_m = out["categorical"].mean.double().numpy()[:, :, None, None]
            fb_s = out["categorical"].std.double().numpy()[:, :, None, None]
        never = (n == 0)[:, None]
        out["joint"] = JointPrior(
            mean=torch.from_numpy(np.where(never, fb_m, m)).float(), std=torch.from_numpy(np.where(never, fb_s, s))
            .float(), count=torch.from_numpy(n).float(), min_count=1, fallback=fallback, provenance={
                **prov, "kind": "joint", "std": "population, with their epsilon 1e-6 in the denominators",
                "fallback_cells": int((n == 0).sum()), "dropped_label_values": dropped[0],
                "dropped_token_share": dropped[1]}, **kw)
    return out
