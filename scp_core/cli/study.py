"""The ``scpdiff`` commands of the study: ``reproduce`` (the notebooks, into ``reports/<profile>/``), ``priors`` and
``sample`` (sharded across processes under ``accelerate launch``), all three on the profiles of the study's table
(:mod:`scp_core.study.settings`), with :func:`command_settings`, the settings ``priors`` and ``sample`` run with,
and the checks that refuse, before any notebook or model starts, a value the run would fail on."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from ..io import REPO_ROOT
from .args import LazyChoices, device_option, float_in, int_at_least, out_folder, seed


def _profile_option(parser, help: str) -> None:
    parser.add_argument("--profile", default="toy", metavar="PROFILE",
                        choices=LazyChoices("scp_core.data.profiles", "PROFILES"), help=help)


def _unknown_splits(dataset: str, splits, flag: str, holdout: bool = True) -> None:
    """A split ``dataset`` does not have, refused with the ones it has (``holdout``: the camvid profile's option,
    without which camvid has no hold-out)."""
    from ..data import dataset_splits  # torch: for the commands that read a dataset

    known = [s for s in dataset_splits(dataset) if holdout or s != "holdout"]
    unknown = [s for s in splits if s not in known]
    if unknown:
        raise ValueError(f"argument {flag}: {dataset} has no split {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(known)}")


def check_reproduce(a) -> None:
    """What the notebooks would fail on, refused before the first one starts and before anything is written: an
    unknown or toy-only notebook, evaluation splits the profile's datasets lack, a real-scale profile without its
    pipeline, a folder given that is not there, then what the batch reads on disk (:func:`scp_core.preflight.
    preflight`: the dataset root and the folders of its splits, pipeline, segmenter and weight files), each
    notebook's settings from the study's table."""
    from ..preflight import preflight
    from ..reproduce import batch_names
    from ..study.settings import COMPANIONS, PROFILES, REFERENCE_SPLIT, settings  # the study package: the models

    for flag in ("pipeline", "data_root", "segmenter"):
        if getattr(a, flag) and not os.path.isdir(getattr(a, flag)):
            raise ValueError(f"argument --{flag.replace('_', '-')}: {getattr(a, flag)} is not a folder; give the "
                             "folder itself")
    names = batch_names(a.profile, a.only, a.with_training)
    folders = {flag: os.path.abspath(getattr(a, flag)) if getattr(a, flag) else None
               for flag in ("pipeline", "data_root", "segmenter")}
    settings(a.profile, smoke=a.smoke, quick=a.quick, **folders)  # a real-scale profile without its pipeline
    profiles = COMPANIONS.get(a.profile, (a.profile,))
    if a.eval_splits:
        for profile in profiles:
            _unknown_splits(PROFILES[profile].dataset, a.eval_splits, "--eval-splits",
                            holdout="holdout" in PROFILES[profile].dataset_options)
    runs = [settings(p, smoke=a.smoke, quick=a.quick, notebook=n, eval_splits=a.eval_splits,
                     **(folders if p == a.profile else {})) for n in names for p in profiles]
    preflight([(s, (REFERENCE_SPLIT, *s.eval_splits)) for s in runs])


def _cmd_reproduce(a) -> int:
    check_reproduce(a)
    from ..reproduce import reproduce  # papermill, nbconvert and pandas: loaded for this command only
    from ..study.settings import scratch_folder

    for flag, var in (("pipeline", "SCP_PIPELINE"), ("data_root", "SCP_DATA_ROOT"), ("segmenter", "SCP_SEGMENTER")):
        if getattr(a, flag):  # the notebook kernels inherit these
            os.environ[var] = os.path.abspath(getattr(a, flag))

    run = reproduce(a.profile, only=a.only, smoke=a.smoke, with_training=a.with_training, out=a.out, jobs=a.jobs,
                    eval_splits=a.eval_splits, quick=a.quick)
    reports = Path(a.out or Path("reports") / scratch_folder(a.smoke, a.quick) / a.profile)
    failed = [n for n, r in run["notebooks"].items() if r["status"] != "ok"]
    if failed:
        print(f"scpdiff reproduce: error: {len(failed)} of {len(run['notebooks'])} notebooks failed "
              f"({', '.join(failed)}); {reports} is left as it was; this batch's index and notebooks: "
              f"{Path(run['failed_report']) / 'index.md'}", file=sys.stderr)
        return 1
    print(f"[scpdiff] report: {reports / 'index.md'}; all notebooks ran")
    return 0


def command_settings(a, command: str):
    """The settings and split ``scpdiff priors`` / ``sample`` run with: the profile's row and the command's
    entry of the study's table (:mod:`scp_core.study.settings`), then the flags given.

    A ``--dataset`` other than the profile's drops the profile's dataset options (keywords of that
    profile's dataset class); a pipeline folder from the table is a path in the repository. A split the
    dataset does not have is refused (``ValueError``) before anything is loaded.
    """
    from ..study.settings import REFERENCE_SPLIT, settings  # the study package loads the models

    if command == "priors":
        counts = {"n_ref": a.n, "min_count": a.min_count, "fallback": a.fallback}
    else:
        counts = {"n_eval": a.n, "batch_size": a.batch_size, "steps": a.steps, "guidance": a.guidance,
                  "eval_splits": a.split}
    s = settings(a.profile, smoke=False, quick=False, notebook=command, pipeline=a.pipeline, data_root=a.root,
                 seed=a.seed, **counts)
    if a.dataset and a.dataset != s.dataset:
        s = replace(s, dataset=a.dataset, dataset_options={})
    if a.pipeline is None and s.pipeline and not os.path.isabs(s.pipeline):
        s = replace(s, pipeline=os.path.relpath(REPO_ROOT / s.pipeline))
    splits = [a.split or REFERENCE_SPLIT] if command == "priors" else list(s.eval_splits)
    _unknown_splits(s.dataset, splits, "--split", holdout="holdout" in s.dataset_options)
    if command == "priors":
        return s, splits[0]
    if len(s.eval_splits) != 1:
        raise ValueError(f"scpdiff sample takes one split (--split); profile {a.profile!r} gives {list(s.eval_splits)}")
    return s, s.eval_splits[0]


def _cmd_priors(a) -> int:
    from ..distributed import build_priors_distributed  # accelerate and the models: loaded for this command only

    s, split = command_settings(a, "priors")
    build_priors_distributed(s.pipeline, s.dataset, s.data_root, split, s.n_ref, a.out, min_count=s.min_count,
                             fallback=s.fallback, seed=s.seed, device=a.device, dataset_options=s.dataset_options,
                             overwrite=a.overwrite, scale=s.scale)
    return 0


def _cmd_sample(a) -> int:
    from ..distributed import sample_distributed  # accelerate and the models: loaded for this command only

    s, split = command_settings(a, "sample")
    prior, mu = a.prior, a.mu
    if a.convention:  # the imported pipeline's recorded conventions fill what was not given
        from ..data.profiles import TOY_PIPELINE_DIR
        from ..pipeline_folder import CONFIG_NAME, read_config
        from ..release.conventions import recorded_conventions, sampling_choices

        folder = Path(s.pipeline) if s.pipeline else TOY_PIPELINE_DIR
        conv = recorded_conventions(read_config(folder / CONFIG_NAME).get("info"), a.convention, folder)
        c = sampling_choices(conv, prior, a.guidance, a.steps, mu)
        prior, mu, s = c["prior"], c["mu"], replace(s, guidance=c["guidance"], steps=c["steps"])
    sample_distributed(s.pipeline, s.dataset, s.data_root, split, s.n_eval, a.out, prior=prior, mu=mu,
                       steps=s.steps, guidance=s.guidance, seed=s.seed, batch_size=s.batch_size, device=a.device,
                       dataset_options=s.dataset_options, overwrite=a.overwrite, clamp=a.n is None, force=a.force,
                       scale=s.scale)
    return 0


def add_reproduce(sub) -> None:
    r = sub.add_parser("reproduce", help="run the study notebooks and render reports/<profile>/")
    _profile_option(r, "a profile of scp_core.data.profiles.PROFILES (toy, toy-gv, camvid, cityscapes, ...)")
    r.add_argument("--only", nargs="+", metavar="NAME", help="notebooks to run (e.g. 03_prior_comparison)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny counts; writes to reports/_smoke/<profile>")
    size.add_argument("--quick", action="store_true", help="a student's quick run: every notebook in minutes on a "
                      "2-core CPU (small counts, the real DDIM steps); writes to reports/_quick/<profile>")
    r.add_argument("--with-training", action="store_true", help="include 07_training")
    r.add_argument("--out", type=out_folder, help="report folder (default reports/<profile>)")
    r.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=2,
                   help="notebooks at once, an integer >= 1 (each single-threaded when > 1)")
    r.add_argument("--eval-splits", nargs="+", metavar="SPLIT",
                   help="evaluation splits of every notebook, concatenated (default: the table's, e.g. camvid: "
                        "val, and val + holdout for 08_global_factors)")
    r.add_argument("--pipeline", help="real scale: the fine-tuned SCP-Diff pipeline folder")
    r.add_argument("--data-root", help="real scale: the dataset root (default data/<dataset>)")
    r.add_argument("--segmenter", help="real scale: a transformers segmentation model folder for mIoU")
    r.set_defaults(fn=_cmd_reproduce)


def _study_options(s, split_help: str, n_help: str) -> None:
    """The flags ``priors`` and ``sample`` share; each left out takes the study's table value."""
    _profile_option(s, "the profile (scp_core.data.profiles) whose dataset, dataset options (CamVid's "
                       "hold-out), pipeline and counts apply (default: toy)")
    s.add_argument("--pipeline", default=None, help="pipeline folder (default: the profile's; toy: the toy zoo)")
    s.add_argument("--dataset", default=None,
                   help="dataset registry name (default: the profile's; another dataset drops the profile's "
                        "dataset options, e.g. CamVid's hold-out: use --profile camvid for the study's frames)")
    s.add_argument("--root", help="dataset root (default: the profile's, SCP_DATA_ROOT at real scale)")
    s.add_argument("--split", default=None, help=split_help)
    s.add_argument("--n", type=int_at_least(1, "--n"), default=None, help=n_help + "; an integer >= 1")
    s.add_argument("--out", required=True, type=out_folder,
                   help="output folder (no default), written as a whole: built in a temporary folder beside it and "
                        "renamed into place; a second run into the same folder at the same time is refused")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out holding an earlier run of this command, as a whole "
                        "(default: refuse it)")
    s.add_argument("--seed", type=seed, default=None, help="base seed in [0, 2**63 - 1] (default: the profile's)")
    device_option(s)


