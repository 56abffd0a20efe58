"""The three SCP priors by their *definitions* (Eqs. 5, 7, 8): a few lines of numpy each.

These are the readable reference, not the tool: they hold every latent in memory and loop
over classes. :class:`scp_core.priors.PriorAccumulator` computes the same numbers in one
streaming pass with memory independent of N; the tests and notebook 02 check that the two
agree. Notation: ``x0`` holds the N reference latents ``[N, C, h, w]``, ``M`` their label maps
at latent size ``[N, h, w]``; a *token* is the ``C``-vector ``x0[i, :, y, x]``. Variances are
population variances (divide by the count).
"""
from __future__ import annotations

import numpy as np

from .scp import MIN_COUNT

__all__ = ["spatial_prior", "categorical_prior", "joint_prior"]


def spatial_prior(x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 5: ``m(y, x) = 1/N sum_i x0_i(y, x)`` and ``sigma^2(y, x)`` likewise, per channel.

    Returns:
        ``(mean, std)``, each ``[C, h, w]``.
    """
    return x0.mean(axis=0), x0.std(axis=0)


def _tokens(x0: np.ndarray) -> np.ndarray:
    """``[N, C, h, w]`` -> ``[N, h, w, C]``: one token per (image, position)."""
    return np.moveaxis(x0, 1, -1)


def categorical_prior(x0: np.ndarray, M: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 7: ``m_c`` and ``sigma_c^2`` over every token whose label is ``c`` (any image, any position).

    A class that never occurs takes the statistics of all tokens (it needs *some* distribution).

    Returns:
        ``(mean [K, C], std [K, C], count [K])``.
    """
    tokens = _tokens(x0)
    K, C = num_classes, x0.shape[1]
    mean, std, count = np.zeros((K, C)), np.zeros((K, C)), np.zeros(K)
    everything = tokens.reshape(-1, C)
    for c in range(K):
        sel = tokens[M == c]                    # [n_c, C]: the tokens labelled c
        count[c] = len(sel)
        sel = sel if len(sel) else everything  # unseen class: global statistics
        mean[c], std[c] = sel.mean(axis=0), sel.std(axis=0)
    return mean, std, count


def joint_prior(x0: np.ndarray, M: np.ndarray, num_classes: int, min_count: int = MIN_COUNT,
                fallback: str = "class") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 8: ``m_c(y, x)`` and ``sigma_c^2(y, x)`` over the images whose label at ``(y, x)`` is ``c``.

    A cell ``(c, y, x)`` seen fewer than ``min_count`` times is too thin to estimate a
    variance: it takes the fallback, the class prior of ``c`` (the paper's rule) or the
    spatial prior at ``(y, x)``.

    Returns:
        ``(mean [K, C, h, w], std [K, C, h, w], count [K, h, w])``.
    """
    N, C, h, w = x0.shape
    K = num_classes
    mean, std, count = np.zeros((K, C, h, w)), np.zeros((K, C, h, w)), np.zeros((K, h, w))
    cat_mean, cat_std, _ = categorical_prior(x0, M, K)
    sp_mean, sp_std = spatial_prior(x0)
    for c in range(K):
        for y in range(h):
            for x in range(w):
                sel = x0[M[:, y, x] == c, :, y, x]  # [n, C]: images labelled c at (y, x)
                count[c, y, x] = len(sel)
                if len(sel) >= min_count:
                    mean[c, :, y, x], std[c, :, y, x] = sel.mean(axis=0), sel.std(axis=0)
                elif fallback == "class":
                    mean[c, :, y, x], std[c, :, y, x] = cat_mean[c], cat_std[c]
                else:
                    mean[c, :, y, x], std[c, :, y, x] = sp_mean[:, y, x], sp_std[:, y, x]
    return mean, std, count
