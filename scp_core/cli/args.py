"""The argument types and shared options of the ``scpdiff`` commands: each refuses a bad value when parsed, with
the reason and the allowed range (before any model is loaded or any file written).

* :func:`int_at_least`, :func:`float_in`, :func:`seed`, :func:`out_folder`, :func:`device`: argparse ``type``\\ s;
* :class:`LazyChoices`: argparse ``choices`` read from a table of the package when first needed, so that building
  the parser loads no model (the table's module is imported when an option names a value, or on an error);
* :func:`device_option`: the one ``--device`` option;
* :func:`write_error`: the one line that says why an output could not be written (a full disk, a read-only
  folder, a file in the way) and what to do.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import math
import os

MAX_SEED = 2**63 - 1
DEVICES = ("auto", "cpu", "cuda")


def int_at_least(low: int, what: str):
    """An argparse ``type``: an integer >= ``low``, refused with the reason and the allowed range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {what} is an integer >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small; {what} is an integer >= {low}")
        return value
    parse.__name__ = what
    return parse


def float_in(low: float, high: float, what: str, low_open: bool = False):
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            shown = f"{'(' if low_open else '['}{low:g}, {high:g}]".replace("inf]", "inf)")
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; {what} is a finite number in {shown}")
        return value
    parse.__name__ = what
    return parse


def seed(text: str) -> int:
    """An argparse ``type``: a seed, an integer in ``[0, 2**63 - 1]``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; a seed is an integer in [0, 2**63 - 1]")
    return value


def out_folder(text: str) -> str:
    """An argparse ``type``: a folder path that is not a file and whose nearest existing folder is writable."""
    path = os.path.abspath(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; choose another --out")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text} lies under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK)):
        raise argparse.ArgumentTypeError(f"{text} is in a read-only folder ({parent}); choose a writable --out")
    return text


def device(text: str) -> str:
    """An argparse ``type``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether a GPU is there is checked when the
    run starts)."""
    kind, _, index = text.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; --device is auto, cpu, cuda or cuda:N")
    return text


def device_option(parser, more: str = "") -> None:
    """``--device``, the same on every command that loads a model (``more``: what it picks on this command)."""
    parser.add_argument("--device", default="auto", type=device,
                        help="auto (default: SCP_DEVICE if set, else this process's GPU where there is one, else the "
                             "CPU), cpu, cuda or cuda:N" + (f"; {more}" if more else ""))


class LazyChoices:
    """argparse ``choices``: the names of ``module.attribute`` (a dict's keys or a sequence), read when first
    needed, so that building the parser imports no model. Give the option a ``metavar``: the usage line then
    does not list them (which would import the module for every usage message)."""

    def __init__(self, module: str, attribute: str):
        self.module, self.attribute, self._names = module, attribute, None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = list(getattr(importlib.import_module(self.module), self.attribute))
        return self._names

    def __contains__(self, value) -> bool:
        return value in self.names()

    def __iter__(self):
        return iter(self.names())


_FIXES = {  # errno -> what to do about an output that could not be written
    errno.ENOSPC: "free space on that disk or choose an --out on another one",
    errno.EDQUOT: "free space within your quota or choose an --out on another disk",
    errno.EROFS: "that file system is mounted read-only; choose an --out on a writable one",
    errno.EACCES: "choose an --out in a folder you may write to (or change its permissions)",
    errno.EPERM: "choose an --out in a folder you may write to (or change its permissions)",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another --out",
    errno.EEXIST: "a file is in the way; move it or choose another --out",
    errno.EISDIR: "a folder is in the way; move it or choose another --out",
}


def write_error(command: str, error: OSError, out=None) -> str | None:
    """The one line for an output that could not be written (``None`` for an error of another kind):
    ``scpdiff <command>: cannot write <path>: <reason>; <fix>``. ``out`` names the path where the error does
    not (a full disk reports no file name)."""
    if error.errno not in _FIXES:
        return None
    path = error.filename or out or "the output"
    reason = error.strerror or os.strerror(error.errno)
    return f"scpdiff {command}: cannot write {os.fspath(path)}: {reason}; {_FIXES[error.errno]}"
