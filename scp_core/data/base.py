"""What every dataset shares: where relative roots live and the common attributes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..io import REPO_ROOT

__all__ = ["REPO_ROOT", "resolve_root", "SegDataset", "DATA_README"]

DATA_README = "data/README.md"


def resolve_root(root: str | os.PathLike) -> Path:
    """``root`` as an absolute path; a relative one is taken relative to the repository root."""
    p = Path(root).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


class SegDataset(Dataset):
    """Base of the semantic-synthesis datasets.

    Items are ``{"image": float32 [3, H, W] in [-1, 1], "labels": int64 [H, W], "name": str}``.

    Attributes:
        name: registry name.
        num_classes: number of real classes K (ids ``0..K-1``).
        ignore_index: the id of unlabeled pixels (``None`` when every pixel has a class).
        class_names: K names.
        palette: uint8 ``[K, 3]`` official colours (the colour-coded control map).
        prompt: the paper's fixed text prompt for this dataset.
        size: ``(H, W)`` of the items.
        splits: the split names the class accepts (:func:`scp_core.data.dataset_splits` reads them).
    """

    name: str = ""
    num_classes: int = 0
    ignore_index: int | None = None
    class_names: list[str] = []
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    prompt: str = ""
    default_size: tuple[int, int] = (512, 512)
    size: tuple[int, int] = (512, 512)
    split: str = ""
    splits: tuple[str, ...] | dict[str, str] = ()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, n={len(self)}, size={self.size}, "
                f"num_classes={self.num_classes}, ignore_index={self.ignore_index})")
