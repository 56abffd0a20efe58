"""Figures of the priors' statistics: signed maps on a colour scale centred at 0, the joint prior's fallback cells.

:func:`signed_heatmap` draws a map of signed values (a mean, a difference) with a diverging colour map whose
middle colour is 0 and whose two ends are the same distance from it, so blue and red read as "below" and "above
zero" by the same amount. :func:`spatial_prior_figure` draws the spatial prior's per-position mean and std
(notebook 02); :func:`joint_counts_figure` the joint prior's tokens per cell with the cells that fall back
hatched and named in a legend.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import PatchCollection
from matplotlib.colors import CenteredNorm
from matplotlib.patches import Patch, Rectangle

from .output import MAX_FIGURE_PX, FIGURE_DPI, save_figure

FALLBACK_HATCH, FALLBACK_COLOUR = "////", "#35d0ff"  # the fallback cells: cyan hatching, seen on every count colour


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def signed_heatmap(ax, values, cmap: str = "coolwarm", colorbar: bool = True, label: str | None = None):
    """``imshow`` of signed ``values`` ``[H, W]`` with ``cmap``'s middle colour at 0 and its ends at
    ``-m`` and ``+m``, ``m`` the largest absolute value (a :class:`~matplotlib.colors.CenteredNorm`); a colour
    bar beside it (titled ``label``) where ``colorbar``. Returns the image."""
    v = _numpy(values).astype(np.float64)
    half = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0
    im = ax.imshow(v, cmap=cmap, norm=CenteredNorm(vcenter=0.0, halfrange=half or 1.0), interpolation="nearest")
    if colorbar:
        bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=9)
        if label:
            bar.set_label(label, fontsize=9)
    return im


def _panel_width(columns: int, widest: float = 2.2) -> float:
    """Inches per panel (with its colour bar) so that ``columns`` of them stay within :data:`MAX_FIGURE_PX`."""
    return min(widest, (MAX_FIGURE_PX / FIGURE_DPI - 0.6) / columns)


def spatial_prior_figure(prior, channels: int = 8, path: str | Path | None = None, caption: str | None = None):
    """The spatial prior (Eq. 5): its mean (top row, diverging, centred at 0) and std (bottom row, sequential)
    per position for the first ``channels`` latent channels, each with its own colour bar; ``caption`` under it
    (default: what is shown, in what units, from how many reference images)."""
    mean, std = _numpy(prior.mean), _numpy(prior.std)
    C, h, w = mean.shape
    shown = min(C, channels)
    pw = _panel_width(shown)
    fig, axes = plt.subplots(2, shown, figsize=(pw * shown, 2 * (pw - 0.45) * h / w + 1.1), squeeze=False,
                             layout="constrained")
    for c in range(shown):
        signed_heatmap(axes[0, c], mean[c])
        im = axes[1, c].imshow(std[c], cmap="viridis", interpolation="nearest")
        bar = fig.colorbar(im, ax=axes[1, c], fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=9)
        for r, name in enumerate(("mean", "std")):
            axes[r, c].set_title(f"{name}, channel {c}", fontsize=9)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    if caption is None:
        caption = (f"Spatial prior: mean (top; blue below 0, red above, white at 0) and std (bottom) per position, "
                   f"channels 0-{shown - 1} of {C}, each on its own scale; scaled latent units (the VAE's latent "
                   f"times its scale factor, what the UNet sees)"
                   + (f"; from {prior.num_images} reference images" if getattr(prior, "num_images", 0) else "") + ".")
    fig.suptitle(caption, fontsize=9, wrap=True)
    if path is not None:
        save_figure(fig, Path(path))
    return fig


def _fallback_cells(ax, mask: np.ndarray) -> PatchCollection:
    """Hatch the cells of ``mask`` (``[H, W]`` bool) on ``ax``'s image, cell by cell."""
    cells = [Rectangle((x - 0.5, y - 0.5), 1, 1) for y, x in zip(*np.nonzero(mask))]
    patches = PatchCollection(cells, facecolor="none", edgecolor=FALLBACK_COLOUR, hatch=FALLBACK_HATCH, lw=0.0)
    ax.add_collection(patches)
    return patches


def joint_counts_figure(joint, class_names, classes=None, path: str | Path | None = None,
                        caption: str | None = None):
    """The joint prior (Eq. 8): reference tokens per (class, position) cell for ``classes`` (default: the five
    with the most tokens), the cells seen fewer than ``joint.min_count`` times (they use the fallback statistics)
    hatched in cyan, each panel framed so that its cells stand out from the page; a legend names the hatching."""
    count, mask = _numpy(joint.count), _numpy(joint.fallback_mask)
    if classes is None:
        classes = [int(i) for i in np.argsort(-count.reshape(len(count), -1).sum(1), kind="stable")[:5]]
    h, w = count.shape[1:]
    pw = _panel_width(len(classes), widest=2.8)
    fig, axes = plt.subplots(1, len(classes), figsize=(pw * len(classes), (pw - 0.5) * h / w + 1.3), squeeze=False,
                             layout="constrained")
    for ax, c in zip(axes[0], classes):
        im = ax.imshow(count[c], cmap="magma", vmin=0, interpolation="nearest")
        _fallback_cells(ax, mask[c])
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=9)
        name = class_names[c] if c < len(class_names) else f"class {c}"
        ax.set_title(f"{name}: {mask[c].mean():.0%} fall back", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(visible=True, color="0.3", lw=1.0)
    rule = {"class": "the class's statistics (Eq. 7)", "spatial": "the position's statistics (Eq. 5)"}.get(
        joint.fallback, f"the {joint.fallback} statistics")
    handles = [Patch(facecolor="black", edgecolor=FALLBACK_COLOUR, hatch=FALLBACK_HATCH,
                     label=f"hatched: fewer than {joint.min_count} tokens, the cell uses {rule}"),
               Patch(facecolor=plt.get_cmap("magma")(0.7), edgecolor="0.3", label="plain: the cell's own statistics")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9, frameon=False, handlelength=2.2,
               handleheight=1.4)
    if caption is None:
        caption = ("Joint prior: reference tokens per (class, position) cell, colour = count"
                   + (f", from {joint.num_images} reference images" if getattr(joint, "num_images", 0) else "")
                   + f"; {mask.mean():.1%} of all cells fall back")
    fig.suptitle(caption, fontsize=9, wrap=True)
    if path is not None:
        save_figure(fig, Path(path))
    return fig
