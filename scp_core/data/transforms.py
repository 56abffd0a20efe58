"""Mask and image transforms: colour-coded control maps, one-hot maps, colorize, resizing.

Label maps are only ever resized by *nearest* selection (bilinear resampling invents ids on
class boundaries); images with antialiased bilinear resampling.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..labels import downsample_labels

__all__ = ["control_map", "one_hot", "colorize", "resize_image", "resize_labels"]


def _size(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    return h, w


def _np_tensor(arr) -> torch.Tensor:
    """numpy -> tensor without the warning (and the aliasing) for read-only arrays."""
    arr = np.asarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable and arr.flags.c_contiguous else arr.copy())


def _as_long(labels) -> torch.Tensor:
    t = labels if isinstance(labels, torch.Tensor) else _np_tensor(labels)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"labels must hold integer class ids, got dtype {t.dtype}")
    if t.dim() not in (2, 3):
        raise ValueError(f"labels must be [H, W] or [B, H, W], got shape {tuple(t.shape)}")
    return t.long()


def _bad_ids(t: torch.Tensor, k: int, ignore_index) -> torch.Tensor:
    bad = (t < 0) | (t >= k)
    if ignore_index is not None:
        bad &= t != ignore_index
    return bad


def _check(t: torch.Tensor, k: int, ignore_index, what: str) -> None:
    bad = _bad_ids(t, k, ignore_index)
    if bool(bad.any()):
        ids = torch.unique(t[bad])[:10].tolist()
        raise ValueError(f"{what}: label ids {ids} are outside [0, {k})"
                         + ("" if ignore_index is None else f" and are not the ignore id {ignore_index}")
                         + "; pass ignore_index= for an ignore id such as 255")


def control_map(labels, palette, ignore_index: int | None = None) -> torch.Tensor:
    """Colour-coded label map / 255, the paper's ControlNet conditioning.

    Args:
        labels: integer ``[H, W]`` or ``[B, H, W]`` (tensor or array).
        palette: ``[K, 3]`` uint8 colours of the K real classes.
        ignore_index: id drawn black (e.g. 255); any other id outside ``[0, K)`` is an error.

    Returns:
        float32 ``[3, H, W]`` or ``[B, 3, H, W]`` in ``[0, 1]``, on the labels' device.
    """
    t = _as_long(labels)
    pal = _np_tensor(np.asarray(palette, dtype=np.uint8)).to(t.device).float() / 255.0
    k = pal.shape[0]
    _check(t, k, ignore_index, "control_map")
    lut = torch.cat([pal, pal.new_zeros(1, 3)])  # row k: black for the ignore id
    idx = torch.where((t >= 0) & (t < k), t, torch.full_like(t, k))
    out = lut[idx]  # [..., H, W, 3]
    return out.movedim(-1, -3).contiguous()


def one_hot(labels, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """One-hot label maps (the alternative conditioning).

    Args:
        labels: integer ``[H, W]`` or ``[B, H, W]``.
        num_classes: K.
        ignore_index: id that gets an all-zero vector; other ids outside ``[0, K)`` raise.

    Returns:
        float32 ``[K, H, W]`` for one map, ``[B, K, H, W]`` for a batch.
    """
    t = _as_long(labels)
    _check(t, num_classes, ignore_index, "one_hot")
    valid = (t >= 0) & (t < num_classes)
    out = F.one_hot(torch.where(valid, t, torch.zeros_like(t)), num_classes).float()
    out = out * valid.unsqueeze(-1)
    return out.movedim(-1, -3).contiguous()


def colorize(labels, palette, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Label map(s) to RGB for figures; ids outside the palette (ignore ids) get ``ignore_color``.

    Returns:
        uint8 numpy ``[..., H, W, 3]``.
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    pal = np.asarray(palette, dtype=np.uint8)
    lut = np.concatenate([pal, np.asarray(ignore_color, np.uint8)[None]])
    lab = lab.astype(np.int64)
    lab = np.where((lab >= 0) & (lab < len(pal)), lab, len(pal))
    return lut[lab]


def resize_image(img, size: int | Sequence[int]):
    """Antialiased bilinear resize to ``(H, W)``, returning the input's kind.

    Args:
        img: a PIL image, a uint8 numpy ``[H, W, 3]`` array, or a float tensor
            ``[3, H, W]`` / ``[B, 3, H, W]``.
    """
    h, w = _size(size)
    if isinstance(img, Image.Image):
        if img.size == (w, h):
            return img
        return img.resize((w, h), Image.BILINEAR, reducing_gap=None)
    if isinstance(img, np.ndarray):
        if img.shape[:2] == (h, w):
            return img
        if img.dtype == np.uint8:
            return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).movedim(-1, 0)[None]
        return resize_image(t, (h, w))[0].movedim(0, -1).numpy()
    if isinstance(img, torch.Tensor):
        if tuple(img.shape[-2:]) == (h, w):
            return img
        x = img[None] if img.dim() == 3 else img
        y = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        y = y.to(img.dtype) if img.is_floating_point() else y
        return y[0] if img.dim() == 3 else y
    raise TypeError(f"resize_image: unsupported type {type(img).__name__}")


def resize_labels(labels, size: int | Sequence[int]):
    """Nearest resize of label maps (``[H, W]`` or ``[B, H, W]``); never creates a new id.

    Uses the same "nearest-exact" rule as :func:`scp_core.labels.downsample_labels` (the
    pixel at the centre of each output cell), for down- and upsampling. Returns the input's
    kind and dtype (numpy array, tensor or PIL image).
    """
    h, w = _size(size)
    if isinstance(labels, Image.Image):
        return Image.fromarray(resize_labels(np.asarray(labels), (h, w)))
    if isinstance(labels, torch.Tensor):
        if tuple(labels.shape[-2:]) == (h, w):
            return labels
        return downsample_labels(labels, (h, w)).to(labels.dtype)
    arr = np.asarray(labels)
    if arr.shape[-2:] == (h, w):
        return arr
    return downsample_labels(_np_tensor(arr), (h, w)).numpy().astype(arr.dtype, copy=False)
