"""The study's settings: one table that the notebooks and ``scpdiff`` read.

The table has five parts, each value written once:

* :data:`PROFILES` -- each profile's defaults (a :class:`Settings`): its row of ``data.profiles`` (dataset,
  scale, pipeline and segmenter folders, dataset options such as CamVid's hold-out) and the study's knobs
  (guidance, batch size, metric, evaluation splits, counts);
* :data:`NOTEBOOKS` -- each notebook's (and each command's) own counts, the same on every profile;
* :data:`PROFILE_PARAMS` -- where a profile departs from them (CamVid's counts fit a 2-core CPU);
* :data:`SMOKE` / :data:`SMOKE_PARAMS` -- the tiny counts of smoke runs (the test suite's);
* :data:`QUICK` / :data:`QUICK_PARAMS` -- a student's quick run: the real DDIM steps, small counts, minutes.

:func:`settings` gives a profile's :class:`Settings` (for a notebook or command, with its counts);
:func:`parameters` gives a notebook's counts that are not settings (``mus``, ``k``, ...). A notebook
parameter or command-line flag left at ``None`` means "the table's value".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..data.profiles import PROFILES as PROFILE_TABLE
from ..data.profiles import data_root
from ..io import REPO_ROOT
from ..priors import MIN_COUNT
from ..sampling import DEFAULT_MU

PRIOR_KINDS = ("normal", "spatial", "categorical", "joint")
REFERENCE_SPLIT = "train"  # the split the priors' reference images come from


@dataclass(kw_only=True)
class Settings:
    """One run's knobs. ``smoke`` shrinks every count so a notebook runs in seconds; ``quick`` to a
    student's quick run (minutes, real step count); the two exclude each other.

    Attributes:
        profile: a key of :data:`PROFILES` (and of ``data.profiles.PROFILES``, where its dataset, scale and
            folders come from).
        dataset: dataset registry name; ``pipeline``: pipeline folder, relative to the repository (``None``:
            given at run time).
        scale: ``"toy"`` or ``"real"`` (``data.profiles``): how the pipeline loads, which data the
            environment may name.
        trained: a folder of trained modules (UNet, ControlNet) replacing the pipeline folder's own: the
            daylight toy ControlNet from another training seed (``zoo/toy-seeds/seed<N>``).
        n_ref: reference images for the priors (at most the training split's size).
        n_eval: evaluation maps (the first ``n_eval`` of ``eval_splits``, concatenated).
        steps, guidance, mu: DDIM steps, CFG scale, the default mu for the priors.
        min_count, fallback: joint prior fallback rule.
        seed: base seed (sample ``i`` uses ``seed + i``).
        out_dir: where reports go (default ``reports/<profile>``; smoke runs go to
            ``reports/_smoke/<profile>``, quick runs to ``reports/_quick/<profile>``, so they never
            overwrite reference results).
        data_root: the dataset's folder (``None``: the dataset's default).
        segmenter: a transformers segmentation folder, or one written by ToySegmenter (``None``: the toy one).
        metric: ``FD-toy`` on the toy scale, ``FID`` at real scale (pytorch-fid Inception; its weights must be
            present).
        dataset_options: keywords of the dataset class (size, CamVid's hold-out).
        eval_splits: the splits of the evaluation maps and real references, concatenated.
    """

    profile: str
    dataset: str
    scale: str
    pipeline: str | None = None
    trained: str | None = None
    n_ref: int
    n_eval: int
    steps: int = 20
    guidance: float = 1.0
    mu: float = DEFAULT_MU
    min_count: int = MIN_COUNT
    fallback: str = "class"
    seed: int = 0
    batch_size: int
    smoke: bool = False
    quick: bool = False
    out_dir: str | None = None
    data_root: str | None = None
    segmenter: str | None = None
    metric: str
    dataset_options: dict = field(default_factory=dict)
    eval_splits: tuple = ("val",)

    @property
    def is_toy(self) -> bool:
        return self.scale == "toy"

    @property
    def reports(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        return REPO_ROOT / "reports" / scratch_folder(self.smoke, self.quick) / self.profile

    @property
    def priors_dir(self) -> Path:
        """Where this setting's prior files and reference statistics go: ``<reports>/priors/<profile>``.

        One folder per profile, so that the companion settings of one run (toy and toy-gv in notebooks
        03 and 08, which share the run's ``out_dir``) never overwrite each other's files.
        """
        return self.reports / "priors" / self.profile


FIELDS = frozenset(f.name for f in fields(Settings))
N_REF = 2000  # reference images the prior-building notebooks ask for: every training image where a split has fewer

def _profile_settings(name: str, **knobs) -> Settings:
    """The study's row of a profile: the table's dataset, scale, folders and options (``data.profiles``), the
    metric its scale is scored with, and the study's own knobs."""
    p = PROFILE_TABLE[name]
    return Settings(profile=name, dataset=p.dataset, scale=p.scale, pipeline=p.pipeline, segmenter=p.segmenter,
                    dataset_options=dict(p.dataset_options), metric="FD-toy" if p.is_toy else "FID", **knobs)


# n_eval: the evaluation count of a run that names none of its own. Real scale: the paper's guidance, CamVid's
# counts its 355 training and 101 validation frames (the hold-out excluded); pipeline, data and segmenter of
# cityscapes and ade20k come from `scpdiff reproduce --pipeline --data-root --segmenter`.
_TOY = dict(n_ref=N_REF, n_eval=500, batch_size=50)
PROFILES = {
    **{name: _profile_settings(name, **_TOY) for name in ("toy", "toy-gv", "toy-gv-zero-snr", "toy-locked")},
    "cityscapes": _profile_settings("cityscapes", n_ref=2975, n_eval=500, guidance=4.0, batch_size=8),
    "ade20k": _profile_settings("ade20k", n_ref=10000, n_eval=2000, guidance=7.5, batch_size=8),
    **{name: _profile_settings(name, n_ref=355, n_eval=101, batch_size=16) for name in ("camvid", "camvid-sd")},
}
assert set(PROFILES) == set(PROFILE_TABLE), "every profile of data.profiles has the study's knobs"

# Each notebook's counts on every profile, and the commands' (`scpdiff priors`, `scpdiff sample`).
# Settings fields (n_ref, n_eval, eval_splits, ...) go into the notebook's Settings; the others are its own.
NOTEBOOKS = {
    "00_quickstart": {"n_ref": 500, "n_eval": 1},
    "01_mismatch_study": {"n_eval": 200, "mus": [0.2, 0.4, 0.6, 0.8, 1.0]},
    "02_noise_priors": {"n_ref": N_REF, "n_small": 64},  # n_small: images for the brute-force definitions
    "03_prior_comparison": {"n_ref": N_REF, "n_eval": 300},
    "04_mu_sweep": {"n_ref": N_REF, "n_eval": 120, "mus": [0.5, 0.7, 0.8, 0.9, 1.0],
                    "kinds": ["joint", "categorical", "spatial"]},
    "05_diversity": {"n_ref": N_REF, "k": 8, "n_maps": 24},  # k samples of each of n_maps maps
    "06_comparison_table": {},
    "07_training": {"steps_per_stage": 60, "n_train": 1000, "psnr_images": 256},
    "08_global_factors": {"n_ref": N_REF, "n_eval": 300, "k": 4, "n_maps": 8},
    "09_zero_snr": {"n_ref": N_REF, "n_eval": 300, "oracle_stds": [1, 2, 4, 8, 16, 32]},
    "10_prior_transfer": {"n_ref": N_REF, "n_eval": 300},
    "11_training_seeds": {"n_ref": N_REF, "n_eval": 300},  # notebook 03's daylight Table 1 (its images, cached)
    # k samples of each map (seed-major), the A/A arm k more; the priors at mu and at the other stack's share
    "12_schedule_control": {"n_ref": N_REF, "n_eval": 100, "k": 4},
    "priors": {},
    "sample": {"n_eval": 100, "batch_size": 32},
}

# Where a profile departs from NOTEBOOKS; `scpdiff reproduce` also passes these to the notebooks and
# records them in runs.json and index.md. CamVid fits the 2-core CPU's 45-minute budget: Table 1 and Fig. 3 (on
# both CamVid stacks) on all 101 validation maps, Fig. 8 on the first 50 (with mu = 0.7, where the zero-SNR stack's
# start keeps the share of the prior SD's schedule keeps at mu = 0.8: sqrt(alpha_bar) = 0.236); notebook 08
# evaluates on val (daylight, sequence 0016E5) plus the 12 held-out dusk frames of 0001TP: 113 maps. Values are
# JSON (lists, not tuples).
PROFILE_PARAMS = {
    "camvid": {
        "01_mismatch_study": {"n_eval": 101, "mus": [0.2, 0.4, 0.6, 0.8, 1.0]},
        "04_mu_sweep": {"n_eval": 50, "mus": [0.6, 0.7, 0.8, 1.0], "kinds": ["joint", "categorical"]},
        "05_diversity": {"k": 4, "n_maps": 16},
        "08_global_factors": {"n_eval": 113, "eval_splits": ["val", "holdout"]},
        "12_schedule_control": {"n_eval": 101},
    },
}
PROFILE_PARAMS["camvid-sd"] = PROFILE_PARAMS["camvid"]  # the same frames and counts, the other schedule's stack

# Smoke runs: SMOKE caps every Settings count; SMOKE_PARAMS replaces a notebook's own counts.
SMOKE = dict(n_ref=64, n_eval=16, steps=4, batch_size=16)
SMOKE_PARAMS = {
    "01_mismatch_study": {"mus": [0.8, 1.0]},
    "04_mu_sweep": {"mus": [0.8, 1.0]},
    "05_diversity": {"k": 3, "n_maps": 2},
    "07_training": {"steps_per_stage": 3, "n_train": 64, "psnr_images": 16},
    "08_global_factors": {"k": 2, "n_maps": 4},
    "12_schedule_control": {"k": 2},
}

# Quick runs (`scpdiff reproduce --quick`, or SCP_QUICK=1): a student's run of every notebook in minutes on a
# 2-core CPU, between smoke (seconds, useless pictures) and the reference (an hour). QUICK caps every Settings
# count but keeps the real DDIM steps, so the pictures look right; QUICK_PARAMS replaces a notebook's own counts.
QUICK = dict(n_ref=256, n_eval=48)
QUICK_PARAMS = {
    "01_mismatch_study": {"mus": [0.6, 0.8, 1.0]},
    "02_noise_priors": {"n_small": 32},
    "04_mu_sweep": {"mus": [0.6, 0.8, 1.0], "kinds": ["joint", "categorical"]},
    "05_diversity": {"k": 4, "n_maps": 6},
    "07_training": {"steps_per_stage": 20, "n_train": 256},
    "08_global_factors": {"k": 3, "n_maps": 4},
    "09_zero_snr": {"oracle_stds": [1, 4, 16]},
    "12_schedule_control": {"k": 2},
}

# Table 1 on the toy profile runs both toy-city settings side by side (daylight and global variation).
COMPANIONS = {"toy": ("toy", "toy-gv")}


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")


def comparison_profiles(profile: str) -> list[str]:
    """The settings notebook 03 compares for ``profile``: itself and its companions (toy: toy and toy-gv)."""
    _check_profile(profile)
    return list(COMPANIONS.get(profile, (profile,)))


def _smoke(smoke: bool | None) -> bool:
    """``smoke=None`` reads ``SCP_SMOKE=1`` from the environment (nbval)."""
    return os.environ.get("SCP_SMOKE", "0") == "1" if smoke is None else bool(smoke)


def _quick(quick: bool | None) -> bool:
    """``quick=None`` reads ``SCP_QUICK=1`` from the environment (how `scpdiff reproduce --quick` reaches the
    notebooks' kernels; ``SCP_QUICK=1 jupyter lab`` gives the same counts by hand)."""
    return os.environ.get("SCP_QUICK", "0") == "1" if quick is None else bool(quick)


def _modes(smoke: bool | None, quick: bool | None) -> tuple[bool, bool]:
    """``(smoke, quick)`` resolved; both at once is refused."""
    smoke, quick = _smoke(smoke), _quick(quick)
    if smoke and quick:
        raise ValueError("smoke and quick runs exclude each other: smoke runs take seconds-sized counts, quick "
                         "runs a student's small counts; ask for one (--smoke or --quick; SCP_SMOKE / SCP_QUICK)")
    return smoke, quick


def scratch_folder(smoke: bool, quick: bool = False) -> str:
    """The folder under ``reports/`` of a run's reports: ``_smoke``, ``_quick``, or ``""`` (the reference)."""
    return "_smoke" if smoke else "_quick" if quick else ""


def quick_counts() -> dict:
    """What a quick run changes: the capped settings (every notebook's, at most) and each notebook's own counts."""
    return {"every notebook, at most": dict(QUICK), **QUICK_PARAMS}


def parameters(notebook: str, profile: str = "toy", smoke: bool | None = None, quick: bool | None = None,
               **given) -> dict:
    """A notebook's (or command's) parameters on a profile: each given value, else the table's.

    Returns every parameter the table names for ``notebook`` and every one given. A settings field
    (``steps``, ``n_eval``, ...) comes at its full value (:func:`settings` caps it in smoke and quick
    runs); the notebook's own counts (``mus``, ``k``, ...) take their :data:`SMOKE_PARAMS` values in smoke
    runs and their :data:`QUICK_PARAMS` values in quick runs (``quick=None`` reads ``SCP_QUICK=1``).
    """
    _check_profile(profile)
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook or command {notebook!r}; choose from {sorted(NOTEBOOKS)}")
    table = {**NOTEBOOKS[notebook], **PROFILE_PARAMS.get(profile, {}).get(notebook, {})}
    unknown = set(given) - set(table) - FIELDS
    if unknown:
        raise ValueError(f"{notebook} has no parameter(s) {sorted(unknown)}; it takes {sorted(set(table) | FIELDS)}")
    names = list(table) + [k for k in given if k not in table]
    out = {k: given[k] if given.get(k) is not None else table.get(k, getattr(PROFILES[profile], k, None))
           for k in names}
    smoke, quick = _modes(smoke, quick)
    if smoke or quick:
        out.update({k: v for k, v in (SMOKE_PARAMS if smoke else QUICK_PARAMS).get(notebook, {}).items() if k in out})
    return out


def settings(profile: str = "toy", smoke: bool | None = None, notebook: str | None = None,
             quick: bool | None = None, **overrides) -> Settings:
    """Settings of a profile: its row of :data:`PROFILES`, ``notebook``'s counts, then ``overrides``.

    ``None`` overrides mean "the table's value"; ``smoke=None`` reads ``SCP_SMOKE=1`` from the environment,
    ``quick=None`` ``SCP_QUICK=1``. Smoke runs cap the counts at :data:`SMOKE`, quick runs at :data:`QUICK`.
    """
    _check_profile(profile)
    unknown = set(overrides) - FIELDS
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; Settings has {sorted(FIELDS)}")
    base = PROFILES[profile]
    smoke, quick = _modes(smoke, quick)
    table = {k: v for k, v in parameters(notebook, profile, smoke=False, quick=False).items()
             if k in FIELDS} if notebook else {}
    # The environment names a real dataset and its models; the toy profiles generate their own data
    # and use the committed toy zoo, so it does not apply to them (a camvid root given to toy-city
    # would have it generate its images into that folder).
    env = {} if base.is_toy else {
        "pipeline": os.environ.get("SCP_PIPELINE"), "data_root": data_root(profile),
        "segmenter": os.environ.get("SCP_SEGMENTER")}
    given = {k: v for d in (table, env, overrides) for k, v in d.items() if v is not None}
    if "eval_splits" in given:  # a notebook parameter or flag may give a list, or one split's name
        splits = given["eval_splits"]
        given["eval_splits"] = (splits,) if isinstance(splits, str) else tuple(splits)
    s = replace(base, smoke=smoke, quick=quick, **given)
    if not s.eval_splits:
        raise ValueError("eval_splits is empty: name at least one split")
    if not s.is_toy and not s.pipeline:
        raise ValueError(f"profile {profile!r} is real scale: give the fine-tuned pipeline folder "
                         "(`scpdiff reproduce --profile ... --pipeline DIR --data-root DIR --segmenter DIR`, "
                         "or SCP_PIPELINE / SCP_DATA_ROOT / SCP_SEGMENTER)")
    if s.smoke or s.quick:
        s = replace(s, **{k: min(getattr(s, k), v) for k, v in (SMOKE if s.smoke else QUICK).items()})
    return s
