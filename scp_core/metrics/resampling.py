"""Paired, two-sided resampling: the one scheme behind every interval and verdict of the study.

The unit of a comparison is the **evaluation map**. Every setting (prior, mu, model) is sampled on the
same maps with the same seeds, so setting A's image ``i`` and setting B's image ``i`` share map ``i``:
the settings are *paired*. One resample draws map indices ``I`` (``n`` with replacement) and applies
them to every setting at once, and draws the **reference** images ``J`` too, so an interval carries the
reference set's own variation. Where the reference images are the real images of the evaluated maps
(the study's Frechet reference: :func:`scp_core.study.evaluation.reference_features`), a map carries its
real image with it and ``J = I``; an independent reference set (real training images for the
real-versus-real line) is resampled on its own.

Each metric is recomputed from per-item quantities computed once, so a thousand resamples cost seconds:

* Frechet distances and KID from **Gram matrices** of the features (``X X^T``, ``X Y^T``, ``Y Y^T``):
  with multiplicities ``w`` (how often each generated image was drawn) and ``v`` (each reference image),
  the resampled means, traces and ``Tr (Sigma_1 Sigma_2)^(1/2)`` (the nuclear norm of the weighted,
  centred cross-Gram matrix, whose squared singular values are the non-zero eigenvalues of
  ``Sigma_1 Sigma_2``) need no ``D x D`` matrix: the same value as :func:`.frechet.frechet_distance` of
  the resampled feature sets, at 256 or 2048 dimensions alike;
* mIoU / accuracy from each image's confusion matrix (``SegmentationMeter(keep_per_sample=True)``).

Intervals are 95 % percentile intervals shifted by the bootstrap's bias (resampling repeats images, which
inflates a Frechet distance; :func:`interval`). The verdict between two settings reads the interval of
their **difference** (:func:`difference`): better or worse only where it excludes 0
(:func:`scp_core.metrics.verdict.relation_of_difference`). ``tests/test_resampling.py`` calibrates
it:
two arms drawn from one distribution are called not distinguishable in about 95 % of replications.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, stats

from .segmentation import SegmentationMeter

__all__ = ["N_BOOT", "Draws", "draw_indices", "block_indices", "block_scale", "widened", "block_length",
           "image_weights", "multiplicities", "FrechetGram", "frechet_draws", "frechet_batched", "reference_weights",
           "segmentation_draws", "interval", "difference", "detectable"]

N_BOOT = 1000  # resamples of every reference interval (at least 1,000)
LEVEL = 95.0


def draw_indices(n_maps: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_maps]`` map indices drawn with replacement from ``np.random.default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, n_maps, size=(int(n_boot), int(n_maps)))


def block_indices(n_maps: int, n_boot: int, seed: int, block: int = 1) -> np.ndarray:
    """``[n_boot, n_maps]`` map indices of a **moving-block bootstrap** (Kunsch 1989) in the maps' order.

    Each row joins ``ceil(n_maps / block)`` runs of ``block`` consecutive maps, their first maps drawn uniformly
    from ``0 .. n_maps - block``, and keeps the first ``n_maps``: frames of one drive that resemble their
    neighbours stay together, so an interval carries the dependence between them (an independent draw of such
    frames is too narrow). ``block = 1`` is :func:`draw_indices` (the same rows).
    """
    block = int(block)
    if block < 1 or block > n_maps:
        raise ValueError(f"block length must lie in 1 .. {n_maps} (the maps), got {block}")
    if block == 1:
        return draw_indices(n_maps, n_boot, seed)
    starts = np.random.default_rng(seed).integers(0, n_maps - block + 1, size=(int(n_boot), -(-n_maps // block)))
    return (starts[:, :, None] + np.arange(block)).reshape(int(n_boot), -1)[:, :n_maps]


def block_scale(n_maps: int, block: int, level: float = LEVEL) -> float:
    """How much wider a moving-block bootstrap's draws must be for blocks of ``b > 1`` of ``n`` maps:
    ``sqrt(n / (n - b)) * t_{k-1} / z`` at the interval's level, ``k = n / b`` blocks a resample.

    Two corrections for few blocks (CamVid's val drive: blocks of 24 of 101 maps, ``k`` about 4):

    * **the variance**: a resample's blocks are compared with the overlapping blocks' mean, which shares their maps,
      so the bootstrap's variance of a mean is about ``(1 - b / n)`` of the series' (Kunsch 1989; for independent
      maps ``E var* = (sigma^2 / n)(1 - b / n)``): ``sqrt(n / (n - b))`` restores it;
    * **the interval**: that variance rests on about ``k`` independent blocks, so the interval is a ``t`` interval
      with ``k - 1`` degrees of freedom, as the batch-means method's is: its half-width ``t_{k-1}(0.975) / z(0.975)``
      times the normal one (1.42 at ``k`` = 5).

    Measured on drive-like maps (``tests/test_resampling.py``: AR(1) content 0.95, Politis-White blocks of 11 to 50 of
    101 maps), two equal arms are "not distinguishable" (the aim: 95 %) in 86.7 % of 300 replications unwidened
    (512-d features), 91.7 % with the variance correction alone and 97.3 % with both; at 2048 dimensions, 100
    replications: 90 % unwidened, 97 % widened. Where each arm's own noise drifts along the drive too (neighbouring
    maps' paired differences alike), 77.7 %, 84.0 % and 93.7 % (512-d), 78 % and 90 % (2048-d): blocks shorter than
    that drift are the remaining shortfall. ``b = 1`` (maps drawn one by one) is left as the textbook percentile
    bootstrap (1.0). At CamVid's blocks of 24 of 101 the scale is 1.79.
    """
    n_maps, block = int(n_maps), int(block)
    if block < 1 or block >= n_maps:
        raise ValueError(f"block length must lie in 1 .. {n_maps - 1} (fewer than the {n_maps} maps), got {block}")
    if block == 1:
        return 1.0
    k, q = n_maps / block, 0.5 + level / 200
    return float(np.sqrt(n_maps / (n_maps - block)) * stats.t.ppf(q, k - 1) / stats.norm.ppf(q))


def widened(d: Draws, scale: float) -> Draws:
    """``d`` with each draw's deviation from the draws' mean times ``scale`` (:func:`block_scale`): the mean, so the
    bootstrap's bias (:func:`interval`), is kept; the spread, so the interval and :func:`detectable`, grow by
    ``scale``. Paired differences of widened draws are the widened differences (the map is linear), so every arm of
    a comparison takes the same ``scale``."""
    if scale == 1.0:
        return d
    m = float(np.mean(d.draws))
    return Draws(d.value, m + float(scale) * (np.asarray(d.draws, np.float64) - m), dict(d.meta))


def _flat_top(t: np.ndarray) -> np.ndarray:
    """Politis and Romano's trapezoidal lag window: 1 up to ``|t| = 1/2``, falling linearly to 0 at 1."""
    t = np.abs(t)
    return np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))


