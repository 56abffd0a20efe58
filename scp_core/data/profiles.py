"""What each profile is: its dataset and the dataset's options, its scale, and its folders in the zoo.

The one table of profiles (:data:`PROFILES`) that the pipeline's default, the reference set, the study's
settings and the trainers all read, so that a zoo folder is named once. It lives with the datasets because a
profile is first a dataset (with options such as CamVid's size and hold-out) and the stack trained on it; it
knows no model and no notebook: the study adds its counts on top (``study.settings``), training its recipes
(``training.recipes``).

Scale:

* ``toy`` -- a stack of this repository's zoo, trained on the CPU, run in float32 on the CPU, scored by the
  toy segmenter (FD-toy); the environment's ``SCP_PIPELINE`` / ``SCP_DATA_ROOT`` do not apply;
* ``real`` -- real photographs at their pipeline's size, scored with Inception (FID): a zoo stack trained on
  real frames (camvid), or a pipeline folder given at run time (cityscapes, ade20k).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .base import REPO_ROOT
from .datasets import CAMVID_DUSK_HOLDOUT

SCALES = ("toy", "real")
ZOO = REPO_ROOT / "zoo"


@dataclass(frozen=True)
class Profile:
    """One row of :data:`PROFILES`.

    Attributes:
        name: the profile's name (``scpdiff ... --profile NAME``).
        dataset: the dataset registry name (:func:`scp_core.data.get_dataset`).
        scale: ``"toy"`` or ``"real"`` (module docstring).
        pipeline: the stack's pipeline folder, relative to the repository (``None``: given at run time).
        segmenter: the segmenter folder that scores mIoU (``None``: the toy segmenter, or given at run time).
        dataset_options: keywords of the dataset class (image size, CamVid's hold-out).
    """

    name: str
    dataset: str
    scale: str
    pipeline: str | None = None
    segmenter: str | None = None
    dataset_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"profile {self.name!r}: scale must be one of {SCALES}, got {self.scale!r}")

    @property
    def is_toy(self) -> bool:
        return self.scale == "toy"

    @property
    def zoo(self) -> Path | None:
        """The profile's zoo folder (the pipeline folder's parent: reports and training facts live there)."""
        return REPO_ROOT / Path(self.pipeline).parent if self.pipeline else None


TOY_PIPELINE = "zoo/toy/pipeline"  # the committed toy stack: the default pipeline everywhere
TOY_PIPELINE_DIR = REPO_ROOT / TOY_PIPELINE
PROFILES = {p.name: p for p in (
    Profile("toy", "toy-city", "toy", pipeline=TOY_PIPELINE),
    # toy-city-gv (a global factor per image: daylight, dusk, night) on the toy VAE and base UNet
    Profile("toy-gv", "toy-city-gv", "toy", pipeline="zoo/toy-gv/pipeline"),
    # the toy-gv stack with base UNet and ControlNet retrained under zero terminal SNR (notebook 09)
    Profile("toy-gv-zero-snr", "toy-city-gv", "toy", pipeline="zoo/toy-gv-zero-snr/pipeline"),
    # a daylight ControlNet trained with the UNet frozen whole, same latent space (notebook 10)
    Profile("toy-locked", "toy-city", "toy", pipeline="zoo/toy-locked/pipeline"),
    # real photographs on the CPU: CamVid at 96 x 128 (3:4, the native 360 x 480 scaled by 4/15: what a 2-core CPU
    # can train to paint in one sitting, bench/camvid_train_cost.py) with the
    # pretrained TAEF2 autoencoder; the last 12 frames of the dusk sequence 0001TP are held out of every
    # training and prior set (split "holdout")
    Profile("camvid", "camvid", "real", pipeline="zoo/camvid/pipeline", segmenter="zoo/camvid/segmenter",
            dataset_options={"size": (96, 128), "holdout": CAMVID_DUSK_HOLDOUT}),
    # the schedule control: the same recipe trained under SD's schedule (terminal alpha_bar > 0), the only
    # difference from camvid's zero-terminal-SNR stack; scored by camvid's segmenter (one judge for both)
    Profile("camvid-sd", "camvid", "real", pipeline="zoo/camvid-sd/pipeline", segmenter="zoo/camvid/segmenter",
            dataset_options={"size": (96, 128), "holdout": CAMVID_DUSK_HOLDOUT}),
    # the paper's datasets: pipeline, data and segmenter are given at run time
    Profile("cityscapes", "cityscapes", "real"),
    Profile("ade20k", "ade20k", "real"),
)}

SECOND_SEGMENTER = "zoo/toy/segmenter-b"  # the toy profiles' second judge of mIoU / accuracy (another seed, widths)
# The daylight toy ControlNet stage from other training seeds (seed 0 is zoo/toy), and the folder whose frozen
# parts they share (zoo/toy's VAE and conditioning, the toy recipe's base UNet).
SEEDS_DIR = "zoo/toy-seeds"
SEED_BASE = PROFILES["toy-locked"].pipeline


def profile(name: str) -> Profile:
    """The row of :data:`PROFILES` named ``name``; ``ValueError`` naming the profiles there are."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def seed_folder(seed: int) -> str:
    """The trained-modules folder of the daylight toy ControlNet with training seed ``seed`` >= 1."""
    return f"{SEEDS_DIR}/seed{int(seed)}"


def training_seed_folder(profile: str, seed: int) -> str:
    """The trained-modules folder of ``profile``'s ControlNet stage from training seed ``seed`` >= 1: the toy's
    :func:`seed_folder`; a zoo stack's ``<its zoo folder>/seeds/seed<N>`` (seed 0 is the stack itself)."""
    if profile == "toy":
        return seed_folder(seed)
    row = PROFILES.get(profile)
    if row is None or not row.pipeline:
        raise ValueError(f"profile {profile!r} has no zoo stack, so no training seeds; those with one: "
                         f"{sorted(n for n, p in PROFILES.items() if p.pipeline)}")
    return f"{Path(row.pipeline).parent.as_posix()}/seeds/seed{int(seed)}"


def repo_path(path: str | Path | None) -> Path | None:
    """A path of the table (relative to the repository) as an absolute path; absolute paths and ``None`` stay."""
    if not path:
        return None
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def data_root(name: str, given: str | os.PathLike | None = None) -> str | None:
    """The dataset folder of profile ``name``: ``given``, else ``SCP_DATA_ROOT`` for a real-scale profile, else
    ``None`` (the dataset's default, ``data/<dataset>``). The toy profiles generate their data, so the
    environment does not apply to them (a CamVid root given to toy-city would have it generate images there)."""
    if given:
        return str(given)
    return None if profile(name).is_toy else os.environ.get("SCP_DATA_ROOT") or None
