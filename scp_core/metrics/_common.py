"""Shared plumbing of the metrics: image sources, pretrained-weight checks, bootstrap CIs.

An *image source* is whatever a metric function accepts as a set of images:

* a tensor or numpy array, ``[N, 3, H, W]`` or ``[N, H, W, 3]`` (or one image without N);
  ``uint8`` means 0..255, floats are read in ``value_range`` (the project's convention is
  ``(-1, 1)``, the range of ``ToyCity`` items and of decoded samples);
* a folder (``str`` / ``Path``): its image files, sorted by name, read with PIL as RGB
  (``torchvision.io`` is unusable on this CPU torch, docs/method.md, section 5);
* a list of file paths, or a list of tensors / arrays (concatenated in order).

Every source is streamed in batches as float32 ``[B, 3, H, W]`` in ``[0, 1]``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file that this code never downloads is not where it must be."""


def hub_checkpoint_dir() -> Path:
    """The folder where ``torch.hub`` (and so pytorch-fid and torchvision) looks for weights.

    Returns:
        ``torch.hub.get_dir() / "checkpoints"``, i.e. ``$TORCH_HOME/hub/checkpoints``
        (default ``~/.cache/torch/hub/checkpoints``), evaluated now.
    """
    return Path(torch.hub.get_dir()) / "checkpoints"


def require_hub_checkpoint(filename: str, url: str, what: str) -> Path:
    """Return the path of a hub checkpoint, or raise before anything tries to download it.

    Args:
        filename: the file name torch.hub expects (e.g. ``pt_inception-2015-12-05-6726825d.pth``).
        url: where a user with network access gets it.
        what: a short description for the message (e.g. "pytorch-fid InceptionV3 weights").

    Returns:
        The existing file's path.

    Raises:
        MissingWeightsError: naming the file, the exact folder and the URL.
    """
    folder = hub_checkpoint_dir()
    path = folder / filename
    if not path.is_file():
        raise MissingWeightsError(
            f"{what} not found: expected the file '{filename}' in the folder '{folder}' "
            f"(torch.hub.get_dir()/checkpoints, i.e. $TORCH_HOME/hub/checkpoints; TORCH_HOME is "
            f"{os.environ.get('TORCH_HOME', 'not set')}). "
            f"No download is attempted (this project runs offline). On a machine with network, "
            f"download {url} and copy it to {path}."
        )
    return path


# --------------------------------------------------------------------------- image sources
def _to_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    raise TypeError(f"expected a tensor or numpy array, got {type(x).__name__}")


def to_unit_images(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Convert images to float32 ``[N, 3, H, W]`` in ``[0, 1]``.

    Args:
        images: tensor or array, ``[N, C, H, W]``, ``[N, H, W, C]``, ``[C, H, W]`` or
            ``[H, W, C]`` with C in {1, 3}. ``uint8`` is read as 0..255.
        value_range: the range of float input (ignored for uint8). Values are clamped to it.

    Returns:
        float32 tensor ``[N, 3, H, W]`` in ``[0, 1]`` (grey images are repeated to RGB).
    """
    x = _to_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"images must have 3 or 4 dimensions, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        lo, hi = value_range
        x = ((x.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
    else:
        raise TypeError(f"images must be uint8 or floating point, got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return files


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read one image file with PIL as uint8 RGB ``[3, H, W]``."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_label_map(path: str | os.PathLike) -> torch.Tensor:
    """Read one label image (mode L, P or I) with PIL as int64 ``[H, W]`` class ids."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: a label map must be single-channel (mode L, P or I), got shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def source_length(source) -> int:
    """Number of images in an image source (see the module docstring)."""
    if _is_path(source):
        return len(list_image_files(source))
    if isinstance(source, (torch.Tensor, np.ndarray)):
        return 1 if source.ndim == 3 else int(source.shape[0])
    if isinstance(source, Sequence):
        if source and all(_is_path(s) for s in source):
            return len(source)
        return sum(source_length(s) for s in source)
    raise TypeError(f"unsupported image source: {type(source).__name__}")


def iter_image_batches(source, batch_size: int = 50, value_range: tuple[float, float] = (-1.0, 1.0),
                       limit: int | None = None) -> Iterator[torch.Tensor]:
    """Stream an image source as float32 ``[B, 3, H, W]`` batches in ``[0, 1]``.

    Args:
        source: tensor / array, folder, list of files, or list of tensors / arrays.
        batch_size: images per batch (the last batch may be smaller).
        value_range: range of float tensors (see :func:`to_unit_images`).
        limit: stop after this many images (``None``: all).

    Yields:
        float32 tensors ``[B, 3, H, W]`` in ``[0, 1]``, in source order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    remaining = math.inf if limit is None else int(limit)
    if _is_path(source):
        source = list_image_files(source)
    if isinstance(source, (torch.Tensor, np.ndarray)):
        source = [source]
    if isinstance(source, Sequence) and source and all(_is_path(s) for s in source):
        files = list(source)
        if remaining < len(files):
            files = files[: int(remaining)]
        for i in range(0, len(files), batch_size):
            imgs = [read_image(f) for f in files[i:i + batch_size]]
            shapes = {tuple(t.shape) for t in imgs}
            if len(shapes) > 1:
                raise ValueError(f"images in one batch differ in size {sorted(shapes)} "
                                 f"(files {files[i]} ...); resize them to one size first")
            yield to_unit_images(torch.stack(imgs))
        return
    if not isinstance(source, Sequence):
        raise TypeError(f"unsupported image source: {type(source).__name__}")
    for part in source:
        x = _to_tensor(part)
        n = 1 if x.ndim == 3 else x.shape[0]
        if x.ndim == 3:
            x = x.unsqueeze(0)
        for i in range(0, n, batch_size):
            if remaining <= 0:
                return
            take = batch_size if remaining == math.inf else min(batch_size, int(remaining))
            chunk = x[i:i + take]
            remaining -= chunk.shape[0]
            yield to_unit_images(chunk, value_range)


def iter_label_batches(source, batch_size: int = 50, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Stream label maps (tensor / array ``[N, H, W]``, folder or file list) as int64 batches."""
    if _is_path(source):
        source = list_image_files(source)
    n_done = 0
    if isinstance(source, Sequence) and not isinstance(source, (torch.Tensor, np.ndarray)) \
            and source and all(_is_path(s) for s in source):
        files = list(source)[:limit] if limit is not None else list(source)
        for i in range(0, len(files), batch_size):
            yield torch.stack([read_label_map(f) for f in files[i:i + batch_size]])
        return
    x = _to_tensor(source)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    while n_done < n:
        yield x[n_done:min(n, n_done + batch_size)].long()
        n_done += batch_size


# --------------------------------------------------------------------------- statistics
def bootstrap_ci(values, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Args:
        values: 1-d sequence of per-unit scores (per label map, per image, ...).
        n_boot: bootstrap resamples.
        ci: coverage (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of the resampling generator (deterministic).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1.0 - ci) / 2.0
    return (float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a)))
