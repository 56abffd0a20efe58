"""The study's settings: one table of profiles, and the defaults every notebook and command reads.

A :class:`Settings` is one run's knobs. :data:`PROFILES` holds each profile's defaults (the toy
profiles generate their data and use the committed toy zoo; the real-scale profiles take a
pipeline folder, a dataset root and a segmenter); :data:`SMOKE` shrinks every count so a notebook
runs in seconds. :func:`settings` is the one way to get a profile's settings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data import CAMVID_DUSK_HOLDOUT
from ..io import REPO_ROOT
from ..priors import MIN_COUNT
from ..sampling import DEFAULT_MU

PRIOR_KINDS = ("normal", "spatial", "categorical", "joint")

@dataclass
class Settings:
    """One run's knobs. ``smoke`` shrinks every count so a notebook runs in seconds.

    Attributes:
        profile: ``toy`` or ``toy-gv`` (or a real-scale profile name).
        dataset: dataset registry name; ``pipeline``: pipeline folder (``None``: the toy zoo).
        n_ref: reference images for the priors; ``n_eval``: validation maps evaluated.
        steps, guidance, mu: DDIM steps, CFG scale, the default mu for the priors.
        min_count, fallback: joint prior fallback rule.
        seed: base seed (sample ``i`` uses ``seed + i``).
        out_dir: where reports go (default ``reports/<profile>``; smoke runs go to
            ``reports/_smoke/<profile>`` so they never overwrite reference results).
    """

    profile: str = "toy"
    dataset: str = "toy-city"
    pipeline: str | None = None
    n_ref: int = 2000
    n_eval: int = 500
    steps: int = 20
    guidance: float = 1.0
    mu: float = DEFAULT_MU
    min_count: int = MIN_COUNT
    fallback: str = "class"
    seed: int = 0
    batch_size: int = 50
    smoke: bool = False
    out_dir: str | None = None
    data_root: str | None = None
    segmenter: str | None = None  # a transformers segmentation folder, or one written by ToySegmenter; None: the toy one
    metric: str = "FD-toy"        # "FID" at real scale (pytorch-fid Inception; its weights must be present)
    dataset_options: dict = field(default_factory=dict)  # keywords of the dataset class (size, hold-out)
    eval_splits: tuple = ("val",)  # the evaluation maps and real references: these splits, concatenated

    @property
    def reports(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        return REPO_ROOT / "reports" / ("_smoke" if self.smoke else "") / self.profile

PROFILES = {
    "toy": Settings(profile="toy", dataset="toy-city"),
    # real scale: the paper's settings; paths come from `scpdiff reproduce --pipeline --data-root --segmenter`
    "cityscapes": Settings(profile="cityscapes", dataset="cityscapes", n_ref=2975, n_eval=500, guidance=4.0,
                           batch_size=8, metric="FID"),
    "ade20k": Settings(profile="ade20k", dataset="ade20k", n_ref=10000, n_eval=2000, guidance=7.5,
                       batch_size=8, metric="FID"),
    # real photographs on the CPU: CamVid at 192 x 256 (3:4, the native 360 x 480 scaled by 8/15), the
    # pretrained TAEF2 autoencoder and the models of zoo/camvid (`scpdiff train --profile camvid`). The last
    # 12 frames of the dusk sequence 0001TP are held out of every training and prior set (split "holdout").
    "camvid": Settings(profile="camvid", dataset="camvid", pipeline="zoo/camvid/pipeline", n_ref=355, n_eval=101,
                       batch_size=16, metric="FID", segmenter="zoo/camvid/segmenter",
                       dataset_options={"size": (192, 256), "holdout": CAMVID_DUSK_HOLDOUT}),
    # the daylight zoo fine-tuned on toy-city-gv (scp_core.training.toy.train_toy_gv)
    "toy-gv": Settings(profile="toy-gv", dataset="toy-city-gv", pipeline="zoo/toy-gv/pipeline"),
    # the same toy-gv stack with base UNet and ControlNet retrained under zero terminal SNR (notebook 09)
    "toy-gv-zero-snr": Settings(profile="toy-gv-zero-snr", dataset="toy-city-gv", pipeline="zoo/toy-gv-zero-snr/pipeline"),
}

SMOKE = dict(n_ref=64, n_eval=16, steps=4, batch_size=16)
# Table 1 on the toy profile runs both toy-city settings side by side (daylight and global variation).
COMPANIONS = {"toy": ("toy", "toy-gv")}

def comparison_profiles(profile: str) -> list[str]:
    """The settings notebook 03 compares for ``profile``: itself and its companions (toy: toy and toy-gv)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    return list(COMPANIONS.get(profile, (profile,)))

def settings(profile: str = "toy", smoke: bool | None = None, **overrides) -> Settings:
    """Settings of a profile; ``smoke=None`` reads ``SCP_SMOKE=1`` from the environment (nbval)."""
    if smoke is None:
        smoke = os.environ.get("SCP_SMOKE", "0") == "1"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    base = PROFILES[profile]
    # The environment names a real dataset and its models; the toy profiles generate their own data
    # and use the committed toy zoo, so it does not apply to them (a camvid root given to toy-city
    # would have it generate its images into that folder).
    env = {} if base.metric == "FD-toy" else {
        "pipeline": os.environ.get("SCP_PIPELINE"), "data_root": os.environ.get("SCP_DATA_ROOT"),
        "segmenter": os.environ.get("SCP_SEGMENTER")}
    s = replace(base, smoke=bool(smoke), **{k: v for k, v in {**env, **overrides}.items() if v is not None})
    if s.metric == "FID" and not s.pipeline:
        raise ValueError(f"profile {profile!r} is real scale: give the fine-tuned pipeline folder "
                         "(`scpdiff reproduce --profile ... --pipeline DIR --data-root DIR --segmenter DIR`, "
                         "or SCP_PIPELINE / SCP_DATA_ROOT / SCP_SEGMENTER)")
    if s.smoke:
        s = replace(s, **{k: min(getattr(s, k), v) for k, v in SMOKE.items()})
    return s
