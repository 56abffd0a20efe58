"""Sample grids of toy-city: images beside their colourised label maps, per setting."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_path
from .palettes import TOY_PALETTE
from .toy_city import generate_toy_city
from .transforms import colorize

__all__ = ["toy_city_sample_grid", "save_toy_city_samples"]


def toy_city_sample_grid(n: int = 8, seed: int = 0, settings=(0.0, 1.0), cols: int = 2,
                         scale: int = 2, size=(64, 128)) -> np.ndarray:
    """uint8 RGB grid: for each ``global_variation`` in ``settings`` a titled block of ``n``
    scenes (validation seed by default: ``seed + 1`` as in :func:`ensure_toy_city`), each
    image beside its colourised label map. The same seed gives the same layouts in every
    block, so the blocks differ only by the global factors."""
    blocks = []
    for gv in settings:
        images, labels = generate_toy_city(n, seed=seed, size=size, global_variation=gv)
        tiles = [np.concatenate([images[i], colorize(labels[i], TOY_PALETTE)], 1) for i in range(n)]
        tiles = [np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]
        tiles += [np.full_like(tiles[0], 255)] * (-n % cols)
        rows = [np.concatenate(tiles[i: i + cols], 1) for i in range(0, len(tiles), cols)]
        block = np.concatenate(rows, 0).repeat(scale, 0).repeat(scale, 1)
        title = Image.new("RGB", (block.shape[1], 16), "white")
        ImageDraw.Draw(title).text((4, 3), f"toy-city, global_variation={gv:g}: image | labels", fill="black")
        blocks += [np.asarray(title), block, np.full((8, block.shape[1], 3), 255, np.uint8)]
    return np.concatenate(blocks[:-1], 0)


def save_toy_city_samples(path: str | os.PathLike, **kw) -> Path:
    """Render :func:`toy_city_sample_grid` to a PNG (atomically)."""
    with atomic_path(path) as tmp:
        Image.fromarray(toy_city_sample_grid(**kw)).save(tmp, format="PNG")
    return Path(path)
