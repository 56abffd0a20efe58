"""Scores of generated images: settings sampled on the same maps, scored together, compared through paired intervals.

A :class:`Comparison` holds the settings of one table (the priors of Table 1, the mu of Fig. 8, the starts
of Fig. 3, ...) sampled on the same ``n`` evaluation maps with the same seeds. For each setting it computes
once what every metric needs (Frechet features, per-image confusion matrices), then resamples the maps and
the reference images together (:mod:`scp_core.metrics.resampling`, 1,000 resamples): every interval carries
the reference set's variation, and a verdict between two settings reads the interval of their difference
(:mod:`scp_core.metrics.verdict`).

**Judges.** The first: the profile's segmenter (``miou`` / ``acc``) and its Frechet distance ``fd`` (FD-toy
on the toy profiles, the toy segmenter's features; FID with Inception at real scale). FD-toy and the first
mIoU come from one network, so on the toy profiles a **second, independent judge** scores the same images:
``fid`` and ``kid`` with the real Inception (2048-d pool features), and ``miou_b`` / ``acc_b`` from a second
segmenter trained independently (other widths, another seed: ``zoo/toy/segmenter-b``). At real scale
``kid`` comes from FID's own Inception features.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from ..data import images_labels, to_float
from ..data.profiles import SECOND_SEGMENTER, repo_path
from ..metrics import SegmentationMeter, extract_features
from ..metrics.frechet import nearest
from ..metrics.resampling import (N_BOOT, Draws, block_indices, block_length, block_scale, difference, draw_indices,
                                  frechet_draws, interval, segmentation_draws, widened)
from ..metrics.verdict import best_text, compare, relation_of_difference
from .. import timing
from . import cache
from .context import CONTEXT, eval_set, feature_extractor, load_data, load_segmenter
from .settings import Settings

FEATURE_BATCH = 100  # images per feature-extractor pass; part of every committed FD (conv sums round per batch)
SMOKE_BOOT = 50  # resamples in smoke runs (they check the code path)

# column -> (what a reader sees, lower is better, decimals)
COLUMNS = {"fd": (None, True, 3), "miou": ("mIoU", False, 1), "acc": ("accuracy", False, 1),
           "fid": ("FID (Inception)", True, 2), "kid": ("KID", True, 4),
           "miou_b": ("mIoU (segmenter B)", False, 1), "acc_b": ("accuracy (segmenter B)", False, 1)}


def second_judge(s: Settings) -> bool:
    """Whether ``s`` is scored by the second judge too (the toy profiles, whose FD-toy and mIoU share a network)."""
    return s.is_toy and not s.smoke


def column_label(s: Settings, col: str) -> str:
    """How a column is named in sentences: ``fd`` is the profile's distance (FD-toy, or FID at real scale)."""
    return s.metric if col == "fd" else COLUMNS[col][0]


def _inception(s: Settings):
    return feature_extractor(replace(s, metric="FID"))


def _features(s: Settings, images_u8: torch.Tensor, inception: bool = False) -> torch.Tensor:
    """Frechet features of uint8 images, float64 ``[N, D]``: the profile's (FD-toy or FID), or Inception's.

    Kept for the kernel by the images' digest: one image set scored against two regimes (notebook 10) or in
    two tables passes the network once.
    """
    images_u8 = torch.as_tensor(images_u8)
    metric = "FID" if inception else s.metric
    digest = hashlib.sha1(images_u8.contiguous().numpy().tobytes()).hexdigest()
    extractor = _inception(s) if inception else feature_extractor(s)

    def compute():
        with timing.stage("inception" if metric == "FID" else "features"):
            if not cache.enabled(s):
                return extract_features(images_u8, extractor, FEATURE_BATCH)
            return cache.features(s, images_u8, cache.extractor_fingerprint(extractor),
                                  lambda missing: extract_features(missing, extractor, FEATURE_BATCH))
    return CONTEXT.get(("features", metric, s.segmenter if metric == "FD-toy" else None, digest, images_u8.shape),
                       compute)


def reference_features(s: Settings, inception: bool = False) -> torch.Tensor:
    """Features of the real evaluation images (at least 100 outside smoke runs): the Frechet reference set.

    Its first ``n_eval`` images are the real images of the evaluated maps (a map carries its real image when
    resampled). ``inception``: Inception's features (the toy profiles' second judge) instead of the profile's.
    """
    metric = "FID" if inception else s.metric
    key = ("ref_feats", s.dataset, s.n_eval, metric, tuple(s.eval_splits))
    n = max(s.n_eval, 100) if not s.smoke else s.n_eval
    return CONTEXT.get(key, lambda: _features(s, eval_set(replace(s, n_eval=n))[0], inception))


