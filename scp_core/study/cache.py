"""Compute once: a content-addressed disk cache of generated images and of their features.

Notebooks 01, 03, 04, 08, 10 and 11 sample the same stacks with the same priors, mu and seeds on the same maps (04's
maps are the first of 03's), and score the same images with the same networks. Each image and each image's
features are kept under a key made of everything that determines them, so a batch computes each once, and a
second batch into the same reports folder computes none again:

* an image: the stack's weight fingerprint (every tensor of its VAE, UNet, ControlNet and prompt embeddings, the
  scheduler's config, the dtype and device), the prior file's digest (:func:`scp_core.priors.prior_digest`), the
  mu asked for and the default mu, the steps, the guidance, the seed of that sample, its label map, its real start
  latent (Fig. 3) if any;
* an image's features: the image's bytes and the extractor's networks;
* an image's confusion matrix (mIoU's per-image counts): the image's bytes, its label map and the segmenter;
* a batch of reference latents (the priors' input): the stack, the encoder seed, the batch and its images;
* a setting's resampled Frechet distances and KID (its interval's 1,000 draws): its features, the reference's, the
  resampled maps and the seed.

Every key also carries a digest of the ``scp_core`` source, so a code change starts the cache afresh. One entry is
one small file (``<reports>/cache/<kind>/<key[:2]>/<key>.entry``, kinds ``images``, ``runs`` (a call's mu and
``t_start``), ``latents``, ``features``, ``confusions``, ``draws``) written atomically (a temporary name, then a
rename), so two notebooks running at once can share it: each reads only complete files, and two that compute the
same entry write the same bytes. The keys cover every input, and each entry also carries a digest of its own
content, checked on every read (:mod:`.cache_files`): an entry that was corrupted, cut short or replaced (or one of
the older format, without a digest) is reported, removed and computed again, never used. ``SCP_CACHE=0`` switches
it off; smoke runs never use it (their counts change from test to test). The cache is scratch: ``git`` ignores it
and deleting it only costs time.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..io import REPO_ROOT
from ..metrics.resampling import Draws
from ..priors import prior_digest
from .cache_files import SUFFIX, keep_first, load, save
from .settings import Settings

_SOURCE: str | None = None


def source_digest() -> str:
    """sha256 of every ``.py`` file of the ``scp_core`` package (path and bytes): a code change, a new cache."""
    global _SOURCE
    if _SOURCE is None:
        h = hashlib.sha256()
        pkg = REPO_ROOT / "scp_core"
        for p in sorted(pkg.rglob("*.py")):
            h.update(str(p.relative_to(pkg)).encode())
            h.update(p.read_bytes())
        _SOURCE = h.hexdigest()
    return _SOURCE


def enabled(s: Settings) -> bool:
    """Whether ``s``'s run uses the cache: not in smoke runs, not with ``SCP_CACHE=0``."""
    return not s.smoke and os.environ.get("SCP_CACHE", "1") != "0"


def root(s: Settings) -> Path:
    return s.reports / "cache"


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())  # numpy has no bfloat16
        elif isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


def _modules_digest(h, modules: dict) -> None:
    """Feed every tensor of ``{name: nn.Module}`` into the hash ``h``, by name."""
    for name, module in modules.items():
        for k, t in sorted(module.state_dict().items()):
            h.update(f"{name}.{k}".encode())
            h.update(_digest(t).encode())


def _kept_on(obj, make) -> str:
    """``make()``, computed once per object and kept on it (a fingerprint of its weights)."""
    fp = getattr(obj, "_scp_fingerprint", None)
    if fp is None:
        fp = make()
        obj._scp_fingerprint = fp
    return fp


def stack_fingerprint(pipe) -> str:
    """sha256 of what a pipeline computes with: every tensor of its modules, its prompt embeddings, the scheduler's
    config, dtype and device. Computed once per pipeline object (kept on it)."""
    def make():
        h = hashlib.sha256()
        _modules_digest(h, {name: getattr(pipe, name) for name in ("vae", "unet", "controlnet")})
        for t in (pipe.prompt_embeds, pipe.negative_prompt_embeds):
            h.update(_digest(t if t is not None else "none").encode())
        h.update(_digest(dict(pipe.scheduler.config), str(pipe.dtype), str(pipe.device)).encode())
        return h.hexdigest()
    return _kept_on(pipe, make)


def extractor_fingerprint(extractor) -> str:
    """sha256 of a feature extractor's networks (its ``nn.Module`` attributes' tensors) and class: retrained
    segmenter weights give new features and a new key. Computed once per extractor object."""
    def make():
        mods = {"": extractor} if isinstance(extractor, torch.nn.Module) else {
            k: v for k, v in sorted(vars(extractor).items()) if isinstance(v, torch.nn.Module)}
        if not mods:
            raise TypeError(f"{type(extractor).__name__} holds no network to fingerprint: its features cannot be "
                            "cached (run with SCP_CACHE=0)")
        h = hashlib.sha256(type(extractor).__name__.encode())
        _modules_digest(h, mods)
        return h.hexdigest()
    return _kept_on(extractor, make)


def _path(s: Settings, kind: str, key: str) -> Path:
    return root(s) / kind / key[:2] / f"{key}{SUFFIX}"


def image_keys(s: Settings, pipe, labels: torch.Tensor, prior, mu, steps: int, seeds: list[int],
               x0=None) -> tuple[str, list[str]]:
    """The call's key (the stack, the prior, mu, steps, guidance, a real start or not: what fixes the mu and
    ``t_start`` that run) and one key per sample (that, with its seed, its map and its real start)."""
    call = _digest("image", source_digest(), stack_fingerprint(pipe),
                   prior_digest(prior) if prior is not None else "attached-or-normal", mu, s.mu, steps, s.guidance,
                   x0 is not None)
    return call, [_digest(call, int(seed), labels[i], x0[i] if x0 is not None else None)
                  for i, seed in enumerate(seeds)]


