"""A batch's report, written beside the one it replaces and put in place only once every notebook has run.

:func:`open_stage` makes ``<report>/.batch-<time>-<pid>/``, a copy of the report's files (the scratch folders of
:data:`SCRATCH` are linked, not copied: every batch shares the image cache and the priors), and records each copied
file; the batch's notebooks write into it. Then one of:

* :func:`publish` (every notebook ran): each file the batch wrote, new or rewritten, is renamed into the report at
  its place (each a whole file); the files of notebooks outside the batch stay. Where such a file names the stage
  (the notebooks' ``out_dir``: their parameters, the settings in their metrics), it names the report instead, as
  if the batch had run there. The caller then writes ``runs.json`` and ``index.md``.
* :func:`keep_failed` (a notebook failed): the stage, less the copied files the batch left alone, becomes
  ``<report>/_failed/<time>/``, for its own ``runs.json`` and ``index.md``; the report is not touched.

A killed batch leaves the report as it was and its hidden stage folder beside the report's files.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .io import write_text

__all__ = ["SCRATCH", "FAILED", "TEXT", "Stage", "open_stage", "written", "publish", "keep_failed"]

SCRATCH = ("cache", "priors", "training_scratch")  # git-ignored folders the notebooks share across batches
FAILED = "_failed"
TEXT = (".json", ".md", ".csv", ".ipynb", ".html")  # files that can name the stage's path


@dataclass
class Stage:
    """A batch's working copy of a report: ``path``, the ``stamp`` it was opened at and the files copied into it
    (``seeded``: relative path -> inode, size and modification time right after the copy)."""

    path: Path
    stamp: str
    seeded: dict


def _files(folder: Path) -> dict[str, Path]:
    """Every report file under ``folder`` by relative path: not in the scratch folders, ``_failed`` or a hidden
    folder (a stage), not hidden itself (a temporary file of a write in progress)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in (*SCRATCH, FAILED) or any(p.startswith(".") for p in rel.parts) or path.is_symlink():
            continue
        if path.is_file():
            out[rel.as_posix()] = path
    return out


def _key(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def open_stage(out: Path) -> Stage:
    """A copy of report folder ``out`` inside it, ``.batch-<time>-<pid>/``, for a batch to write into."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f".batch-{stamp}-{os.getpid()}"
    path.mkdir(parents=True)
    for rel, src in _files(out).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, path / rel)
    for name in SCRATCH:
        if (out / name).is_dir():
            (path / name).symlink_to(out / name, target_is_directory=True)
    return Stage(path, stamp, {rel: _key(p) for rel, p in _files(path).items()})


def written(stage: Stage) -> list[str]:
    """The files the batch wrote into ``stage``: new ones, and copied ones it replaced or changed."""
    return [rel for rel, p in _files(stage.path).items() if stage.seeded.get(rel) != _key(p)]


def _scratch_back(stage: Stage, out: Path) -> None:
    """The links to the report's scratch folders removed; a scratch folder the batch made moved into the report
    where it has none (the image cache a failed batch filled is kept too)."""
    for name in SCRATCH:
        path = stage.path / name
        if path.is_symlink():
            path.unlink()
        elif path.is_dir() and not (out / name).exists():
            path.rename(out / name)


def _as_report(stage: Stage, out: Path, rel: str) -> None:
    """File ``rel`` of the stage naming the report where it names the stage: an absolute or repository-relative
    path ends in ``/<stage>``, a path made portable outside the repository reads ``.../<stage>``."""
    path = stage.path / rel
    text = path.read_text(encoding="utf-8")
    mark = stage.path.name
    new = text.replace(f".../{mark}", f".../{out.name}").replace(f"/{mark}", "")
    if new != text:
        write_text(path, new, keep_paths=True)  # the text was made portable when written; base64 stays as it is


def publish(stage: Stage, out: Path) -> list[str]:
    """Rename every file the batch wrote into report ``out`` (each whole), drop the stage; returns their paths."""
    _scratch_back(stage, out)
    moved = written(stage)
    for rel in moved:
        if rel.endswith(TEXT):
            _as_report(stage, out, rel)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage.path / rel, out / rel)
    shutil.rmtree(stage.path)
    return moved


def keep_failed(stage: Stage, out: Path) -> Path:
    """The stage, holding only what the batch wrote, moved to ``<out>/_failed/<time>/``; returns that folder."""
    _scratch_back(stage, out)
    kept = set(written(stage))
    for rel, path in _files(stage.path).items():
        if rel not in kept:
            path.unlink()
    for folder in sorted((p for p in stage.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    target = out / FAILED / stage.stamp
    if target.exists():
        target = target.with_name(f"{stage.stamp}-{os.getpid()}")
    target.parent.mkdir(exist_ok=True)
    stage.path.rename(target)
    return target