@timing.timed("segmenter")
def frame_block(s: Settings) -> dict:
    """The block length of the maps' moving-block bootstrap, from the real evaluation frames in their order; 1 on the
    toy profiles, whose maps are drawn independently.

    At real scale the series are the first three principal components of the frames' Inception features: how a
    frame's content, as the metric sees it, follows its neighbour's. :func:`block_length` picks the
    length (Politis and White); frames that are independent give about 1. Returns its dict with ``"series"``.
    """
    if s.is_toy:
        return {"block": 1, "series": "none: toy maps are drawn independently"}
    feats = reference_features(s).numpy()[:s.n_eval]
    centred = feats - feats.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = block_length(centred @ vt[:3].T)
    out["series"] = "the first 3 principal components of the real evaluation frames' features, in frame order"
    return out


def _confusions(s: Settings, seg, ds, images_u8: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Each image's confusion matrix against its map (``[n, K, K + 1]``): read from the batch's cache where an
    earlier notebook scored the same image with the same segmenter (:func:`cache.confusions`)."""
    def make(todo) -> np.ndarray:
        meter = SegmentationMeter(ds.num_classes, ignore_index=ds.ignore_index, keep_per_sample=True)
        for i in range(0, len(todo), 100):
            part = todo[i:i + 100]
            meter.update(seg.predict(to_float(images_u8[part])), labels[part])
        return meter.per_sample
    if not cache.enabled(s):
        return make(list(range(len(images_u8))))
    return cache.confusions(s, images_u8, labels, cache.extractor_fingerprint(seg), make)


class Comparison:
    """Settings sampled on the same maps with the same seeds (sample ``i`` of each on map ``i``), scored
    together.

    Args:
        s: the settings (profile, metric, seed of the resampling).
        labels: the ``n`` evaluation maps, the first ``n`` of :func:`eval_set` (so the reference set's first
            ``n`` images are their real images).
        n_boot: resamples (default 1,000; smoke runs 50; 0: point estimates only).
        judge_b: score with the second judge too (default :func:`second_judge`: the toy profiles outside
            smoke runs).
        block: the resampling's block length in maps (1: maps drawn independently; more: a moving-block
            bootstrap of consecutive maps, for frames of one drive, :func:`block_indices`).

    A setting may hold ``k`` samples of every map (``k n`` images, seed-major: sample ``r`` of map ``i`` is
    image ``r n + i``); a resample draws maps, and each map brings all its samples and its real image.
    """

    def __init__(self, s: Settings, labels: torch.Tensor, n_boot: int | None = None, judge_b: bool | None = None,
                 block: int = 1):
        self.s, self.labels = s, torch.as_tensor(labels)
        self.n_boot = (SMOKE_BOOT if s.smoke else N_BOOT) if n_boot is None else int(n_boot)
        self.judge_b = second_judge(s) if judge_b is None else bool(judge_b)
        self.block = int(block)
        self.items: dict[str, dict] = {}
        self._draws: dict | None = None

    @property
    def columns(self) -> list[str]:
        """The first judge's columns (with KID at real scale), then the second judge's (toy profiles)."""
        return (["fd", "miou", "acc"] + ["kid"] * (self.s.metric == "FID")
                + ["fid", "kid", "miou_b", "acc_b"] * self.judge_b)

    def add(self, name: str, images_u8: torch.Tensor) -> None:
        """Score one setting's images (``[k n, H, W, 3]`` uint8, image ``r n + i`` on map ``i``). The resamples are
        drawn once, for every setting together, when a row or a comparison is first asked for."""
        images_u8 = torch.as_tensor(images_u8)
        n = len(self.labels)
        if len(images_u8) == 0 or len(images_u8) % n:
            raise ValueError(f"setting {name!r} has {len(images_u8)} images for {n} maps: give k >= 1 samples of "
                             "every map, seed-major")
        labels = self.labels.repeat(len(images_u8) // n, *([1] * (self.labels.dim() - 1)))
        s, ds = self.s, load_data(self.s, "val")
        item = {"cms": {"miou": _confusions(s, load_segmenter(s), ds, images_u8, labels)},
                "feats": {"fd": _features(s, images_u8).numpy()}}
        if self.judge_b:
            seg_b = load_segmenter(replace(s, segmenter=str(repo_path(SECOND_SEGMENTER))))
            item["cms"]["miou_b"] = _confusions(s, seg_b, ds, images_u8, labels)
            item["feats"]["fid"] = _features(s, images_u8, inception=True).numpy()
        self.items[name] = item
        self._draws = None

    def _all_draws(self) -> dict[str, dict[str, Draws]]:
        """``{column: {setting: Draws}}`` on one set of resampled maps (and reference images) for every setting."""
        if self._draws is not None:
            return self._draws
        with timing.stage("resampling"):
            self._draws = self._compute_draws()
        return self._draws

    def _compute_draws(self) -> dict[str, dict[str, Draws]]:
        n, s = len(self.labels), self.s
        index = block_indices(n, max(self.n_boot, 1), s.seed, self.block)
        out: dict[str, dict[str, Draws]] = {}
        for key, inception in (("fd", False), ("fid", True)):
            if key not in next(iter(self.items.values()))["feats"]:
                continue
            ref = reference_features(s, inception).numpy()
            ref_maps = n if n <= len(ref) else 0
            kid = inception or s.metric == "FID"
            feats = {k: v["feats"][key] for k, v in self.items.items()}

            def make(subset, ref=ref, ref_maps=ref_maps, kid=kid):
                return frechet_draws(subset, ref, index, ref_maps=ref_maps, seed=s.seed, kid=kid)
            if cache.enabled(s):
                out[key], out_kid = cache.frechet_draws(s, feats, ref, index, ref_maps=ref_maps, seed=s.seed, kid=kid,
                                                        make=make)
            else:
                r = make(feats)
                out[key], out_kid = r if kid else (r, None)
            if out_kid is not None:
                out["kid"] = out_kid
        for key in ("miou", "miou_b"):
            if key in next(iter(self.items.values()))["cms"]:
                seg = segmentation_draws({k: v["cms"][key] for k, v in self.items.items()}, index)
                out[key] = {k: d["miou"] for k, d in seg.items()}
                out[key.replace("miou", "acc")] = {k: d["acc"] for k, d in seg.items()}
        scale = block_scale(n, self.block)  # few blocks vary too little: their draws widened (1.0 for block 1)
        return {col: {k: widened(d, scale) for k, d in by.items()} for col, by in out.items()}

    def draws(self, col: str = "fd") -> dict[str, Draws]:
        """Every setting's point estimate and resampled values in column ``col`` (``{setting: Draws}``): the same
        resampled maps (row ``b`` of ``draw_indices(n, n_boot, s.seed)``) for every setting."""
        return self._all_draws()[col]

    def row(self, name: str) -> dict:
        """The setting's values, each with its 95 % interval (``<col>_ci``; none without resamples), ``n``,
        ``metric`` and ``n_boot``."""
        draws = self._all_draws()
        out = {"n": int(len(self.labels)), "metric": self.s.metric, "n_boot": self.n_boot}
        if len(self.items[name]["cms"]["miou"]) != len(self.labels) or self.block != 1:  # k samples, blocks
            out.update(n_images=int(len(self.items[name]["cms"]["miou"])), block=self.block)
        for col in self.columns:
            d = draws[col][name]
            out[col] = float(d.value)
            if self.n_boot:
                out[col + "_ci"] = list(interval(d))
        return out

    def rows(self) -> list[dict]:
        return [{"setting": k, **self.row(k)} for k in self.items]

    def diff(self, a: str, b: str, col: str = "fd") -> tuple[float, tuple[float, float]]:
        """``a - b`` in column ``col`` and its 95 % interval from the paired draws."""
        d = self._all_draws()[col]
        return difference(d[a], d[b])

    def record(self, a: str, b: str, col: str = "fd", label_a: str | None = None, label_b: str | None = None,
               same: bool = False) -> dict:
        """One comparison as the metrics files keep it: both values and intervals, the difference, its
        interval, the verdict and the sentence. ``same``: ``a`` and ``b`` are the same start by construction (the
        same start distribution and seeds): no verdict, whatever rounding left between their images
        (:func:`scp_core.metrics.verdict.relation_of_difference`)."""
        ra, rb = self.row(a), self.row(b)
        label, lower, digits = COLUMNS[col]
        diff, ci = self.diff(a, b, col)
        text = compare(label_a or a, ra[col], ra[col + "_ci"], label_b or b, rb[col], rb[col + "_ci"], diff_ci=ci,
                       n=ra["n"], lower_is_better=lower, digits=digits if col != "fd" or self.s.metric != "FID" else 1,
                       same=same)
        return {"a": label_a or a, "b": label_b or b, "column": col, "metric": column_label(self.s, col),
                "value_a": ra[col], "ci_a": ra[col + "_ci"], "value_b": rb[col], "ci_b": rb[col + "_ci"],
                "diff": diff, "diff_ci": list(ci), "verdict": relation_of_difference(ci, lower, same), "n": ra["n"],
                "n_boot": self.n_boot, "text": f"{column_label(self.s, col)}: {text}"}

    def compare(self, a: str, b: str, col: str = "fd", **labels) -> str:
        """The sentence of :meth:`record`."""
        return self.record(a, b, col, **labels)["text"]

    def best(self, names: list[str], col: str = "fd", labels: list[str] | None = None) -> str:
        """The best of ``names`` in ``col`` with every entry not distinguishable from it (paired differences)."""
        rows = [self.row(k) for k in names]
        _, lower, digits = COLUMNS[col]
        d = self._all_draws()[col]
        return best_text(labels or names, [r[col] for r in rows], [r[col + "_ci"] for r in rows],
                         lambda i: [list(difference(d[k], d[names[i]])[1]) for k in names], n=rows[0]["n"],
                         metric=column_label(self.s, col), lower_is_better=lower,
                         digits=digits if col != "fd" or self.s.metric != "FID" else 1)


def score(s: Settings, gen_u8: torch.Tensor, labels: torch.Tensor, ci: bool = True) -> dict:
    """One setting alone: its row of a :class:`Comparison` (intervals with the reference set's variation)."""
    c = Comparison(s, labels, n_boot=None if ci else 0)
    c.add("images", gen_u8)
    return c.row("images")


def real_training_draw(s: Settings, n: int) -> tuple[np.ndarray, str]:
    """The real training images of the real-versus-real line: their indices and how they were drawn.

    At real scale ``n`` frames drawn at random, without replacement, across the whole training split with
    ``np.random.default_rng(s.seed)`` (the first frames in name order are one sequence: CamVid's first 101 are the
    dusk drive 0001TP, a shift of sequence against daylight validation frames, not the spread of two real sets).
    The toy profiles' training images are generated independently, so their first ``n`` are such a draw already.
    """
    size = len(load_data(s, "train"))
    n = min(int(n), size)
    if s.is_toy:
        return np.arange(n), f"the first {n} of the {size} generated training images"
    index = np.sort(np.random.default_rng(s.seed).choice(size, n, replace=False))
    return index, f"{n} of the {size} training frames drawn at random across sequences (seed {s.seed})"


def real_reference(s: Settings, n: int | None = None) -> dict:
    """What real images score: the ceiling of the segmentation scores and the real-versus-real distance.

    mIoU / accuracy (both judges): the segmenters on the real validation images of the evaluated maps (the
    ceiling a generator can reach). The distances: ``n`` (default ``n_eval``) real *training* images
    (:func:`real_training_draw`) against the reference set of the evaluation splits (both resampled,
    independently): what two real sets of this size give; the one real-versus-real line of a profile. A start
    that still holds the reference image itself (low mu in Fig. 3) can fall below it: that is a reconstruction,
    not generation.
    """
    img, lab = eval_set(s)
    c = Comparison(s, lab)
    c.add("real val", img)
    out = {k: v for k, v in c.row("real val").items() if not k.startswith(("fd", "fid", "kid"))}
    train = load_data(s, "train")
    which, drawn = real_training_draw(s, len(img) if n is None else n)
    real_train, _ = images_labels(train, which)
    index = draw_indices(len(which), max(c.n_boot, 1), s.seed)
    for key, inception in (("fd", False), ("fid", True)):
        if key == "fid" and not c.judge_b:
            continue
        feats = {"train": _features(s, real_train, inception).numpy()}
        kid = inception or s.metric == "FID"
        ref = reference_features(s, inception).numpy()
        with timing.stage("resampling"):
            r = frechet_draws(feats, ref, index, ref_maps=0, seed=s.seed, kid=kid)
        for col, d in zip((key, "kid"), r if kid else (r,)):
            out[col] = d["train"].value
            if c.n_boot:
                out[col + "_ci"] = list(interval(d["train"]))
    out["real_versus_real"] = f"{drawn}, against the {' + '.join(s.eval_splits)} reference"
    out["n_real_train"] = int(len(which))
    return out


@timing.timed("segmenter")
def map_agreement(s: Settings, images_u8: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per-image mIoU (%): the segmenter on each image against its own label map (one number per image)."""
    seg, ds = load_segmenter(s), load_data(s, "val")
    out = []
    for img, lab in zip(images_u8, labels):
        meter = SegmentationMeter(ds.num_classes, ignore_index=ds.ignore_index)
        meter.update(seg.predict(to_float(img[None])), lab[None])
        out.append(100 * float(meter.compute()["miou"]))
    return out


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
    distance, index = nearest(_features(s, images_u8), _features(s, real_train))
    return {"distance": distance, "index": index, "n_train": n}
