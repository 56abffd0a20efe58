"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or a kill mid-write leaves the old file (or none), never a half-written one.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
# an absolute path of at least two components, not part of a URL or a relative path
_ABS_PATH = re.compile(r"(?<![\w.~:/-])(/[^\s/'\"`,;:()\[\]{}|<>]+(?:/[^\s/'\"`,;:()\[\]{}|<>]*)+)")


def portable(text: str, root: str | os.PathLike = REPO_ROOT) -> str:
    """``text`` with this machine's absolute paths removed, so that reports can be committed.

    Paths inside ``root`` (the repository) become relative to it (``reports/toy``); any other
    absolute path is reduced to ``.../<last component>`` (a site-packages file, a temporary
    folder). URLs and relative paths are left alone.
    """
    root = str(Path(root).resolve())

    def repl(m: re.Match) -> str:
        p = m.group(1)
        if p == root or p.startswith(root + "/"):
            return os.path.relpath(p, root)
        name = p.rstrip("/").rsplit("/", 1)[-1]
        return f".../{name}" if name else "..."
    return _ABS_PATH.sub(repl, text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    Args:
        path: the final file.
        suffix: suffix of the temporary file (some writers insist on an extension);
            defaults to the target's own suffix.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, keep_paths: bool = False) -> Path:
    """Atomically write ``text`` to ``path``, with absolute paths made :func:`portable`.

    Everything this project writes (reports, metrics, facts) may be committed, and no
    committed file may carry a path of the machine that wrote it; ``keep_paths=True`` opts out.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text if keep_paths else portable(text))
    return Path(path)


def write_json(path: str | os.PathLike, obj, keep_paths: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON (absolute paths made portable unless ``keep_paths``)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", keep_paths=keep_paths)
