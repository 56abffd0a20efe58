"""What one kernel loads once, keyed by the settings that make it: pipelines, datasets, segmenters, priors.

:data:`CONTEXT` is the study's cache; every loader below goes through it, and a test (or a notebook
that changed files on disk) empties it with ``CONTEXT.clear()``.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np
import torch

from ..data import dataset_at_size, images_labels
from ..data.profiles import TOY_PIPELINE, repo_path
from ..metrics import HFSegmenter, InceptionFeatures, SegmenterFeatures
from ..metrics.toy_segmenter import load_toy_segmenter
from ..models import default_device
from ..pipeline import load_stack
from ..priors import NormalPrior
from .. import timing
from ..reference import cached_accumulator, reference_accumulator, reference_provenance
from . import cache
from .settings import Settings


class Context:
    """A dictionary of loaded objects: :meth:`get` makes an object once per key."""

    def __init__(self) -> None:
        self._store: dict = {}

    def get(self, key, make: Callable):
        if key not in self._store:
            self._store[key] = make()
        return self._store[key]

    def clear(self) -> None:
        self._store.clear()


CONTEXT = Context()


def load_pipeline(s: Settings):
    """The profile's pipeline, loaded by its scale's rule (``pipeline.load_stack``: float32 on the CPU for the
    toy profiles, the default device and dtype at real scale)."""
    def make():
        torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("SCP_THREADS", "2"))))
        return load_stack(repo_path(s.pipeline), s.scale, trained=repo_path(s.trained))
    return CONTEXT.get(("pipe", s.pipeline, s.trained), make)


def training_facts(s: Settings) -> dict:
    """What the profile's stack recorded about its training (``training_facts.json`` beside its pipeline folder)."""
    return json.loads((repo_path(s.pipeline or TOY_PIPELINE).parent / "training_facts.json").read_text())


def load_data(s: Settings, split: str):
    """The dataset of a split with the profile's options (real scale: at the pipeline's image size)."""
    def make():  # real scale: at the size the pipeline was fine-tuned at (the toy data has its own)
        return dataset_at_size(s.dataset, s.data_root, split, None if s.is_toy else load_pipeline(s).image_size,
                               s.dataset_options)
    key = ("data", s.dataset, s.data_root, split, json.dumps(s.dataset_options, sort_keys=True, default=str))
    return CONTEXT.get(key, make)


def load_segmenter(s: Settings | None = None):
    """The toy segmenter, a segmenter trained with the toy recipe (zoo/camvid), or a transformers model folder."""
    folder = s.segmenter if s is not None else None

    def make():
        path = repo_path(folder)
        cfg = path / "config.json" if path is not None else None
        if cfg is not None and cfg.is_file() and "channels" in json.loads(cfg.read_text()):
            return load_toy_segmenter(path)
        return HFSegmenter(folder) if folder else load_toy_segmenter()
    return CONTEXT.get(("seg", folder), make)


def feature_extractor(s: Settings):
    """Features for the Frechet distance: the toy segmenter's (FD-toy) or Inception's (FID)."""
    return CONTEXT.get(("extractor", s.metric), lambda: (
        SegmenterFeatures(load_segmenter()) if s.metric == "FD-toy" else InceptionFeatures(device=default_device())))


def eval_set(s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_eval`` evaluation images (uint8) and label maps: the splits ``s.eval_splits`` in order."""
    imgs, labs, left = [], [], s.n_eval
    for split in s.eval_splits:
        ds = load_data(s, split)
        img, lab = images_labels(ds, np.arange(min(left, len(ds))))
        imgs.append(img), labs.append(lab)
        left -= len(img)
        if left <= 0:
            break
    return torch.cat(imgs), torch.cat(labs)


def build_priors(s: Settings, save: bool = True) -> dict:
    """Spatial, categorical and joint priors (Eqs. 5, 7, 8) from ``n_ref`` training images.

    The statistics come from :mod:`scp_core.reference` (the one convention every entry point uses,
    so ``scpdiff priors`` with the same pipeline, dataset, ``n`` and seed writes the same prior
    files), cached in ``<reports>/priors/reference_statistics.safetensors``.

    Returns:
        ``{"normal": NormalPrior, "spatial": ..., "categorical": ..., "joint": ...,
        "_accumulator": PriorAccumulator}``; the files go to ``<reports>/priors/*.safetensors`` (git-ignored).
    """
    @timing.timed("priors")
    def make():
        pipe = load_pipeline(s)
        ds = load_data(s, "train")
        prov = reference_provenance(pipe, s.pipeline, s.dataset, "train", min(s.n_ref, len(ds)), s.seed)
        encode = cache.reference_encoder(s, pipe, s.seed) if cache.enabled(s) else None
        acc = cached_accumulator(s.priors_dir / "reference_statistics.safetensors", prov, s.dataset_options,
                                 lambda: reference_accumulator(pipe, ds, s.n_ref, seed=s.seed, encode=encode))
        priors = {"normal": NormalPrior(latent_channels=pipe.latent_shape[0]),
                  **acc.priors(s.min_count, s.fallback, prov), "_accumulator": acc}
        if save:
            for k in ("spatial", "categorical", "joint"):
                priors[k].save(s.priors_dir / f"{k}.safetensors")
        return priors
    key = ("priors", s.profile, s.pipeline, s.dataset, s.data_root, s.n_ref, s.min_count, s.fallback, s.seed)
    return CONTEXT.get(key, make)
