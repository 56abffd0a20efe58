"""toy-city: a procedural street-scene data set, the embedded default of the study.

Each image is a little perspective street seen from a car (the Cityscapes viewpoint): a
horizon, a road converging to a vanishing point, sidewalks beside it, facades of buildings
or parks (terrain, hedges) on both sides, sky above, and objects drawn far to near: trees,
poles with traffic signs, cars on the lanes or parked, people on the sidewalks. The renderer is
:mod:`.toy_scene`; this module builds, caches and serves the data set.

Per image the layout varies (horizon, vanishing point, road width and drift, sidewalk widths,
building heights, segment lengths, object counts and places) and so do the appearances
(facade colours, window grids, asphalt, car and clothing colours, textures). With
``global_variation=0`` all images share one lighting regime (daylight, as in Cityscapes);
``global_variation`` in ``(0, 1]`` scales per-image *global* factors: time of day (day,
dusk, night with lit windows and tail lights), overcast, fog and exposure. docs/method.md
section 4 explains why the study needs both settings.

Determinism: image ``i`` is drawn from its own generator seeded with ``(seed, i)``, so it
does not depend on ``n``; all random numbers are drawn in the same order whatever
``global_variation`` is, so the same seed gives the same layouts in both settings.
"""
from __future__ import annotations

import functools
import hashlib
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json
from .base import SegDataset, resolve_root
from .batches import to_float
from .palettes import TOY_CLASSES, TOY_PALETTE
from .toy_scene import render_scene

__all__ = ["GENERATOR_VERSION", "generate_toy_city", "ensure_toy_city", "toy_city_files", "ToyCity",
           "TOY_PROMPT"]

# Bump on any change that alters the generated pixels or labels: ensure_toy_city then regenerates.
GENERATOR_VERSION = "2"
TOY_PROMPT = "City road scenes"


def generate_toy_city(n: int, seed: int = 0, size=(64, 128), global_variation: float = 0.0):
    """Generate ``n`` toy street scenes.

    Args:
        n: number of images.
        seed: base seed; image ``i`` uses a generator seeded with ``(seed, i)``.
        size: ``(H, W)``; the default 64 x 128 has the Cityscapes aspect.
        global_variation: in ``[0, 1]``; scales per-image lighting / weather factors
            (0: one daylight regime, 1: day / dusk / night, overcast, fog).

    Returns:
        ``(images, labels)``: uint8 ``[n, H, W, 3]`` and uint8 ``[n, H, W]`` with ids into
        :data:`TOY_CLASSES`.
    """
    H, W = int(size[0]), int(size[1])
    if n < 0 or H < 8 or W < 8:
        raise ValueError(f"need n >= 0 and size >= (8, 8), got n={n}, size={size}")
    if not 0.0 <= float(global_variation) <= 1.0:
        raise ValueError(f"global_variation must be in [0, 1], got {global_variation}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    images = np.empty((n, H, W, 3), np.uint8)
    labels = np.empty((n, H, W), np.uint8)
    for i in range(n):
        images[i], labels[i] = render_scene(np.random.default_rng([int(seed), i]), H, W, float(global_variation))
    return images, labels


# ------------------------------------------------------------------------- on-disk cache
DEFAULT_COUNTS = {"n_train": 4000, "n_val": 500, "size": [64, 128], "seed": 0}


def _params(n_train, n_val, size, global_variation, seed) -> dict:
    return {"generator_version": GENERATOR_VERSION, "n_train": int(n_train), "n_val": int(n_val),
            "size": [int(size[0]), int(size[1])], "global_variation": float(global_variation),
            "seed": int(seed), "classes": list(TOY_CLASSES)}


def _read_meta(path: Path) -> dict | None:
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return have if isinstance(have, dict) else None


def toy_city_files(root="data/toy-city", n_train: int = 4000, n_val: int = 500, size=(64, 128),
                   global_variation: float = 0.0, seed: int = 0) -> dict[str, Path]:
    """The cache files of these parameters in ``root``: ``{"train", "val", "meta"}`` -> path.

    The cache is keyed by what makes it: the default counts, size and seed use the plain names
    ``train.npz``, ``val.npz``, ``meta.json`` (those of earlier versions, so existing caches stay
    valid) unless a ``meta.json`` there describes other parameters (another generator version or
    ``global_variation``); every other set of parameters gets its own files
    ``train-<key>.npz``, ``val-<key>.npz``, ``meta-<key>.json`` with ``key`` the first 12 hex
    digits of the sha256 of the parameters. So no call ever rewrites another call's files.
    """
    root = resolve_root(root)
    want = _params(n_train, n_val, size, global_variation, seed)
    plain = {"train": root / "train.npz", "val": root / "val.npz", "meta": root / "meta.json"}
    if all(want[k] == v for k, v in DEFAULT_COUNTS.items()):
        have = _read_meta(plain["meta"])
        if have is None or {k: have.get(k) for k in want} == want:
            return plain
    key = hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:12]
    return {"train": root / f"train-{key}.npz", "val": root / f"val-{key}.npz", "meta": root / f"meta-{key}.json"}