def block_length(series) -> dict:
    """The moving-block bootstrap's block length for series in frame order (columns of ``series [n, d]``).

    Politis and White (2004), with the correction of Patton, Politis and White (2009), for the circular and
    moving-block bootstraps: ``b = (2 G^2 / D)^(1/3) n^(1/3)``, ``G = sum_k lambda(k / M) |k| R(k)``,
    ``D = 4/3 (sum_k lambda(k / M) R(k))^2`` over ``|k| <= M``, ``R`` the autocovariance, ``lambda``
    :func:`_flat_top`, ``M = 2 m`` where ``m`` is the first lag after which ``K = max(5, sqrt(log10 n))``
    autocorrelations in a row lie within ``2 sqrt(log10 n / n)`` (no correlation left). Each column gets its
    own ``b``; the block is the largest, rounded up (at least 1, at most ``n / 2``).

    Returns ``{"block": int, "per_series": [float], "first_lag_uncorrelated": [int], "acf1": [float]}``
    (``acf1``: each column's lag-1 autocorrelation, the dependence being corrected for).
    """
    x = np.asarray(series, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    n = len(x)
    if n < 8:
        raise ValueError(f"a block length needs at least 8 frames in order, got {n}")
    k_n, bound = max(5, int(np.ceil(np.sqrt(np.log10(n))))), 2.0 * np.sqrt(np.log10(n) / n)
    per, lags, acf1 = [], [], []
    for col in x.T:
        c = col - col.mean()
        r = np.array([c[:n - k] @ c[k:] / n for k in range(n)])  # autocovariance R(0), R(1), ...
        rho = r / r[0] if r[0] > 0 else np.zeros(n)
        small = np.abs(rho[1:]) < bound
        m = next((j for j in range(n - k_n) if small[j:j + k_n].all()), n // 2)
        big_m = min(2 * max(m, 1), n - 1)
        k = np.arange(-big_m, big_m + 1)
        lam, rk = _flat_top(k / big_m), r[np.abs(k)]
        g, d = (lam * np.abs(k) * rk).sum(), 4.0 / 3.0 * (lam * rk).sum() ** 2
        per.append(float((2 * g ** 2 / d) ** (1 / 3) * n ** (1 / 3)) if d > 0 else 1.0)
        lags.append(int(m))
        acf1.append(float(rho[1]))
    block = int(min(max(1, np.ceil(max(per))), n // 2))
    return {"block": block, "per_series": per, "first_lag_uncorrelated": lags, "acf1": acf1}


def image_weights(index: np.ndarray, n_images: int) -> np.ndarray:
    """``[B, n_images]`` multiplicities of images when the rows of ``index`` (``[B, n]``) draw **maps**.

    A setting holds ``k = n_images / n`` samples of every map in seed-major order (image ``j`` is sample
    ``j // n`` of map ``j % n``): each image counts as often as its map was drawn. ``k = 1``: :func:`multiplicities`.
    """
    n = np.atleast_2d(index).shape[1]
    if n_images % n:
        raise ValueError(f"{n_images} images are not a whole number of samples of each of {n} maps")
    return np.tile(multiplicities(index, n), (1, n_images // n))


def multiplicities(index: np.ndarray, n: int) -> np.ndarray:
    """``[B, n]`` counts: how often each item appears in each row of ``index`` (``[B, k]``)."""
    index = np.atleast_2d(index)
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    out = np.zeros((len(index), n))
    np.add.at(out, (rows, index.ravel()), 1.0)
    return out


@dataclass
class Draws:
    """A statistic's point estimate on all items and its ``[B]`` values on the resamples (the same ``B``
    rows of map indices for every setting of one comparison, so two ``Draws`` can be differenced)."""

    value: float
    draws: np.ndarray
    meta: dict = field(default_factory=dict)


def _features(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {x.shape}")
    return x


class FrechetGram:
    """The Gram matrices of one generated set ``X [n, D]`` against a reference ``Y [m, D]``.

    :meth:`distance` gives the Frechet distance of the sets weighted by multiplicities ``w`` (``[n]``,
    summing to ``n``) and ``v`` (``[m]``): exactly :func:`.frechet.frechet_distance` of the resampled sets
    (``np.cov``'s ``n - 1`` normalisation, duplicates counted), through an ``n x m`` singular-value problem
    on the items drawn. :meth:`kid` gives the unbiased MMD^2 with the cubic kernel ``(x.y / D + 1)^3``
    (:mod:`.kid`), from the same matrices.
    """

    def __init__(self, x, y, g_yy: np.ndarray | None = None):
        x, y = _features(x), _features(y)
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"features differ in dimension: {x.shape[1]} vs {y.shape[1]} (two extractors?)")
        self.n, self.m, self.dim = len(x), len(y), x.shape[1]
        self.g_xx, self.g_xy = x @ x.T, x @ y.T
        self.g_yy = y @ y.T if g_yy is None else g_yy

    def distance(self, w: np.ndarray | None = None, v: np.ndarray | None = None) -> float:
        """Frechet distance with multiplicities ``w`` (generated) and ``v`` (reference); ``None``: all once."""
        w = np.ones(self.n) if w is None else np.asarray(w, np.float64)
        v = np.ones(self.m) if v is None else np.asarray(v, np.float64)
        n, m = w.sum(), v.sum()
        gw, gv = self.g_xx @ w, self.g_yy @ v
        mean_xx, mean_yy, mean_xy = w @ gw / n ** 2, v @ gv / m ** 2, w @ self.g_xy @ v / (n * m)
        tr_x = (w @ np.diag(self.g_xx) - n * mean_xx) / (n - 1)
        tr_y = (v @ np.diag(self.g_yy) - m * mean_yy) / (m - 1)
        # centred cross-Gram (x_i - mu_x).(y_j - mu_y) on the items drawn, weighted by sqrt(w_i v_j)
        i, j = np.flatnonzero(w), np.flatnonzero(v)
        gxy_v = (self.g_xy @ v / m)[i]  # x_i . mu_y
        gxy_w = (w @ self.g_xy / n)[j]  # mu_x . y_j
        c = self.g_xy[np.ix_(i, j)] - gxy_v[:, None] - gxy_w[None, :] + mean_xy
        c *= np.sqrt(w[i])[:, None] * np.sqrt(v[j])[None, :] / np.sqrt((n - 1) * (m - 1))
        cc = c @ c.T if c.shape[0] <= c.shape[1] else c.T @ c  # the singular values of c, squared
        ev = linalg.eigh(cc, eigvals_only=True, driver="evd", check_finite=False)[-min(self.dim, *c.shape):]
        cross = np.sqrt(np.clip(ev, 0, None)).sum()  # rank <= D: the rest are rounding noise around 0
        return float(mean_xx + mean_yy - 2 * mean_xy + tr_x + tr_y - 2 * cross)

    def kid(self, w: np.ndarray | None = None, v: np.ndarray | None = None) -> float:
        """Unbiased MMD^2 (cubic polynomial kernel) of the weighted sets: KID's U-statistic, pairs of one
        position with itself left out (a duplicated image still pairs with its copy, as in a resampled set)."""
        w = np.ones(self.n) if w is None else np.asarray(w, np.float64)
        v = np.ones(self.m) if v is None else np.asarray(v, np.float64)
        n, m = w.sum(), v.sum()
        if not hasattr(self, "_k"):
            self._k = tuple((g / self.dim + 1.0) ** 3 for g in (self.g_xx, self.g_yy, self.g_xy))
        k_xx, k_yy, k_xy = self._k
        xx = (w @ k_xx @ w - w @ np.diag(k_xx)) / (n * (n - 1))
        yy = (v @ k_yy @ v - v @ np.diag(k_yy)) / (m * (m - 1))
        return float(xx + yy - 2 * (w @ k_xy @ v) / (n * m))


SMALL_DIM = 64  # up to this many feature dimensions the covariance form runs on all resamples at once


def _weighted_moments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means ``[B, D]`` and covariances ``[B, D, D]`` (``n - 1`` normalisation) of ``x`` under each row of ``w``."""
    n = w.sum(1)[:, None]
    mu = w @ x / n
    second = np.einsum("bn,ni,nj->bij", w, x, x)
    return mu, (second - n[:, :, None] * mu[:, :, None] * mu[:, None, :]) / (n[:, :, None] - 1)


def frechet_batched(x, y, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Frechet distances of ``x`` weighted by each row of ``w`` (``[B, n]``) to ``y`` weighted by ``v``
    (``[B, m]``), all rows at once through the ``D x D`` covariances: ``Tr (S_1 S_2)^(1/2)`` is the trace of
    ``(R S_1 R)^(1/2)`` with ``R = S_2^(1/2)``. For few dimensions (toy features, calibration); the same
    values as :meth:`FrechetGram.distance`."""
    mu1, s1 = _weighted_moments(_features(x), np.atleast_2d(w))
    mu2, s2 = _weighted_moments(_features(y), np.atleast_2d(v))
    lam, vec = np.linalg.eigh(s2)
    r = vec * np.sqrt(np.clip(lam, 0, None))[:, None, :] @ np.swapaxes(vec, 1, 2)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s1 @ r), 0, None)).sum(1)
    tr = np.trace(s1, axis1=1, axis2=2) + np.trace(s2, axis1=1, axis2=2)
    return ((mu1 - mu2) ** 2).sum(1) + tr - 2 * cross


def reference_weights(index: np.ndarray, n_ref: int, ref_maps: int, seed: int) -> np.ndarray:
    """The reference set's multiplicities ``[B, n_ref]`` for each row of ``index`` (``[B, n]``).

    ``ref_maps = n``: the reference's first ``n`` images are the real images of the ``n`` evaluated maps and
    are resampled with them (``J = I``); ``ref_maps = 0``: an independent reference. Images beyond the first
    ``ref_maps`` are resampled on their own (``seed + 1``): a stratified draw of the same size.
    """
    n = index.shape[1]
    if ref_maps not in (0, n) or ref_maps > n_ref:
        raise ValueError(f"ref_maps={ref_maps}: the reference's first images are the real images of all {n} maps "
                         f"(ref_maps={n}, needs at least {n} reference images, got {n_ref}) or of none (0)")
    parts = [multiplicities(index, n)] if ref_maps else []
    if n_ref > ref_maps:
        parts.append(multiplicities(draw_indices(n_ref - ref_maps, len(index), seed + 1), n_ref - ref_maps))
    return np.concatenate(parts, axis=1)


def frechet_draws(gen: dict, ref, index: np.ndarray, *, ref_maps: int, seed: int = 0,
                  kid: bool = False) -> dict[str, Draws] | tuple[dict[str, Draws], dict[str, Draws]]:
    """Frechet distance of every setting's features (``{name: [k n, D]}``, rows = ``k`` samples of the same
    ``n`` maps, seed-major: :func:`image_weights`) to ``ref``, on all items and on each row of ``index``
    (``[B, n]`` map indices, :func:`draw_indices` or :func:`block_indices`).

    ``ref_maps``: ``n`` where the reference's first ``n`` images are the real images of the same maps (they
    are resampled with them), 0 for an independent reference (:func:`reference_weights`). ``kid=True`` also returns
    KID's draws from the same Gram matrices: ``(fd, kid)``.
    """
    ref = _features(ref)
    g_yy = ref @ ref.T
    v_rows = reference_weights(index, len(ref), ref_maps, seed)
    fd_out, kid_out = {}, {}
    for name, feats in gen.items():
        gram = FrechetGram(feats, ref, g_yy)
        if gram.n % index.shape[1]:
            raise ValueError(f"setting {name!r} has {gram.n} images, not a whole number of samples of each of the "
                             f"{index.shape[1]} maps the indices draw")
        w_rows = image_weights(index, gram.n)
        if gram.dim <= SMALL_DIM:
            draws = frechet_batched(feats, ref, w_rows, v_rows)
        else:
            draws = np.array([gram.distance(w, v) for w, v in zip(w_rows, v_rows)])
        fd_out[name] = Draws(gram.distance(), draws)
        if kid:
            kid_out[name] = Draws(gram.kid(), np.array([gram.kid(w, v) for w, v in zip(w_rows, v_rows)]))
    return (fd_out, kid_out) if kid else fd_out


def _scores(cm: np.ndarray) -> tuple[float, float]:
    """mIoU and pixel accuracy (fractions) of a ``K x (K+1)`` confusion matrix, by the meter's own rule."""
    s = SegmentationMeter._scores(cm, cm.shape[0])
    return s["miou"], s["acc"]


def segmentation_draws(per_sample: dict, index: np.ndarray) -> dict[str, dict[str, Draws]]:
    """mIoU and accuracy (in %) of every setting from its per-image confusion matrices (``{name: [k n, K, K+1]}``,
    ``k`` samples of each map as in :func:`image_weights`),
    on all images and on each row of ``index``: ``{name: {"miou": Draws, "acc": Draws}}``."""
    out = {}
    for name, cms in per_sample.items():
        cms = np.asarray(cms, np.float64)
        w_rows = image_weights(index, len(cms))
        flat = cms.reshape(len(cms), -1)
        pooled = (w_rows @ flat).reshape(len(w_rows), *cms.shape[1:])
        miou, acc = _scores(cms.sum(0))
        boots = np.array([_scores(c) for c in pooled]) * 100
        out[name] = {"miou": Draws(100 * miou, boots[:, 0]), "acc": Draws(100 * acc, boots[:, 1])}
    return out


def interval(d: Draws, level: float = LEVEL) -> tuple[float, float]:
    """The bias-shifted percentile interval of one statistic: the percentiles of the draws minus the
    bootstrap's bias (mean of the draws minus the estimate)."""
    bias = float(np.mean(d.draws) - d.value)
    lo, hi = np.percentile(d.draws, [(100 - level) / 2, 100 - (100 - level) / 2]) - bias
    return float(lo), float(hi)


def difference(a: Draws, b: Draws, level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """``a - b`` and its interval from the paired draws (the same resampled maps and reference for both)."""
    if len(a.draws) != len(b.draws):
        raise ValueError(f"paired draws must be as many for both settings, got {len(a.draws)} and {len(b.draws)}")
    return a.value - b.value, interval(Draws(a.value - b.value, a.draws - b.draws), level)


POWER_Z = 2.8016  # z(0.975) + z(0.80): a two-sided 5 % test with 80 % power


def detectable(a: Draws, b: Draws) -> float:
    """The smallest ``|a - b|`` this design detects with 80 % power in a two-sided 5 % test: ``2.80`` times the
    standard deviation of the paired difference's draws (the normal approximation of the bootstrap's spread)."""
    return float(POWER_Z * np.std(a.draws - b.draws, ddof=1))

