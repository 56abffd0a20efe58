"""Scores of generated images: mIoU / accuracy by a segmenter, the Frechet distance (FD-toy or FID), KID.

Every number carries the sample count it rests on and, where affordable, a 95 % bootstrap interval.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..data import images_labels, to_float
from ..metrics import (SegmentationMeter, extract_features, frechet_bootstrap, frechet_distance_of,
                       kid_from_features)
from .context import CONTEXT, eval_set, feature_extractor, load_data, load_segmenter
from .settings import Settings

FEATURE_BATCH = 100  # images per feature-extractor pass; part of every committed FD (conv sums round per batch)


def _features(s: Settings, images_u8: torch.Tensor) -> torch.Tensor:
    """The profile's Frechet features (FD-toy or FID) of uint8 images, float64 ``[N, D]``."""
    return extract_features(images_u8, feature_extractor(s), FEATURE_BATCH)


def kid_score(gen_feats: torch.Tensor, ref_feats: torch.Tensor) -> dict:
    """KID (unbiased MMD^2, cubic kernel; :mod:`scp_core.metrics.kid`) on all images, with its standard error.

    ``kid`` is the U-statistic on every generated and reference image (``kid_full``) and
    ``kid_se`` its two-sample jackknife standard error; both are raw values (tables show them
    times 10^3, as papers do). At these counts a subset average would only repeat the full set.
    """
    k = kid_from_features(gen_feats.numpy(), ref_feats.numpy(), n_subsets=1, subset_size=len(gen_feats))
    return {"kid": k["kid_full"], "kid_se": k["kid_se"]}


def score(s: Settings, gen_u8: torch.Tensor, labels: torch.Tensor, ci: bool = True) -> dict:
    """mIoU / accuracy (segmenter on generated images vs. the input maps) and the Frechet distance.

    The distance is stored as ``fd`` (with ``fd_ci``) and ``metric`` names it: ``s.metric``,
    FD-toy on the toy profiles, FID at real scale; tables and figures label it from there.
    With FID, ``kid`` and ``kid_se`` (:func:`kid_score`) come from the same Inception features.
    """
    seg = load_segmenter(s)
    ds = load_data(s, "val")
    meter = SegmentationMeter(ds.num_classes, ignore_index=ds.ignore_index, keep_per_sample=ci)
    for i in range(0, len(gen_u8), 100):
        meter.update(seg.predict(to_float(gen_u8[i:i + 100])), labels[i:i + 100])
    res = meter.compute()
    out = {"miou": 100 * res["miou"], "acc": 100 * res["acc"], "n": int(len(gen_u8)), "metric": s.metric}
    gen_feats, ref_feats = _features(s, gen_u8), reference_features(s)
    # smoke runs check the code path: 20 resamples there (FID's 2048-d resamples took 15 s per prior)
    fd, fd_ci = frechet_bootstrap(gen_feats, ref_feats, n_boot=(20 if s.smoke else 100) if ci else 0)
    out["fd"] = fd
    if s.metric == "FID":  # KID beside FID: unbiased, the fair comparison at a hundred images
        out.update(kid_score(gen_feats, ref_feats))
    if ci:
        b = meter.bootstrap(n_boot=200, seed=s.seed)
        out["miou_ci"] = [100 * v for v in b["miou"]]
        out["acc_ci"] = [100 * v for v in b["acc"]]
        out["fd_ci"] = list(fd_ci)
    return out


def map_agreement(s: Settings, images_u8: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per-image mIoU (%): the segmenter on each image against its own label map (one number per image)."""
    seg, ds = load_segmenter(s), load_data(s, "val")
    out = []
    for img, lab in zip(images_u8, labels):
        meter = SegmentationMeter(ds.num_classes, ignore_index=ds.ignore_index)
        meter.update(seg.predict(to_float(img[None])), lab[None])
        out.append(100 * float(meter.compute()["miou"]))
    return out


def real_ceiling(s: Settings) -> dict:
    """What real images score: the ceiling of any generator (index.md: "real images").

    mIoU / accuracy: the toy segmenter on the real validation images of the evaluated maps.
    FD-toy / FID (and KID): ``n_eval`` real *training* images against the validation reference
    (two independent real sets of the same size: the floor a perfect generator would reach).
    """
    img, lab = eval_set(s)
    out = score(s, img, lab, ci=False)
    train = load_data(s, "train")
    real_train, _ = images_labels(train, np.arange(min(len(img), len(train))))
    train_feats, ref_feats = _features(s, real_train), reference_features(s)
    out["fd"] = frechet_distance_of(train_feats, ref_feats)
    if s.metric == "FID":
        out.update(kid_score(train_feats, ref_feats))
    return out


def reference_features(s: Settings) -> torch.Tensor:
    """Features of the real evaluation images (at least 100 outside smoke runs): the Frechet reference set."""
    key = ("ref_feats", s.dataset, s.n_eval, s.metric, tuple(s.eval_splits))
    return CONTEXT.get(key, lambda: _features(s, eval_set(replace(s, n_eval=max(s.n_eval, 100) if not s.smoke
                                                                   else s.n_eval))[0]))


def nearest_training(s: Settings, images_u8: torch.Tensor, n_train: int | None = None) -> dict:
    """The memorisation check: each image's nearest training image in the profile's feature space.

    Few training images (CamVid: 355 frames) invite a generator to copy them. For each image of
    ``images_u8`` this gives the Euclidean distance in the Frechet features (Inception's 2048-d
    pool features for FID, the toy segmenter's for FD-toy) to the nearest of the first ``n_train``
    training images (default all) and that image's index. Read it against the same numbers of the
    real validation images (:func:`eval_set`): a generator that copies sits well below them.
    Returns ``{"distance": float64 [n], "index": int [n], "n_train": int}``.
    """
    train = load_data(s, "train")
    n = len(train) if n_train is None else min(int(n_train), len(train))
    real_train, _ = images_labels(train, np.arange(n))
    d = torch.cdist(_features(s, images_u8), _features(s, real_train))
    best = d.min(dim=1)
    return {"distance": best.values.numpy(), "index": best.indices.numpy(), "n_train": n}
