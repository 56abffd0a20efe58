"""The argument types of the ``scpdiff`` commands: each refuses a bad value when parsed, with the reason and
the allowed range (before any model is loaded or any file written)."""
from __future__ import annotations

import argparse
import math
import os

MAX_SEED = 2**63 - 1


def _int_at_least(low: int, what: str):
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


def _float_in(low: float, high: float, what: str, low_open: bool = False):
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


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; a seed is an integer in [0, 2**63 - 1]")
    return value


def _out_folder(text: str) -> str:
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
