"""Where a run's seconds go: a tally of wall time by stage, for the study's profile.

The stages are the parts of a notebook a speed-up would target: ``sampling`` (DDIM with the UNet and
ControlNet), ``decoding`` and ``encoding`` (the VAE), ``priors`` (building prior statistics, less the encoding
inside), ``segmenter`` (the segmenters' scores), ``features`` (Frechet features of the profile's own network),
``inception`` (FID's network), ``resampling`` (the intervals' recomputation) and ``plotting`` (saving figures).
Times are *exclusive*: a stage entered inside another (the decoding at the end of a sampling call, the encoding
inside a prior build) is counted once, in the inner stage, and the outer one pauses meanwhile. The tally is the
process's own (one notebook kernel, one command); :func:`tally` reads it, :func:`reset` clears it.

    with timing.stage("sampling"):
        ...
"""
from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager

STAGES = ("sampling", "decoding", "encoding", "priors", "segmenter", "features", "inception", "resampling",
          "plotting")

_lock = threading.Lock()
_tally: dict[str, float] = {}
_local = threading.local()  # the stack of open stages of this thread: [name, resumed_at]


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _add(name: str, seconds: float) -> None:
    with _lock:
        _tally[name] = _tally.get(name, 0.0) + seconds


@contextmanager
def stage(name: str):
    """Count the wall time of the block under ``name`` (one of :data:`STAGES`), pausing the enclosing stage."""
    if name not in STAGES:
        raise ValueError(f"unknown timing stage {name!r}; choose from {STAGES}")
    stack, now = _stack(), time.perf_counter()
    if stack:  # the enclosing stage pauses: its time so far is counted now
        outer = stack[-1]
        _add(outer[0], now - outer[1])
    stack.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        inner = stack.pop()
        _add(inner[0], now - inner[1])
        if stack:
            stack[-1][1] = now  # the enclosing stage resumes


def timed(name: str):
    """Decorator form of :func:`stage`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with stage(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def tally() -> dict[str, float]:
    """Seconds per stage so far (stages never entered are 0), rounded to 0.1 s, in :data:`STAGES` order."""
    with _lock:
        return {k: round(_tally.get(k, 0.0), 1) for k in STAGES}


def reset() -> None:
    with _lock:
        _tally.clear()
