"""Make ``import torchvision`` work when its C extension cannot load (docs/method.md, section 5).

torch 2.13.0 is matched only by torchvision 0.28.0, a CUDA build. With a CPU-only torch its
``_C`` extension fails to load, and ``torchvision/_meta_registrations.py`` then dies on
``register_fake("torchvision::nms")`` ("operator torchvision::nms does not exist"), which
breaks diffusers, lpips and pytorch-fid too. Defining the two operator *schemas* that it
registers fake kernels for (``nms`` and ``qnms``) lets the import finish; models and
transforms work, ``torchvision.ops`` and ``torchvision.io`` stay unusable (read images with
PIL). Nothing is done where the extension loads normally.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIB = None  # keeps the Library object alive (schemas vanish when it is collected)
ACTIVE = False  # True once the shim had to define the schemas


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision installed: nothing to patch
    pkg = list(spec.submodule_search_locations)[0]
    libs = glob.glob(os.path.join(pkg, "_C*.so")) + glob.glob(os.path.join(pkg, "_C*.pyd"))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except (OSError, RuntimeError):
        return False
    return True


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def install() -> bool:
    """Define the missing schemas if (and only if) torchvision's extension cannot load.

    Returns:
        True if the shim is active after the call.
    """
    global _LIB, ACTIVE
    if ACTIVE or "torchvision" in sys.modules:
        return ACTIVE
    if _extension_loads() and all(_op_exists(n) for n in _SCHEMAS):
        return False
    _LIB = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not _op_exists(name):
            _LIB.define(schema)
    ACTIVE = True
    return True


install()
