"""A pipeline folder on disk: its ``scp_pipeline.json``, the sha256 of its weight files, its swap into place.

:meth:`scp_core.pipeline.SCPDiffPipeline.save_pretrained` records the sha256 of every weight file
(``*.safetensors``, by path relative to the folder) under ``weights_sha256`` in ``scp_pipeline.json``;
``from_pretrained`` checks them with :func:`check_weight_hashes`, so a weight file changed after
saving (a flipped bit loads and samples other images) is refused with the file's name. Folders
written before the hashes were recorded (no ``weights_sha256``) still load, unchecked.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .io import sha256_file

__all__ = ["CONFIG_NAME", "HASHES_KEY", "read_config", "weight_hashes", "check_weight_hashes", "put_in_place",
           "check_target_folder"]

CONFIG_NAME = "scp_pipeline.json"
HASHES_KEY = "weights_sha256"
MODULES_NAME = "modules.json"  # a folder of trained modules (training.stacks.save_modules): their sha256
WEIGHT_SUFFIX = ".safetensors"


def weight_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """``{relative posix path: sha256 hex}`` of every ``*.safetensors`` file under ``folder``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob(f"*{WEIGHT_SUFFIX}")) if p.is_file()}


def check_weight_hashes(folder: str | os.PathLike, cfg: dict, skip: tuple[str, ...] = ()) -> None:
    """Compare the weight files of ``folder`` with the sha256 recorded in its ``scp_pipeline.json``.

    Args:
        folder: the pipeline folder.
        cfg: its parsed ``scp_pipeline.json`` (no ``weights_sha256``: a folder from before, not checked).
        skip: path prefixes not checked (components replaced by the caller: ``"controlnet/"``).

    Raises:
        ValueError: naming the first file that is missing or whose sha256 differs, and the fix.
    """
    folder = Path(folder)
    recorded = cfg.get(HASHES_KEY)
    if recorded is None:
        return
    if not isinstance(recorded, dict):
        raise ValueError(f"{folder / CONFIG_NAME}: {HASHES_KEY} must map file names to sha256 digests; "
                         "restore it from git or re-save the pipeline")
    for rel, digest in sorted(recorded.items()):
        if rel.startswith(skip):
            continue
        path = folder / rel
        if not path.is_file():
            raise ValueError(f"{path} is listed in {folder / CONFIG_NAME} but missing; restore it from git "
                             "or re-create the pipeline (`scpdiff train`)")
        if sha256_file(path) != digest:
            raise ValueError(f"{path} does not match the sha256 recorded in {folder / CONFIG_NAME}: the weight file "
                             "was changed after the pipeline was saved (edited, corrupt or truncated) and would "
                             "sample other images; restore it from git or re-create the pipeline (`scpdiff train`)")


def read_config(path: Path) -> dict:
    """``scp_pipeline.json`` as a dict with the keys the pipeline needs; ``ValueError`` saying what is wrong."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from git or re-save the pipeline") from e
    need = ("num_classes", "palette", "image_size", "ignore_index", "scale_factor")
    missing = [k for k in need if k not in cfg] if isinstance(cfg, dict) else list(need)
    if missing:
        raise ValueError(f"{path} lacks {missing}; restore it from git or re-save the pipeline")
    try:
        ok = (int(cfg["num_classes"]) >= 1 and len(cfg["image_size"]) == 2
              and np.asarray(cfg["palette"]).shape == (int(cfg["num_classes"]), 3) and float(cfg["scale_factor"]) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{path} has invalid values (num_classes={cfg['num_classes']!r}, image_size="
                         f"{cfg['image_size']!r}, palette of shape {np.asarray(cfg['palette'], dtype=object).shape}, "
                         f"scale_factor={cfg['scale_factor']!r}); restore it from git or re-save the pipeline")
    return cfg


def check_target_folder(path: Path) -> None:
    """Refuse a ``save_pretrained`` target that is a file, or a non-empty folder that is no pipeline."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot save the pipeline to {path}: it is a file, and a pipeline is a folder; "
                                 "choose a folder path (it is created)")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
        raise FileExistsError(f"cannot save the pipeline to {path}: the folder holds other files and no "
                              f"{CONFIG_NAME} (save_pretrained replaces a pipeline folder as a whole); choose an "
                              "empty or new folder")


def put_in_place(tmp: Path, path: Path) -> None:
    """Rename the complete folder ``tmp`` onto ``path``; an earlier ``path`` waits beside it as
    ``.<name>.old`` (loaded by ``from_pretrained`` if a kill falls between the two renames)."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old)


def read_modules(folder: Path) -> dict:
    """``folder/modules.json`` of a trained-modules folder; ``FileNotFoundError`` naming the fix."""
    path = Path(folder) / MODULES_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a folder of trained modules (no {MODULES_NAME}); train it with "
                                "`scpdiff train --profile toy-seed --seed N` or restore it from git")
    return json.loads(path.read_text())
