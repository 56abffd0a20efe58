"""What the notebooks write: figures, tables (CSV and markdown), metrics JSON with their settings."""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from ..data import colorize
from .. import timing
from ..io import REPO_ROOT, atomic_path, write_json, write_text
from .context import load_data
from .settings import Settings


FIGURE_DPI = 110  # every saved figure


def image_grid(rows: dict, titles=None, path: Path | None = None, scale: float = 1.6, *, caption: str | None = None,
               legend: dict | None = None, empty: str = ""):
    """A matplotlib grid: one row per entry of ``rows`` (``name -> uint8 [n, H, W, 3]``, or a list whose ``None``
    entries are cells left empty, grey with the text ``empty``).

    ``caption``: a line under the grid (what was run: mu, steps, seeds, n); ``legend``: ``{class name: RGB}``,
    the label map's colours (:func:`label_legend`), drawn as a legend under the grid. Row names are written
    beside each row, horizontally, at a size that stays readable."""
    n = max(len(v) for v in rows.values())
    h, w = next(np.asarray(im).shape[:2] for v in rows.values() for im in v if im is not None)
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n * w / h / 1.2, scale * len(rows)), squeeze=False)
    # enlarged images show their pixels (nearest): sharper, and the PNG is half the size of a resampled one;
    # reduced ones are filtered against aliasing
    shown_px = scale * w / h / 1.2 * FIGURE_DPI
    interpolation = "nearest" if shown_px >= w else "antialiased"
    text = max(8.0, min(10.0, 5.5 * scale))
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs) and imgs[c] is not None:
                ax.imshow(np.asarray(imgs[c]), interpolation=interpolation)
            elif c < len(imgs):  # an empty cell of the images' own shape, so the grid stays aligned
                ax.imshow(np.full((h, w, 3), 235, np.uint8), interpolation=interpolation)
                ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=text - 1, color="0.35",
                        transform=ax.transAxes, wrap=True)
            if r == 0 and titles:
                ax.set_title(titles[c], fontsize=text)
        if name:
            axes[r, 0].set_ylabel(name, fontsize=text, rotation=0, ha="right", va="center", labelpad=6)
    fig.tight_layout()
    bottom = 0.0
    if legend:
        handles = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="0.4", label=k) for k, rgb in legend.items()]
        leg = fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, bottom), ncol=min(len(handles), 8),
                         fontsize=text - 0.5, frameon=False, handlelength=1.2, columnspacing=1.0,
                         title="label colours", title_fontsize=text - 0.5)
        # the caption goes under the legend: its height is known once drawn
        box = leg.get_window_extent(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
        bottom = box.y0
    if caption:
        fig.text(0.5, bottom - 0.01, caption, ha="center", va="top", fontsize=text - 0.5, wrap=True, color="0.2")
    if path is not None:
        save_figure(fig, path)
    return fig


def label_legend(labels, palette, class_names, ignore_index: int | None = None) -> dict:
    """``{class name: RGB}`` for the classes present in ``labels`` (ids ``[..., H, W]``), for :func:`image_grid`."""
    ids = np.unique(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    pal = np.asarray(palette)
    out = {}
    for i in ids.tolist():
        if i == ignore_index or i >= len(pal):
            continue
        out[class_names[i] if i < len(class_names) else f"class {i}"] = tuple(int(v) for v in pal[i][:3])
    return out


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill, nbval), False in scripts and the CLI."""
    try:
        from IPython import get_ipython  # IPython is there wherever a notebook runs; scripts may lack it
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def save_figure(fig, path: Path, show: bool = True) -> Path:
    """Write ``fig`` to ``path`` (PNG, atomically); in a notebook, show that very file and close ``fig``.

    The notebook's output is the file's bytes with its name as metadata (``{"filename": ...}``), so
    an executed notebook shows exactly what ``figures/`` holds (a test compares them), and the figure
    is not drawn a second time by the inline backend.
    """
    with timing.stage("plotting"), atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, format="png", bbox_inches="tight")
    if show and _in_kernel():
        from IPython.display import Image, display  # only in a kernel, where IPython is present
        display(Image(data=Path(path).read_bytes(), format="png", metadata={"filename": Path(path).name}))
        plt.close(fig)
    return Path(path)

JUDGE_B = ("fid", "fid_ci", "kid", "kid_ci", "miou_b", "miou_b_ci", "acc_b", "acc_b_ci")
_NAMES = {"fid": "FID (Inception)", "miou_b": "mIoU (seg. B)", "acc_b": "acc (seg. B)", "miou": "mIoU",
          "acc": "acc"}


def readable(df: pd.DataFrame, metric: str, columns, judge_b: bool = True) -> pd.DataFrame:
    """``columns`` of a results table for reading: ``fd`` named by its metric, KID (if any) times 10^3 with
    its interval after the distance's, then (``judge_b``) the second judge's columns where the table has them."""
    cols = [c for c in columns if c in df]
    out = df[cols].copy()
    if "kid" in df and "kid" not in cols:
        at = cols.index("fd_ci") + 1 if "fd_ci" in cols else len(cols)
        out.insert(at, "KID x1e3", df["kid"] * 1e3)
        if "kid_ci" in df:
            out.insert(at + 1, "KID x1e3 95% CI", df["kid_ci"].map(lambda c: [1e3 * v for v in c]))
    for col in JUDGE_B if judge_b and "fid" in df else ():
        if col.startswith("kid") or col not in df:
            continue
        out[col] = df[col]
    names = {"fd": metric, "fd_ci": f"{metric} 95% CI"}
    names.update({k: v for k, v in _NAMES.items()})
    names.update({k + "_ci": v + " 95% CI" for k, v in _NAMES.items()})
    return out.rename(columns=names)

def _interval_text(v, digits: int = 3):
    """A ``(lo, hi)`` interval cell as ``[lo, hi]`` for reading; any other cell unchanged."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]"
    return v

def save_table(df: pd.DataFrame, path_stem: Path) -> None:
    """``<stem>.csv`` (full precision) and ``<stem>.md`` (3 decimals, intervals as ``[lo, hi]``), atomically."""
    write_text(Path(str(path_stem) + ".csv"), df.to_csv(index=False))
    shown = df.copy()
    for col in shown.columns[shown.dtypes.map(lambda d: d is np.dtype(object))]:
        shown[col] = shown[col].map(_interval_text)
    write_text(Path(str(path_stem) + ".md"), shown.to_markdown(index=False, floatfmt=".3f") + "\n")

def colorized(labels: torch.Tensor, s: Settings) -> np.ndarray:
    return colorize(labels.numpy(), load_data(s, "val").palette)


def legend_of(labels: torch.Tensor, s: Settings) -> dict:
    """The label colours of the classes in ``labels`` on the profile's dataset (``image_grid(..., legend=)``)."""
    data = load_data(s, "val")
    return label_legend(labels, data.palette, data.class_names, getattr(data, "ignore_index", None))

def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

def write_metrics(s: Settings, name: str, payload: dict) -> Path:
    """``<reports>/metrics/<name>.json``: the notebook's numbers with the settings they rest on, and where the
    kernel's seconds went so far (``timing_s``: :func:`scp_core.timing.tally`, the study's profile)."""
    return write_json(s.reports / "metrics" / f"{name}.json",
                      {"name": name, "settings": asdict(s), "commit": git_commit(), "timing_s": timing.tally(),
                       **payload})

def read_metrics(s: Settings, name: str) -> dict | None:
    """Another notebook's numbers: ``<reports>/metrics/<name>.json`` of the same report, ``None`` where that
    notebook has not run. The one way a notebook reads another's: ``scpdiff reproduce`` starts a notebook after the
    notebooks whose metrics it names here (:mod:`scp_core.notebook_order`), so what it quotes is that batch's."""
    path = s.reports / "metrics" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None

def records(df: pd.DataFrame) -> list:
    return json.loads(df.to_json(orient="records"))
