"""Atomic writes: write to a temporary file (or folder) beside the target, then rename.

A crash or a kill mid-write leaves the old file (or none), never a half-written one; a folder written
with :func:`atomic_folder` holds one complete run, never parts of two.
"""
from __future__ import annotations

import contextlib
import hashlib
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
# an absolute path of at least two components, not part of a URL or a relative path
_ABS_PATH = re.compile(r"(?<![\w.~:/-])(/[^\s/'\"`,;:()\[\]{}|<>]+(?:/[^\s/'\"`,;:()\[\]{}|<>]*)+)")
# where a machine keeps its files: the usual top-level folders (a text written on another machine still names them)
# and, by :func:`_of_a_machine`, every top-level folder of this one
_MACHINE_ROOTS = frozenset({"home", "root", "tmp", "work", "Users", "usr", "opt", "var", "mnt", "private", "Volumes"})


def _of_a_machine(path: str) -> bool:
    """Whether ``path`` (absolute) names a place on a machine: its first folder is one where machines keep files,
    not a template's piece such as ``/metrics/`` in ``reports/<profile>/metrics/<name>.json``."""
    first = path[1:].split("/", 1)[0]
    return first in _MACHINE_ROOTS or os.path.isdir("/" + first)


def portable(text: str, root: str | os.PathLike = REPO_ROOT) -> str:
    """``text`` with this machine's absolute paths removed, so that reports can be committed.

    Paths inside ``root`` (the repository) become relative to it (``reports/toy``); any other
    absolute path of a machine is reduced to ``.../<last component>`` (a site-packages file, a temporary
    folder). URLs, relative paths and path-like templates (``reports/<profile>/metrics/<name>.json``,
    ``<out>/priors/<setting>``) are left alone.
    """
    root = str(Path(root).resolve())

    def repl(m: re.Match) -> str:
        p = m.group(1)
        if p == root or p.startswith(root + "/"):
            return os.path.relpath(p, root)
        if not _of_a_machine(p):
            return p
        name = p.rstrip("/").rsplit("/", 1)[-1]
        return f".../{name}" if name else "..."
    return _ABS_PATH.sub(repl, text)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (weight files, imported files, downloads)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _temporary_beside(path: Path, suffix: str | None) -> Iterator[Path]:
    """A temporary file in ``path``'s folder with the usual permissions, removed on leaving unless renamed."""
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
    finally:
        if tmp.exists():
            tmp.unlink()


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
    with _temporary_beside(path, suffix) as tmp:
        yield tmp
        os.replace(tmp, path)


def atomic_create(path: str | os.PathLike, write, suffix: str | None = None) -> bool:
    """Write a file with ``write(temporary path)`` and put it at ``path`` only where no file is there yet: an
    atomic create-if-absent (a hard link of the complete temporary file), so of several writers of one entry the
    first one's bytes stay. Returns whether ours was put there (on a file system without hard links it replaces
    any file there, as :func:`atomic_path` does, and returns True)."""
    path = Path(path)
    with _temporary_beside(path, suffix) as tmp:
        write(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            os.replace(tmp, path)
        return True


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


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Atomically write ``tensors`` as a safetensors file that follows the umask like every other file.

    (safetensors' own ``save_file`` makes every file 0600 whatever the umask; this writes its bytes.)
    """
    from safetensors.torch import save  # imports torch: only the writers of weights pay for it

    data = save(tensors, metadata=metadata)
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def follow_umask(folder: str | os.PathLike) -> Path:
    """Give a folder another library just wrote (diffusers' ``save_pretrained``, accelerate's checkpoints:
    their safetensors files are 0600; ``mkdtemp`` makes 0700) the permissions the umask gives new files."""
    folder, umask = Path(folder), _umask()
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    return folder


class OutputFolderError(ValueError):
    """An output folder that cannot be written as one unit (used by another run, not ours, locked)."""


class AtomicFolder:
    """A folder written as one unit: built in a temporary folder beside it, then renamed into place.

    :meth:`open` takes the folder's lock (``.<name>.lock`` beside it, an ``flock`` with the holder's
    pid: the kernel lets go of it when the holder dies, so a killed run's lock is taken over), clears
    the debris of a killed earlier run (``.<name>.tmp-*`` and ``.<name>.old-*`` folders; a run killed
    between the two renames of :meth:`commit` gets its complete folder back), refuses a non-empty
    ``path`` unless ``overwrite`` and returns the empty temporary folder to fill. :meth:`commit` puts
    it in place of ``path`` as a whole; :meth:`close` removes what was not committed and frees the lock.

    Args:
        path: the final folder.
        overwrite: replace a non-empty ``path`` as a whole (only one holding ``marker``, if given:
            a folder that is not a run of this tool is never removed).
        marker: the file every run of this kind holds (its manifest).
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, marker: str | None = None):
        self.path = Path(path).absolute()
        self.overwrite, self.marker = overwrite, marker
        self.lock = self.path.parent / f".{self.path.name}.lock"
        self.tmp: Path | None = None
        self._fd: int | None = None

    def _debris(self, kind: str) -> list[Path]:
        return sorted(self.path.parent.glob(f".{glob.escape(self.path.name)}.{kind}-*"))

    def _take_lock(self) -> None:
        import fcntl  # POSIX only; the rest of this module runs anywhere

        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputFolderError(f"{self.path} is being written by another run (pid {holder}, lock file "
                                        f"{self.lock}); wait for it to finish or choose another --out") from None
            try:  # the holder may have removed the file between our open and our flock: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)

    def open(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise OutputFolderError(f"{self.path} is a file, not a folder; choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            old = self._debris("old")
            if old and not self.path.exists():  # killed between the renames of commit: the old run was complete
                os.replace(max(old, key=lambda d: d.stat().st_mtime), self.path)
            for d in self._debris("old") + self._debris("tmp"):
                shutil.rmtree(d, ignore_errors=True)
            if self.path.is_dir() and any(self.path.iterdir()):
                if not self.overwrite:
                    raise OutputFolderError(f"{self.path} holds an earlier run; pass --overwrite to replace it as "
                                            "a whole, or choose another --out")
                if self.marker and not (self.path / self.marker).exists():
                    raise OutputFolderError(f"{self.path} is not empty and holds no {self.marker}: it is not a run "
                                            "of this command, and --overwrite replaces only those; choose another "
                                            "--out or empty it")
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent))
            os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        except BaseException:
            self.close()
            raise
        return self.tmp

    def commit(self) -> Path:
        """Put the temporary folder in place of ``path`` (the earlier run, if any, is removed)."""
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-{os.getpid()}-", dir=self.path.parent))
            os.replace(self.path, old)  # onto the empty folder mkdtemp made
        os.replace(self.tmp, self.path)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def close(self) -> None:
        """Remove the uncommitted temporary folder and free the lock."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` as a whole on success
    (see :class:`AtomicFolder`). On an exception ``path`` is left as it was."""
    folder = AtomicFolder(path, overwrite=overwrite, marker=marker)
    tmp = folder.open()
    try:
        yield tmp
        folder.commit()
    finally:
        folder.close()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
