"""One entry of the study's cache on disk: an array and a digest of it, checked on every read.

An entry is one file, ``<key>.entry``: the header :data:`MAGIC`, a 32-byte BLAKE2b digest of the entry's key (its
file name) and of the array's ``.npy`` bytes, then those bytes. A read recomputes the digest and hands the array
back only where it matches, so an entry whose bytes were changed (a flipped bit, a third of an image inverted),
cut short, or replaced (by another entry's file, by any other file) is never used: :func:`load` reports it once
(a :class:`CacheEntryWarning` naming it), removes it, and returns ``None``, and its caller computes it again and
writes it anew. A file without the header (a plain ``.npy``: the format before digests) has nothing to check
against: it is treated the same way, removed and computed again, never read. (Entries written before digests were
``<key>.npy`` files; no key names one of them any more, since every key carries the source's digest.)

Writes are atomic (:func:`scp_core.io.atomic_path` / :func:`scp_core.io.atomic_create`): a reader sees a whole
entry or none; the digest catches what happens to an entry after it was written. It guards against damage and
mix-ups, not against someone who writes an entry with a fresh digest on purpose (the format is public). The digest
costs one pass of BLAKE2b over the bytes read (0.8 GB/s on one core of the 2-core CPU, measured while it
trained: 2 ms for a 512 x 1024 image), far below computing them.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np

from ..io import atomic_create, atomic_path, portable

MAGIC = b"SCP-cache-entry/1\n"
SUFFIX = ".entry"
_SIZE = 32


class CacheEntryWarning(UserWarning):
    """A cache entry that failed its check: reported once, removed, computed again."""


def _digest(key: str, payload: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=_SIZE, person=b"scp-cache")
    h.update(key.encode())
    h.update(b"|")
    h.update(payload)
    return h.digest()


def encode(key: str, array: np.ndarray) -> bytes:
    """The bytes of entry ``key`` holding ``array`` (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    payload = buf.getvalue()
    return MAGIC + _digest(key, payload) + payload


def decode(key: str, data: bytes) -> tuple[np.ndarray | None, str]:
    """``(array, "")`` where ``data`` is a sound entry of ``key``, else ``(None, what is wrong with it)``."""
    if not data.startswith(MAGIC):
        return None, "holds no digest to check (not an entry of this format): unverifiable"
    head = len(MAGIC) + _SIZE
    stored, payload = data[len(MAGIC):head], data[head:]
    if len(stored) < _SIZE or _digest(key, payload) != stored:
        return None, "does not match its digest (corrupted, truncated or replaced)"
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False), ""
    except (OSError, ValueError) as e:  # a sound digest over bytes numpy cannot read: written by another version
        return None, f"is not a readable array ({e})"


def load(path: Path) -> np.ndarray | None:
    """The array of the entry at ``path``, or ``None`` where there is none or it fails its check (then it is
    reported, removed, and the caller computes it again)."""
    try:
        with open(path, "rb") as f:
            data, inode = f.read(), os.fstat(f.fileno()).st_ino
    except OSError:  # missing, or unreadable: computed again (and rewritten)
        return None
    array, problem = decode(path.stem, data)
    if array is None:
        _discard(path, inode, problem)
    return array


def _discard(path: Path, inode: int, problem: str) -> None:
    warnings.warn(f"cache entry {path.parent.parent.name}/{path.stem} in {portable(str(path.parents[2]))} "
                  f"{problem}: removed, computed again", CacheEntryWarning, stacklevel=3)
    try:
        if os.stat(path).st_ino == inode:  # not an entry another process has written there since our read
            os.unlink(path)
    except OSError:
        pass


def _writer(path: Path, array: np.ndarray):
    data = encode(path.stem, array)
    return lambda tmp: Path(tmp).write_bytes(data)


def save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as the entry at ``path``, replacing any file there."""
    with atomic_path(path, suffix=SUFFIX) as tmp:
        _writer(path, array)(tmp)


def keep_first(path: Path, array: np.ndarray) -> np.ndarray:
    """Store ``array`` at ``path`` unless a sound entry is there already, and return what the cache holds.

    The same sample made in a batch of another size (another notebook, another lane) can differ by a grey level,
    and a feature row by float rounding: so the first entry written is kept (:func:`scp_core.io.atomic_create`) and
    every later caller scores those bytes, which a warm batch then reads. An entry there that fails its check is
    replaced by ours."""
    path = Path(path)
    if not atomic_create(path, _writer(path, array), SUFFIX):
        held = load(path)
        if held is not None:
            return held
        save(path, array)
    return array
