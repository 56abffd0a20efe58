"""Saved figures stay readable at notebook width (issue 48, item 5): image grids and every saved figure at most
MAX_FIGURE_PX wide, labels at least 9 pt, captions inside the picture; signed maps on a colour scale centred at 0;
the joint prior's fallback cells hatched and named in a legend."""
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import CenteredNorm
from PIL import Image

from scp_core import study
from scp_core.priors import PriorAccumulator
from scp_core.study.output import FIGURE_DPI, MAX_FIGURE_PX, MIN_TEXT_PT, grid_columns, saved_width_px
from scp_core.study.prior_figures import (FALLBACK_HATCH, joint_counts_figure, signed_heatmap,
                                          spatial_prior_figure)


def _rows(n_rows, n_cols, h=16, w=32):
    rng = np.random.default_rng(0)
    return {f"row {r}": rng.integers(0, 255, (n_cols, h, w, 3), dtype=np.uint8) for r in range(n_rows)}


@pytest.mark.parametrize("n_cols", [11, 30])
def test_an_image_grid_of_many_columns_is_at_most_the_maximum_width(n_cols, tmp_path):
    """11 columns (notebook 00's trajectory, 2,608 px before) and 30: wrapped into blocks of titled columns, the
    saved PNG within MAX_FIGURE_PX, every label and title at least 9 pt, the caption inside the picture."""
    caption = "what was run: mu = 0.8, 20 DDIM steps, seeds 0..10, n = 11 " * 4
    fig = study.image_grid(_rows(2, n_cols), titles=[f"t = {i}" for i in range(n_cols)], scale=1.3,
                           caption=caption, path=tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as im:
        assert 800 < im.size[0] <= MAX_FIGURE_PX
    assert len(fig.axes) == 2 * n_cols
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert sorted(t.get_text() for t in titles) == sorted(f"t = {i}" for i in range(n_cols)), "each column titled"
    shown = [t for t in fig.texts] + titles + [ax.yaxis.label for ax in fig.axes if ax.get_ylabel()]
    blocks = len({round(ax.get_position().y1, 4) for ax in fig.axes if ax.get_title()})
    assert blocks >= 2 and len([ax for ax in fig.axes if ax.get_ylabel()]) == 2 * blocks, "row names on every block"
    assert all(t.get_fontsize() >= MIN_TEXT_PT for t in shown)
    r = fig.canvas.get_renderer()
    (cap,) = [t for t in fig.texts if "what was run" in t.get_text()]
    box, whole = cap.get_window_extent(r), fig.get_tightbbox(r)
    assert "\n" in cap.get_text(), "a long caption is wrapped to the grid's width"
    assert box.x0 >= whole.x0 * fig.dpi - 1 and box.x1 <= whole.x1 * fig.dpi + 1, "the caption is not clipped"
    plt.close(fig)


def test_a_slightly_wide_grid_draws_its_cells_smaller_instead_of_wrapping():
    """Notebook 10's samples (6 columns, 1,767 px before): shrunk to fit, still one block."""
    cols, shrink = grid_columns(6, 1.6 * 2 / 1.2, 1.3, 0.08, MAX_FIGURE_PX / FIGURE_DPI)
    assert cols == 6 and 0.7 <= shrink < 1
    assert grid_columns(11, 1.3 * 2 / 1.2, 1.3, 0.08, MAX_FIGURE_PX / FIGURE_DPI)[0] == 6, "11 columns: 6 and 5"
    assert grid_columns(3, 1.0, 1.0, 0.08, 14.5) == (3, 1.0), "a grid that fits is left as it is"


def test_save_figure_shrinks_a_figure_wider_than_the_maximum(tmp_path):
    fig, ax = plt.subplots(figsize=(24, 2))
    ax.plot([0, 1], [0, 1])
    assert saved_width_px(fig) > MAX_FIGURE_PX
    with pytest.warns(UserWarning, match="wide.*narrower figsize"):
        study.save_figure(fig, tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as im:
        assert MAX_FIGURE_PX - 20 <= im.size[0] <= MAX_FIGURE_PX
    narrow, _ = plt.subplots(figsize=(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.save_figure(narrow, tmp_path / "narrow.png")
    with Image.open(tmp_path / "narrow.png") as im:
        assert abs(im.size[0] - saved_width_px(narrow)) <= 2, "a figure that fits keeps FIGURE_DPI"
    plt.close("all")


def test_signed_heatmap_centres_its_colour_scale_at_zero():
    values = np.array([[-1.0, 0.5], [3.0, 0.0]])
    fig, ax = plt.subplots()
    im = signed_heatmap(ax, values)
    norm = im.norm
    assert isinstance(norm, CenteredNorm) and norm.vcenter == 0
    assert norm.vmin == pytest.approx(-3.0) and norm.vmax == pytest.approx(3.0)
    assert norm(0.0) == pytest.approx(0.5) and norm(-3.0) == pytest.approx(0.0)
    plt.close(fig)


def _priors(K=4, C=6, h=6, w=8):
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(5, h, w, dtype=torch.long)
    labels[:, h // 2:] = 1
    labels[:2, :2, :3] = 2
    x0 = torch.randn(5, C, h, w, generator=g) + torch.linspace(-0.3, 1.0, w)
    return PriorAccumulator(K, (C, h, w)).update(x0, labels).priors(min_count=3, fallback="class")


def test_spatial_prior_figure_draws_means_centred_at_zero_within_the_width(tmp_path):
    pr = _priors()
    fig = spatial_prior_figure(pr["spatial"], path=tmp_path / "spatial.png")
    means = [ax.images[0] for ax in fig.axes if ax.get_title().startswith("mean")]
    assert len(means) == 6 and all(im.norm.vcenter == 0 and im.norm.vmin == -im.norm.vmax for im in means)
    with Image.open(tmp_path / "spatial.png") as im:
        assert im.size[0] <= MAX_FIGURE_PX
    plt.close(fig)


def test_joint_counts_figure_hatches_the_fallback_cells_and_names_them_in_its_legend(tmp_path):
    pr = _priors()
    joint = pr["joint"]
    fig = joint_counts_figure(joint, ["road", "sky", "car", "none"], classes=[0, 1, 2],
                              path=tmp_path / "joint.png")
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(panels) == 3
    for ax, c in zip(panels, [0, 1, 2]):
        (hatched,) = ax.collections
        assert hatched.get_hatch() == FALLBACK_HATCH
        assert len(hatched.get_paths()) == int(joint.fallback_mask[c].sum()), "one hatched square per fallback cell"
        assert all(s.get_visible() for s in ax.spines.values()), "framed: the cells stand out from the page"
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[0].startswith("hatched: fewer than 3 tokens")
    assert legend.legend_handles[0].get_hatch() == FALLBACK_HATCH
    with Image.open(tmp_path / "joint.png") as im:
        assert im.size[0] <= MAX_FIGURE_PX
    plt.close(fig)
