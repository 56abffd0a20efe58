"""Images and label maps as batches: the project's one conversion between uint8 and [-1, 1].

Datasets hold images as uint8 ``[H, W, 3]`` (toy-city, in memory) or yield float ``[3, H, W]`` in
``[-1, 1]`` (the file datasets, computed from uint8 pixels, so the two forms convert exactly).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["to_float", "to_uint8", "images_labels"]


def to_float(images_u8) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` (tensor or array) -> float32 ``[n, 3, H, W]`` in [-1, 1]."""
    if isinstance(images_u8, np.ndarray) and not images_u8.flags.writeable:  # memory-mapped cache files
        images_u8 = images_u8.copy()
    return torch.as_tensor(images_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[n, 3, H, W]`` in [-1, 1] -> uint8 ``[n, H, W, 3]``, rounded, clipped (inverse of :func:`to_float`)."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def images_labels(ds, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[n, H, W, 3]`` and int64 label maps ``[n, H, W]`` of the items ``idx`` of a dataset."""
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(ds, "images"):  # in memory (toy-city)
        return torch.as_tensor(ds.images[idx]), torch.as_tensor(ds.labels[idx]).long()
    items = [ds[int(i)] for i in idx]
    if not items:
        h, w = ds.size
        return torch.zeros((0, h, w, 3), dtype=torch.uint8), torch.zeros((0, h, w), dtype=torch.long)
    return (to_uint8(torch.stack([it["image"] for it in items])),
            torch.stack([it["labels"] for it in items]).long())