def generated(s: Settings, call: str, keys: list[str], make) -> tuple[np.ndarray, float, int]:
    """The images of ``keys`` (uint8 ``[n, H, W, 3]``) with the ``mu`` and ``t_start`` that ran: cached ones read,
    the others made by ``make(todo) -> (images [len(todo), H, W, 3], mu, t_start)`` for the missing positions."""
    images = [load(_path(s, "images", k)) for k in keys]
    meta = load(_path(s, "runs", call))
    todo = [i for i, im in enumerate(images) if im is None] or ([0] if meta is None else [])
    if todo:
        made, mu, t_start = make(todo)
        for i, img in zip(todo, made):
            images[i] = keep_first(_path(s, "images", keys[i]), np.asarray(img))
        meta = np.array([float(mu), float(t_start)])
        save(_path(s, "runs", call), meta)
    return np.stack(images), float(meta[0]), int(meta[1])


def reference_encoder(s: Settings, pipe, seed: int):
    """An ``encode(b, images_u8, make)`` for :func:`scp_core.reference.reference_batches`: reference batch ``b``'s
    latents read from the cache, or made by ``make()`` and kept (key: the stack, the seed, ``b``, the images), so
    the priors of notebook 08 and every later batch read the latents notebook 02 encoded."""
    def encode(b: int, images_u8, make):
        key = _digest("latents", source_digest(), stack_fingerprint(pipe), int(seed), int(b),
                      torch.as_tensor(images_u8))
        path = _path(s, "latents", key)
        x0 = load(path)
        if x0 is not None:
            return torch.from_numpy(x0).to(pipe.device)
        x0 = make()  # contiguous, as a read gives it back (SCPDiffPipeline.encode): priors fitted on either agree
        save(path, x0.detach().cpu().numpy())
        return x0
    return encode


def feature_keys(images_u8: torch.Tensor, extractor: str) -> list[str]:
    """One key per image: its bytes and the extractor's identity."""
    common = _digest("features", source_digest(), extractor)
    arr = images_u8.contiguous().numpy()
    return [_digest(common, a) for a in arr]


def _rows(s: Settings, kind: str, keys: list[str], make) -> np.ndarray:
    """One cached row per key (``[n, ...]``): the cached ones read, the others made by ``make(todo) -> array`` for the
    missing positions and kept (the first entry written wins: :func:`.cache_files.keep_first`)."""
    rows = [load(_path(s, kind, k)) for k in keys]
    todo = [i for i, r in enumerate(rows) if r is None]
    if todo:
        for i, r in zip(todo, make(todo)):
            rows[i] = keep_first(_path(s, kind, keys[i]), np.asarray(r))
    return np.stack(rows)


def features(s: Settings, images_u8: torch.Tensor, extractor: str, make) -> torch.Tensor:
    """Features ``[n, D]`` (float64) of uint8 images: cached rows read, the others made by ``make(images)``."""
    rows = _rows(s, "features", feature_keys(images_u8, extractor),
                 lambda todo: make(images_u8[todo]).double().cpu().numpy())
    return torch.from_numpy(rows)


def confusions(s: Settings, images_u8: torch.Tensor, labels: torch.Tensor, segmenter: str, make) -> np.ndarray:
    """Each image's confusion matrix against its map (``[n, K, K + 1]`` ints): cached ones read, the others made by
    ``make(todo)`` (the positions missing). Key: the segmenter's fingerprint, the image's bytes and its map's."""
    common = _digest("confusions", source_digest(), segmenter)
    images, maps = images_u8.contiguous().numpy(), torch.as_tensor(labels).contiguous().numpy()
    return _rows(s, "confusions", [_digest(common, a, m) for a, m in zip(images, maps)], make)


def frechet_draws(s: Settings, gen: dict, ref: np.ndarray, index: np.ndarray, *, ref_maps: int, seed: int,
                  kid: bool, make) -> tuple[dict, dict | None]:
    """Every setting's Frechet (and KID) point estimate and resampled values, as ``make(subset) -> fd`` or
    ``(fd, kid)`` (:func:`scp_core.metrics.resampling.frechet_draws` on the settings of ``subset``) gives them: kept
    per setting under a key of its features, the reference's, the resampled maps, ``ref_maps``, the seed and
    ``kid``, so a warm batch reads its intervals instead of solving a thousand eigenvalue problems per setting.
    Returns ``({name: Draws}, {name: Draws} or None)``."""
    # one cached row per statistic: [value, draw_1, ..., draw_B]
    common = _digest("draws", source_digest(), ref, index, int(ref_maps), int(seed), bool(kid))
    keys = {name: _digest(common, np.asarray(f)) for name, f in gen.items()}
    rows = {name: load(_path(s, "draws", k)) for name, k in keys.items()}
    todo = {name: gen[name] for name, r in rows.items() if r is None}
    if todo:
        made = make(todo)
        fd, kd = made if kid else (made, None)
        for name in todo:
            rows[name] = np.stack([np.concatenate([[d.value], d.draws]) for d in
                                   ([fd[name], kd[name]] if kid else [fd[name]])])
            save(_path(s, "draws", keys[name]), rows[name])
    fd = {name: Draws(float(r[0, 0]), r[0, 1:]) for name, r in rows.items()}
    return fd, ({name: Draws(float(r[1, 0]), r[1, 1:]) for name, r in rows.items()} if kid else None)