def ensure_toy_city(root="data/toy-city", n_train: int = 4000, n_val: int = 500, size=(64, 128),
                    global_variation: float = 0.0, seed: int = 0) -> Path:
    """Generate toy-city into ``root`` once: the files :func:`toy_city_files` names.

    Later calls with the same parameters and :data:`GENERATOR_VERSION` reuse the files; other
    parameters get files of their own (the cache is keyed by them), so files in use are never
    rewritten. Validation images use seed ``seed + 1`` so they never repeat a training scene. A
    relative ``root`` is taken relative to the repository root. Each file is written atomically
    (a new file renamed into place), the meta file last.
    """
    root = resolve_root(root)
    want = _params(n_train, n_val, size, global_variation, seed)
    files = toy_city_files(root, n_train, n_val, size, global_variation, seed)
    have = _read_meta(files["meta"])
    if have is not None and {k: have.get(k) for k in want} == want and all(
            files[sp].is_file() for sp in ("train", "val")):
        return root
    root.mkdir(parents=True, exist_ok=True)
    if files["meta"].exists():
        files["meta"].unlink()  # damaged or incomplete: the npz files below are about to be made
    for split, n, sd in (("train", n_train, seed), ("val", n_val, seed + 1)):
        images, labels = generate_toy_city(n, seed=sd, size=size, global_variation=global_variation)
        with atomic_path(files[split]) as tmp:
            np.savez(tmp, images=images, labels=labels)
    write_json(files["meta"], {**want, "palette": TOY_PALETTE.tolist(),
                               "note": "generated by scp_core.data.ensure_toy_city; delete to regenerate"})
    return root


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, shape: tuple[int, int, int]):
    """``(images, labels)`` of a cache file, checked against ``shape`` = (n, H, W)."""
    fix = f"delete {path} (and the meta*.json beside it that describes it); it is regenerated on next use"
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("images", "labels") if k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:  # ValueError: not an npz
        raise ValueError(f"the toy-city cache file {path} is damaged or truncated ({e}); {fix}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(f"the toy-city cache file {path} holds no {' or '.join(map(repr, missing))} array; {fix}")
    images, labels = arrays["images"], arrays["labels"]
    n, h, w = shape
    if images.shape != (n, h, w, 3) or labels.shape != (n, h, w) or images.dtype != np.uint8:
        raise ValueError(f"the toy-city cache file {path} holds images {images.shape} {images.dtype} and labels "
                         f"{labels.shape}, not the {n} x {h} x {w} scenes its meta file describes; {fix}")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class ToyCity(SegDataset):
    """toy-city as a torch Dataset (generated on first use, see :func:`ensure_toy_city`).

    Items are ``{"image": float32 [3, H, W] in [-1, 1], "labels": int64 [H, W], "name": str}``;
    ``.images`` (uint8 ``[N, H, W, 3]``) and ``.labels`` (uint8 ``[N, H, W]``) give bulk access.
    ``root=None`` means ``data/toy-city`` (``data/toy-city-gv`` for ``global_variation=1``).
    """

    name = "toy-city"
    class_names = list(TOY_CLASSES)
    palette = TOY_PALETTE
    num_classes = len(TOY_CLASSES)
    ignore_index = None
    prompt = TOY_PROMPT
    default_size = size = (64, 128)
    splits = ("train", "val")

    def __init__(self, root=None, split: str = "train", global_variation: float = 0.0,
                 n_train: int = 4000, n_val: int = 500, size=(64, 128), seed: int = 0):
        if split not in self.splits:
            raise ValueError(f"toy-city has splits 'train' and 'val', got {split!r}")
        if root is None:
            gv = float(global_variation)
            root = "data/toy-city" if gv == 0 else ("data/toy-city-gv" if gv == 1 else f"data/toy-city-gv{gv:g}")
        self.size = (int(size[0]), int(size[1]))
        self.split = split
        self.global_variation = float(global_variation)
        self.root = ensure_toy_city(root, n_train, n_val, self.size, global_variation, seed)
        path = toy_city_files(self.root, n_train, n_val, self.size, global_variation, seed)[split]
        n = n_train if split == "train" else n_val
        self.images, self.labels = _load(str(path), path.stat().st_mtime_ns, (int(n), *self.size))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        image = to_float(self.images[i][None])[0]
        return {"image": image, "labels": torch.from_numpy(self.labels[i].astype(np.int64)),
                "name": f"{self.split}_{i:05d}"}
