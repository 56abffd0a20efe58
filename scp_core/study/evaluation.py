"""Scores of generated images: mIoU / accuracy by a segmenter, the Frechet distance (FD-toy or FID), KID.

Every number carries the sample count it rests on and, where affordable, a 95 % bootstrap interval.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..data import images_labels, to_float
from ..metrics import (SegmentationMeter, feature_statistics, frechet_distance, frechet_distance_few,
                       kid_from_features)
from .context import CONTEXT, eval_set, feature_extractor, load_data, load_segmenter
from .settings import Settings


def _features(s: Settings, images_u8: torch.Tensor, batch: int = 100) -> torch.Tensor:
    ext = feature_extractor(s)
    with torch.no_grad():
        return torch.cat([ext(images_u8[i:i + batch].permute(0, 3, 1, 2).float() / 255)
                          for i in range(0, len(images_u8), batch)]).double()

def frechet_distance_of(fa: torch.Tensor, fb: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(fa.numpy()), *feature_statistics(fb.numpy()))

def frechet_bootstrap(fa: torch.Tensor, fb: torch.Tensor, n_boot: int = 100, seed: int = 0):
    """Frechet distance of features ``fa`` (generated) to ``fb`` (reference) and a 95 % interval.

    The interval is a percentile bootstrap over the generated images, shifted by the
    bootstrap's bias. Resampling with replacement repeats images, which shrinks the sample's
    spread and so *inflates* a Frechet distance: the raw percentile interval sits above the
    estimate's own sampling distribution. Subtracting the bias estimate (mean of the draws
    minus the estimate) re-centres it; ``tests/test_study.py`` checks the coverage.

    Returns:
        ``(value, (lo, hi))``, or ``(value, None)`` for ``n_boot <= 0``.
    """
    value = frechet_distance_of(fa, fb)
    if n_boot <= 0:
        return value, None
    rng = np.random.default_rng(seed)
    draws = [fa[rng.integers(0, len(fa), len(fa))] for _ in range(n_boot)]
    if len(fa) < fa.shape[1]:  # fewer images than features (FID: 2048-d): the n x n form, same quantity
        mu2, sigma2 = feature_statistics(fb.numpy())
        boots = np.array([frechet_distance_few(d.numpy(), mu2, sigma2) for d in draws])
    else:
        boots = np.array([frechet_distance_of(d, fb) for d in draws])
    bias = float(boots.mean() - value)
    return value, tuple((np.percentile(boots, [2.5, 97.5]) - bias).tolist())

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
    fd, fd_ci = frechet_bootstrap(gen_feats, ref_feats, n_boot=100 if ci else 0)
    out["fd"] = fd
    if s.metric == "FID":  # KID beside FID: unbiased, the fair comparison at a hundred images
        out.update(kid_score(gen_feats, ref_feats))
    if ci:
        b = meter.bootstrap(n_boot=200, seed=s.seed)
        out["miou_ci"] = [100 * v for v in b["miou"]]
        out["acc_ci"] = [100 * v for v in b["acc"]]
        out["fd_ci"] = list(fd_ci)
    return out

def real_ceiling(s: Settings) -> dict:
    """What real images score: the ceiling of any generator.

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
