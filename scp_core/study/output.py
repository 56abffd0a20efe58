"""What the notebooks write: figures, tables (CSV and markdown), metrics JSON with their settings."""
from __future__ import annotations

import json
import subprocess
import warnings
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
MAX_FIGURE_PX = 1600  # the widest saved figure, in pixels at FIGURE_DPI: wider ones are unreadable at notebook width
MIN_TEXT_PT = 9.0  # the smallest label, title or caption an image grid draws


def _text_size(fig, text: str, **kw) -> tuple[float, float]:
    """Width and height in inches of ``text`` drawn with ``kw`` (measured with the figure's renderer)."""
    t = fig.text(0, 0, text, **kw)
    box = t.get_window_extent(fig.canvas.get_renderer())
    t.remove()
    return box.width / fig.dpi, box.height / fig.dpi


def _wrapped(fig, text: str, width: float, **kw) -> str:
    """``text`` broken into lines no wider than ``width`` inches (its own line breaks kept)."""
    lines = []
    for para in text.split("\n"):
        words, line = para.split(" "), ""
        for word in words:
            trial = f"{line} {word}" if line else word
            if line and _text_size(fig, trial, **kw)[0] > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return "\n".join(lines)


def grid_columns(n: int, cell: float, fixed: float, gap: float, max_width: float,
                 min_shrink: float = 0.7) -> tuple[int, float]:
    """How an image grid of ``n`` columns fits ``max_width`` inches: ``(columns per block, shrink)``.

    A cell is ``cell`` inches wide, ``gap`` between cells, ``fixed`` for the row names and margins. The grid
    shrinks its cells (down to ``min_shrink`` of their size) before it wraps its columns into blocks stacked
    one under the other, as few blocks as fit and their columns balanced (11 columns: 6 and 5)."""
    shrink = 1.0
    for blocks in range(1, n + 1):
        cols = -(-n // blocks)
        shrink = min(1.0, (max_width - fixed - (cols - 1) * gap) / (cols * cell))
        if shrink >= min_shrink:
            return cols, shrink
    return 1, max(shrink, 0.05)


def image_grid(rows: dict, titles=None, path: Path | None = None, scale: float = 1.6, *, caption: str | None = None,
               legend: dict | None = None, empty: str = "", max_width_px: int = MAX_FIGURE_PX):
    """A matplotlib grid: one row per entry of ``rows`` (``name -> uint8 [n, H, W, 3]``, or a list whose ``None``
    entries are cells left empty, grey with the text ``empty``).

    ``caption``: a line under the grid (what was run: mu, steps, seeds, n), wrapped to the grid's width;
    ``legend``: ``{class name: RGB}``, the label map's colours (:func:`label_legend`), drawn as a legend under
    the grid. Row names are written beside each row, horizontally. Text is at least :data:`MIN_TEXT_PT` points.

    The grid is at most ``max_width_px`` pixels wide at :data:`FIGURE_DPI` (notebook width): a grid that would be
    wider first draws its cells smaller (down to 0.7 of ``scale``), then wraps its columns into blocks, one under
    the other, each with the column titles and row names (:func:`grid_columns`)."""
    n = max(len(v) for v in rows.values())
    h, w = next(np.asarray(im).shape[:2] for v in rows.values() for im in v if im is not None)
    text = max(MIN_TEXT_PT, min(10.0, 5.5 * scale))
    fig = plt.figure()
    names = [name for name in rows if name]
    label_w = max((_text_size(fig, name, fontsize=text)[0] for name in names), default=0.0) + (0.2 if names else 0)
    title_h = max((_text_size(fig, str(t), fontsize=text)[1] for t in titles), default=0.0) + 0.12 if titles else 0
    gap, margin = 0.08, 0.1  # inches: between cells, around the grid
    cols, shrink = grid_columns(n, scale * w / h / 1.2, label_w + 2 * margin, gap, max_width_px / FIGURE_DPI)
    cell_w = scale * w / h / 1.2 * shrink
    cell_h = cell_w * h / w
    blocks = -(-n // cols)
    block_h = title_h + len(rows) * cell_h + (len(rows) - 1) * gap
    width = label_w + 2 * margin + cols * cell_w + (cols - 1) * gap
    height = 2 * margin + blocks * block_h + (blocks - 1) * 0.25
    fig.set_size_inches(width, height)
    # enlarged images show their pixels (nearest): sharper, and the PNG is half the size of a resampled one;
    # reduced ones are filtered against aliasing
    interpolation = "nearest" if cell_w * FIGURE_DPI >= w else "antialiased"
    for b in range(blocks):
        top = margin + b * (block_h + 0.25) + title_h  # inches from the figure's top: this block's first row
        for r, (name, imgs) in enumerate(rows.items()):
            for c in range(b * cols, min(n, (b + 1) * cols)):
                if c >= len(imgs):
                    continue
                x = margin + label_w + (c - b * cols) * (cell_w + gap)
                y = top + r * (cell_h + gap) + cell_h
                ax = fig.add_axes([x / width, 1 - y / height, cell_w / width, cell_h / height])
                ax.set_xticks([])
                ax.set_yticks([])
                if imgs[c] is not None:
                    ax.imshow(np.asarray(imgs[c]), interpolation=interpolation)
                else:  # an empty cell of the images' own shape, so the grid stays aligned
                    ax.imshow(np.full((h, w, 3), 235, np.uint8), interpolation=interpolation)
                    ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=text, color="0.35",
                            transform=ax.transAxes)
                if r == 0 and titles:
                    ax.set_title(titles[c], fontsize=text, pad=4)
                if c == b * cols and name:
                    ax.set_ylabel(name, fontsize=text, rotation=0, ha="right", va="center", labelpad=6)
    bottom = 0.0
    if legend:
        handles = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="0.4", label=k) for k, rgb in legend.items()]
        per_row = max(1, min(len(handles), 8, int(width // 1.5)))  # a legend entry is about 1.5 inches wide
        leg = fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, bottom), ncol=per_row,
                         fontsize=text, frameon=False, handlelength=1.2, columnspacing=1.0,
                         title="label colours", title_fontsize=text)
        # the caption goes under the legend: its height is known once drawn
        box = leg.get_window_extent(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
        bottom = box.y0
    if caption:
        kw = dict(fontsize=text, color="0.2")
        fig.text(0.5, bottom - 0.01, _wrapped(fig, caption, width - 2 * margin, **kw), ha="center", va="top",
                 **kw)
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

    No saved figure is wider than :data:`MAX_FIGURE_PX` pixels: one that would be wider at :data:`FIGURE_DPI`
    is written at the lower resolution that makes it fit, with a warning (draw it narrower, so its text keeps
    its size).
    """
    dpi = FIGURE_DPI
    px = saved_width_px(fig)
    if px > MAX_FIGURE_PX:
        dpi = FIGURE_DPI * (MAX_FIGURE_PX - 4) / px
        warnings.warn(f"{Path(path).name}: {px} px wide at {FIGURE_DPI} dpi, more than {MAX_FIGURE_PX}; written at "
                      f"{dpi:.0f} dpi, so its text is smaller: give it a narrower figsize", stacklevel=2)
    with timing.stage("plotting"), atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    if show and _in_kernel():
        from IPython.display import Image, display  # only in a kernel, where IPython is present
        display(Image(data=Path(path).read_bytes(), format="png", metadata={"filename": Path(path).name}))
        plt.close(fig)
    return Path(path)


def saved_width_px(fig, dpi: float = FIGURE_DPI) -> int:
    """The width in pixels :func:`save_figure` gives ``fig`` at ``dpi``: its tight bounding box and the padding."""
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return int(np.ceil((box.width + 2 * plt.rcParams["savefig.pad_inches"]) * dpi))

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

MAX_VIEW_COLUMNS = 6  # a table printed in a notebook: the full one is saved in tables/


def with_ci(t: pd.DataFrame, col: str, digits: int = 3) -> list[str]:
    """Each row's ``col`` and its 95 % interval (``col + "_ci"``) in one cell, ``"0.095 [0.083, 0.109]"``: the value
    alone where a row has no interval, ``"n/a"`` where it has no value."""
    cis = t[col + "_ci"] if col + "_ci" in t else [None] * len(t)

    def one(v, ci):
        if v is None or v != v:
            return "n/a"
        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(c == c for c in ci)
        return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ok else "")
    return [one(v, ci) for v, ci in zip(t[col], cis)]


def compact(t: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """A results table for reading in a notebook: ``{title: column}`` (the column as it is) or ``{title: (column,
    digits)}`` (the value and its interval in one cell, :func:`with_ci`); columns the table lacks are left out. At most
    :data:`MAX_VIEW_COLUMNS` columns: the full table is the one saved with :func:`save_table`."""
    if len(columns) > MAX_VIEW_COLUMNS:
        raise ValueError(f"a printed table has at most {MAX_VIEW_COLUMNS} columns, asked for {len(columns)}: "
                         "the full table belongs in tables/ (save_table)")
    out = {}
    for title, spec in columns.items():
        col, digits = spec if isinstance(spec, tuple) else (spec, None)
        if col in t:
            out[title] = with_ci(t, col, digits) if digits is not None else t[col].tolist()
    return pd.DataFrame(out, index=range(len(t)))


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
