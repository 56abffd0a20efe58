"""KID: the kernel Inception distance (Binkowski et al., "Demystifying MMD GANs", ICLR 2018).

KID is the unbiased estimate of the squared maximum mean discrepancy between the feature
distributions of two image sets, with the cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3            (d: feature dimension)

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
              - 2/(m n) sum_{i, j} k(x_i, y_j)

Unlike FID it is unbiased, so it compares fairly at a hundred images. As in the reference
implementations, the estimate is averaged over ``n_subsets`` random subsets of
``subset_size`` images of each set (drawn without replacement within a subset, seeded).
Its uncertainty is reported two ways:

* ``kid_std``: the standard deviation over subsets (what torch-fidelity calls ``kid_std``);
  it shrinks to 0 when a subset is the whole set, so it is not a standard error;
* ``kid_se``: the two-sample jackknife standard error (Arvesen 1969) of ``kid_full``, the
  U-statistic on all images: leave one image of either set out, recompute, and combine
  ``(m-1)/m sum (theta_-i - mean)^2 + (n-1)/n sum (theta_-j - mean)^2``. Computed in closed
  form from the kernel matrices' row sums.

Features come from the same extractor and the same code path as FID
(:func:`scp_core.metrics.frechet.extract_features`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["polynomial_kernel", "mmd2_unbiased", "kid_from_features"]


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x . y + coef0) ** degree`` for all pairs; ``gamma`` defaults to ``1 / d``."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased MMD^2 from the three kernel matrices (diagonals of ``k_xx``, ``k_yy`` excluded)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {m} and {n}")
    a = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    b = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(a + b - 2.0 * k_xy.mean())


def _jackknife_se(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Two-sample jackknife standard error of :func:`mmd2_unbiased` (closed form, O(m^2 + n^2 + mn))."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 3 or n < 3:
        return float("nan")
    s_xx, s_yy, s_xy = k_xx.sum() - np.trace(k_xx), k_yy.sum() - np.trace(k_yy), k_xy.sum()
    r_x = k_xx.sum(1) - np.diag(k_xx)  # off-diagonal row sums
    r_y = k_yy.sum(1) - np.diag(k_yy)
    b = s_yy / (n * (n - 1))
    a = s_xx / (m * (m - 1))
    # leave x_i out: its row and column leave the XX sum, its row leaves the XY sum
    th_x = (s_xx - 2 * r_x) / ((m - 1) * (m - 2)) + b - 2 * (s_xy - k_xy.sum(1)) / ((m - 1) * n)
    th_y = a + (s_yy - 2 * r_y) / ((n - 1) * (n - 2)) - 2 * (s_xy - k_xy.sum(0)) / (m * (n - 1))
    var = (m - 1) / m * ((th_x - th_x.mean()) ** 2).sum() + (n - 1) / n * ((th_y - th_y.mean()) ** 2).sum()
    return float(np.sqrt(var))


def kid_from_features(feats_a: np.ndarray, feats_b: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> dict:
    """KID between two feature sets ``[m, D]`` and ``[n, D]``.

    Args:
        feats_a, feats_b: features (typically generated and real images).
        n_subsets: random subsets averaged (100, as in torch-fidelity / clean-fid).
        subset_size: images per subset, capped at ``min(m, n)`` (1000 in the references).
        seed: seed of the subset draws.
        degree, gamma, coef0: the polynomial kernel (``gamma=None``: ``1 / D``).

    Returns:
        dict with ``kid`` (mean over subsets), ``kid_std`` (std over subsets), ``kid_full``
        (U-statistic on all images), ``kid_se`` (its jackknife standard error),
        ``n_subsets``, ``subset_size``, ``n_a``, ``n_b``.
    """
    x, y = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [m, D] and [n, D] with the same D, got {x.shape} and {y.shape}")
    m, n = len(x), len(y)
    size = min(int(subset_size), m, n)
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {m} and {n}")
    kern = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef0)  # noqa: E731
    k_xx, k_yy, k_xy = kern(x, x), kern(y, y), kern(x, y)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(n_subsets)):
        i = rng.choice(m, size, replace=False)
        j = rng.choice(n, size, replace=False)
        vals.append(mmd2_unbiased(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)]))
    vals = np.asarray(vals)
    return {"kid": float(vals.mean()), "kid_std": float(vals.std()), "kid_full": mmd2_unbiased(k_xx, k_yy, k_xy),
            "kid_se": _jackknife_se(k_xx, k_yy, k_xy), "n_subsets": int(n_subsets), "subset_size": size,
            "n_a": m, "n_b": n}

