"""Label maps: checked integer ids, downsampled to latent size, ignore ids given a class.

The one place that says what a label map is; the priors, the datasets and the pipeline read it.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

_WIDE_UNSIGNED = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))


def _looks_like_colour(t: torch.Tensor) -> bool:
    """``[H, W, 3|4]`` or ``[B, H, W, 3|4]`` with a real image's height and width: an RGB(A) image, not ids."""
    return t.dim() in (3, 4) and t.shape[-1] in (3, 4) and min(t.shape[-3:-1]) >= 8


def _colour_message(name: str, t: torch.Tensor) -> str:
    return (f"{name} look like a colour image (shape {tuple(t.shape)}, RGB in the last axis), not a label map: "
            "pass the label ids ([H, W] or [B, H, W] integers), or map the colours to ids with the dataset's "
            "palette: scp_core.labels.ids_from_colours(image, palette)")


def as_label_tensor(labels, name: str = "labels") -> torch.Tensor:
    """``labels`` as an integer tensor; floats, booleans and colour images are refused, saying why."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{name} must be an integer tensor or array, got {type(labels).__name__}") from e
    if _looks_like_colour(labels):
        raise ValueError(_colour_message(name, labels))
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"{name} must hold integer class ids, got dtype {labels.dtype}; "
            "if these are ids stored as floats, convert them with .long() first")
    if labels.dtype in _WIDE_UNSIGNED:  # torch has no min / max / comparisons for these: use int64
        labels = labels.long()  # uint64 ids >= 2**63 wrap to negative ids and are refused as out of range
    return labels


def label_batch(labels, name: str = "labels") -> torch.Tensor:
    """One label map ``[H, W]`` or a batch ``[B, H, W]`` (tensor or array) as a checked ``[B, H, W]`` int64 tensor.

    The ids are checked as :func:`as_label_tensor` does (integers, not a colour image); a single map
    gains a batch axis of 1; any other number of axes is refused, naming the shape. The tensor stays
    on its device; an empty batch (``B = 0``) is returned as it is; id ranges are the caller's
    (:func:`check_ids`).
    """
    labels = as_label_tensor(labels, name)
    if labels.dim() == 2:
        labels = labels[None]
    if labels.dim() != 3:
        raise ValueError(f"{name} must be [B, H, W] (or one [H, W] map), got shape {tuple(labels.shape)}")
    return labels.long()


def _as_size(size) -> tuple[int, int]:
    """``(h, w)`` from one int or a pair of ints; ``ValueError`` for anything else."""
    try:
        h, w = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        if int(h) != h or int(w) != w:
            raise TypeError
        return int(h), int(w)
    except (TypeError, ValueError) as e:
        raise ValueError(f"size must be one int or a pair of ints (h, w), got {size!r}") from e


def downsample_labels(labels, size: int | Sequence[int]) -> torch.Tensor:
    """Nearest selection of label maps to latent size; never invents an id.

    Each output cell takes the input pixel at the centre of its footprint
    (``src = floor((dst + 0.5) * in / out)``), the "nearest-exact" rule. Unlike bilinear
    resampling this only ever copies ids that exist in the input.

    Args:
        labels: integer map ``[H, W]`` or batch ``[B, H, W]`` (tensor or numpy array).
        size: ``(h, w)`` of the output, or one int for a square output.

    Returns:
        ``[h, w]`` or ``[B, h, w]`` int64 tensor, on the input's device.
    """
    labels = as_label_tensor(labels)
    if labels.dim() not in (2, 3):
        raise ValueError(f"labels must be [H, W] or [B, H, W], got shape {tuple(labels.shape)}")
    h, w = _as_size(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {(h, w)}")
    H, W = labels.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"labels are empty (shape {tuple(labels.shape)})")
    dev = labels.device
    rows = ((torch.arange(h, device=dev, dtype=torch.float64) + 0.5) * (H / h)).floor().long().clamp_(max=H - 1)
    cols = ((torch.arange(w, device=dev, dtype=torch.float64) + 0.5) * (W / w)).floor().long().clamp_(max=W - 1)
    return labels[..., rows[:, None], cols[None, :]].long()


def map_ignore(labels, ignore_index: int = 255, to: int | None = None) -> torch.Tensor:
    """Give an ignore id (Cityscapes / COCO-Stuff 255) a class of its own.

    The priors need a distribution for every id that appears at inference, ignored ones
    included, so they are treated as one extra class.

    Args:
        labels: integer label maps.
        ignore_index: the id to remap.
        to: the new id (default: one past the largest other id, usually ``num_classes``).
    """
    labels = as_label_tensor(labels).long().clone()
    mask = labels == ignore_index
    if to is None:
        rest = labels[~mask]
        to = int(rest.max()) + 1 if rest.numel() else 0
    labels[mask] = int(to)
    return labels


def ids_from_colours(image, palette) -> torch.Tensor:
    """Colour-coded label maps ``[..., H, W, 3]`` -> ids ``[..., H, W]`` (int64) by exact match with
    ``palette [K, 3]``; a colour that is not in the palette is refused, naming it."""
    img = torch.as_tensor(np.asarray(image))[..., :3].long()
    pal = torch.as_tensor(np.asarray(palette)).long().reshape(-1, 3)
    match = (img[..., None, :] == pal).all(-1)  # [..., H, W, K]
    found = match.any(-1)
    if not found.all():
        raise ValueError(f"colours not in the palette, e.g. {tuple(int(v) for v in img[~found][0])}; pass the "
                         "palette the label maps were drawn with (e.g. the dataset's .palette)")
    return match.float().argmax(-1)


def check_ids(labels: torch.Tensor, num_classes: int) -> None:
    """Refuse ids outside ``[0, num_classes)`` (explaining ignore ids and colour images)."""
    if labels.numel() == 0:
        return
    if _looks_like_colour(labels) and int(labels.max()) >= num_classes:
        raise ValueError(_colour_message("labels", labels))
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = torch.unique(labels[(labels < 0) | (labels >= num_classes)])
        shown = ", ".join(str(int(b)) for b in bad[:10]) + (" ..." if bad.numel() > 10 else "")
        raise ValueError(
            f"label ids outside [0, {num_classes}): {shown}. Ignore ids such as 255 need a class "
            f"of their own: remap them with scp_core.labels.map_ignore(labels, 255, to={num_classes}) "
            f"and build the prior with num_classes={num_classes + 1}")