def add_priors(sub) -> None:
    s = sub.add_parser("priors", help="build spatial / categorical / joint priors (sharded)")
    _study_options(s, "the reference split (default: the study's, train)",
                   "reference images (default: the profile's n_ref; at most the split's size)")
    s.add_argument("--min-count", type=int_at_least(1, "--min-count"), default=None,
                   help="joint prior fallback threshold, an integer >= 1 (default: the profile's)")
    s.add_argument("--fallback", default=None, choices=["class", "spatial"],
                   help="joint prior fallback (default: the profile's)")
    s.set_defaults(fn=_cmd_priors)


def add_sample(sub) -> None:
    s = sub.add_parser("sample", help="sample label maps of a dataset with a prior (sharded)")
    _study_options(s, "the split of the label maps (default: the profile's evaluation split)",
                   "label maps, the first n of the split (default: the table's for sample)")
    s.add_argument("--prior", help="prior file, 'normal' (default: plain ControlNet, mu = 1) or 'authors-normal' "
                   "(the authors' N(0, I) baseline: 19 of 20 steps, from t = 901)")
    s.add_argument("--convention", default=None, choices=["authors", "ours"],
                   help="an imported pipeline's recorded sampling conventions (CFG, steps, mu; under 'authors' the "
                        "normal prior is their baseline); flags given explicitly win (default: none, the table's)")
    s.add_argument("--batch-size", type=int_at_least(1, "--batch-size"), default=None,
                   help="images per batch, an integer >= 1 (default: the table's for sample)")
    s.add_argument("--mu", type=float_in(0, 1, "--mu", low_open=True), default=None,
                   help="step fraction in (0, 1] (default: 1 for the normal prior, i.e. plain ControlNet; else the "
                        "priors' mu)")
    s.add_argument("--steps", type=int_at_least(1, "--steps"), default=None,
                   help="DDIM steps, an integer >= 1 (default: the profile's)")
    s.add_argument("--guidance", type=float_in(1, math.inf, "--guidance"), default=None,
                   help="classifier-free guidance scale, a finite number >= 1; 1 runs no unconditional branch "
                        "(plain ControlNet sampling), so values below 1 would sample as 1 and are refused "
                        "(default: the profile's)")
    s.add_argument("--force", action="store_true",
                   help="sample with a prior built for another autoencoder (scale factor, image size or "
                        "autoencoder files differ from the pipeline's; default: refuse it)")
    s.set_defaults(fn=_cmd_sample)
