"""Colour casts: how much each image's overall colour varies across samples, against real images.

Under SD's schedule the noisiest training input keeps ``sqrt(alpha_bar(999)) = 0.068`` of the image, and on small
latents the per-channel mean of the ``N(0, I)`` start (s.d. ``1 / sqrt(h w)``) is as large as that signal: a model
that reads the picture's colour from the leak reads it from the start's noise, and every sample gets a random
cast. The symptom is a spread of per-image mean colours wider than real images have. :func:`colour_spread` measures
it as a ratio to real (1 is right), the maps resampled once for both sets (paired), as every interval of the study.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from .resampling import Draws, draw_indices, interval

CHANNELS = ("red", "green", "blue")


def mean_colours(images_u8) -> np.ndarray:
    """``[n, 4]``: each image's mean red, green, blue and brightness (their mean), in [0, 1], of uint8
    ``[n, H, W, 3]``."""
    x = torch.as_tensor(images_u8).float().div(255).mean(dim=(1, 2)).numpy().astype(np.float64)
    return np.concatenate([x, x.mean(1, keepdims=True)], axis=1)


def colour_spread(gen_u8, real_u8, n_boot: int = 1000, seed: int = 0) -> dict:
    """The std over images of each per-image mean (red, green, blue, brightness) of ``gen_u8``, over that of
    ``real_u8``, with 95 % intervals; ``colour`` is the mean of the three channels' ratios.

    ``gen_u8`` holds ``k`` samples of each of the ``n`` maps of ``real_u8`` (``k n`` images, seed-major: image
    ``r n + i`` on map ``i``); a resample draws maps and keeps each map's samples and real image together.
    """
    g, r = mean_colours(gen_u8), mean_colours(real_u8)
    n = len(r)
    if len(g) % n:
        raise ValueError(f"{len(g)} generated images are not a whole number of samples of each of {n} real maps")
    index = draw_indices(n, n_boot, seed)
    gen_index = np.concatenate([index + j * n for j in range(len(g) // n)], axis=1)

    def ratio(values_g, values_r) -> tuple[np.ndarray, np.ndarray]:
        point = values_g.std(0, ddof=1) / values_r.std(0, ddof=1)
        draws = values_g[gen_index].std(1, ddof=1) / values_r[index].std(1, ddof=1)
        return point, draws

    point, draws = ratio(g, r)
    out = {}
    for j, name in enumerate((*CHANNELS, "brightness")):
        out[name] = float(point[j])
        out[name + "_ci"] = list(interval(Draws(float(point[j]), draws[:, j])))
    colour = float(point[:3].mean())
    out["colour"], out["colour_ci"] = colour, list(interval(Draws(colour, draws[:, :3].mean(1))))
    out["real_mean"] = [float(v) for v in r.mean(0)]
    out["gen_mean"] = [float(v) for v in g.mean(0)]
    return out


def colour_figure(gen_u8, real_u8, ax, label: str = "samples") -> None:
    """Each image's mean colour in the plane (red - blue, green - (red + blue) / 2), real against ``gen_u8``: a
    random cast spreads the samples' cloud wider than the real one."""
    for u8, name, style in ((real_u8, "real frames", dict(color="k", marker="o", s=16)),
                            (gen_u8, label, dict(color="C1", marker="^", s=16))):
        c = mean_colours(u8)
        ax.scatter(c[:, 0] - c[:, 2], c[:, 1] - (c[:, 0] + c[:, 2]) / 2, alpha=0.6, label=f"{name} (n = {len(c)})",
                   edgecolors="none", **style)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.axhline(0, color="0.6", lw=0.6), ax.axvline(0, color="0.6", lw=0.6)
    ax.set_xlabel("mean red - mean blue")
    ax.set_ylabel("mean green - (red + blue) / 2")
    ax.legend(fontsize=8, loc="best")
