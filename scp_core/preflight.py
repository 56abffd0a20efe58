"""What a ``scpdiff reproduce`` batch needs on disk, checked before its first notebook starts.

:func:`preflight` takes the settings the batch's notebooks will run with (``study.settings``: the study's table
with the command's folders and the environment applied) and checks, without building a dataset or loading a
model:

* the dataset root of a real-scale profile, and the image and label folders of every split the batch reads (the
  priors' reference split and the evaluation splits), by the dataset's layout (its ``split_folders``);
* each pipeline folder: its ``scp_pipeline.json`` and every weight file that lists;
* each segmenter folder: its ``config.json`` and a weight file;
* at real scale, the weights folder (``SCP_WEIGHTS_DIR``, else ``weights/``): the TAEF2 autoencoder a pipeline
  names, which every notebook that samples or scores real images loads.

The first thing missing raises :class:`Missing` (a ``ValueError``): one line naming what is missing, where it was
looked for, and the option or command that supplies it. The toy profiles generate their data, so only their
pipeline and segmenter folders are checked. Weights a notebook can do without are not checked: LPIPS (05 reports it
unavailable) and FID's Inception, a package dependency that a batch of 00 and 02 does not use.
"""
from __future__ import annotations

import json
from pathlib import Path

from .data.base import resolve_root
from .data.datasets import DATASETS
from .data.profiles import PROFILES, repo_path
from .io import REPO_ROOT
from .pipeline_folder import CONFIG_NAME, HASHES_KEY
from .taef2 import DECODER_FILE, ENCODER_FILE
from .weights import ENV, weights_dir

__all__ = ["Missing", "preflight"]


class Missing(ValueError):
    """Something a notebook of the batch reads is not there (one line: what, where, the fix)."""


def _shown(path: Path) -> str:
    """A path as the user would type it: relative inside the repository."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _data(s, splits) -> None:
    """The dataset root and each split's folders (real scale)."""
    cls = DATASETS[s.dataset]
    root = resolve_root(s.data_root or cls.default_root)
    looked = f"(--data-root, else SCP_DATA_ROOT, else {cls.default_root})"
    where = f"data/README.md ({cls.__name__}) says what goes there"
    if not root.is_dir():
        raise Missing(f"the {s.dataset} dataset is missing: no folder {_shown(root)} {looked}; put it there or give "
                      f"--data-root DIR; {where}")
    for split in splits:
        for folder in cls.split_folders(root, split):
            if not folder.is_dir():
                raise Missing(f"split {split!r} of {s.dataset} is missing: no folder {_shown(folder)} under the data "
                              f"root {_shown(root)} {looked}; {where}, or choose other --eval-splits")


def _pipeline_fix(s, path: Path) -> str:
    """How to get the pipeline folder ``path``: train the profile's own, else name another."""
    own = PROFILES[s.profile].pipeline
    if own and path == repo_path(own):
        from .training.entry import TRAIN_PROFILES  # the trainers' table: read only to name the fix

        if s.profile in TRAIN_PROFILES:
            return f"train it with `scpdiff train --profile {s.profile}`, or give --pipeline DIR"
        return "restore it from git, or give --pipeline DIR"
    return "give --pipeline DIR (or SCP_PIPELINE) naming a pipeline folder"


def _pipeline(s) -> Path | None:
    """The pipeline folder, its ``scp_pipeline.json`` and the weight files it lists; returns the folder."""
    path = repo_path(s.pipeline)
    if path is None:  # a real-scale profile without one is refused by study.settings already
        return None
    config = path / CONFIG_NAME
    if not path.is_dir():
        raise Missing(f"the {s.profile} pipeline is missing: no folder {_shown(path)}; {_pipeline_fix(s, path)}")
    if not config.is_file():
        raise Missing(f"the {s.profile} pipeline folder {_shown(path)} has no {CONFIG_NAME}; "
                      f"{_pipeline_fix(s, path)}")
    for rel in json.loads(config.read_text()).get(HASHES_KEY) or {}:
        if not (path / rel).is_file():
            raise Missing(f"weight file {_shown(path / rel)} of the {s.profile} pipeline is missing (listed in "
                          f"{CONFIG_NAME}); {_pipeline_fix(s, path)}")
    return path


def _segmenter(s) -> None:
    """The segmenter folder: ``config.json`` and a weight file beside it."""
    path = repo_path(s.segmenter)
    if path is None:
        return
    fix = (f"train it with `scpdiff train --profile {s.profile}`, or give --segmenter DIR"
           if s.segmenter == PROFILES[s.profile].segmenter else "give --segmenter DIR (or SCP_SEGMENTER)")
    if not (path / "config.json").is_file():
        raise Missing(f"the {s.profile} segmenter is missing: no {_shown(path / 'config.json')}; {fix}")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise Missing(f"the {s.profile} segmenter folder {_shown(path)} has no weight file (*.safetensors, *.bin); "
                      f"{fix}")


def _weights(pipeline: Path | None) -> None:
    """At real scale: the TAEF2 files a pipeline's autoencoder reads."""
    vae = pipeline / "vae" / "config.json" if pipeline else None
    if vae is not None and vae.is_file() and json.loads(vae.read_text()).get("_class_name") == "TAEF2":
        for name in (ENCODER_FILE, DECODER_FILE):
            if not (weights_dir() / name).is_file():
                raise Missing(f"weight file {name} (the TAEF2 autoencoder of {_shown(pipeline)}) is missing: not in "
                              f"the weights folder {_shown(weights_dir())} ({ENV}, else weights/); put it there or "
                              f"set {ENV} to the folder that holds it")


def preflight(runs: list[tuple]) -> None:
    """Check what the batch reads before it starts; :class:`Missing` names the first thing that is not there.

    Args:
        runs: ``(settings, splits)`` for each notebook and setting of the batch: a ``study.Settings`` and the
            dataset splits that notebook reads with it (the reference split and its evaluation splits).
    """
    seen = set()
    for s, splits in runs:
        key = (s.profile, s.dataset, s.data_root, s.pipeline, s.segmenter, tuple(splits))
        if key in seen:
            continue
        seen.add(key)
        if not s.is_toy:
            _data(s, splits)
        pipeline = _pipeline(s)
        _segmenter(s)
        if not s.is_toy:
            _weights(pipeline)
