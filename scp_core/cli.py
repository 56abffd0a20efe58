"""``scpdiff``: the study's command line.

    scpdiff reproduce --profile toy [--only NAME ...] [--smoke | --quick] [--with-training] [--eval-splits SPLIT ...]
    scpdiff train --profile toy [--small] [--resume latest]
    scpdiff finetune --base DIR --dataset cityscapes --root data/cityscapes --out DIR [...]
    scpdiff priors --profile toy --out DIR [--n 2000]
    scpdiff sample --profile toy --prior FILE --out DIR [--split val] [--n 100]
    scpdiff compose --base DIR --controlnet DIR --dataset ade20k --control ade20k --out DIR
    scpdiff import-release --dataset cityscapes [--checkpoint F --tokenizer D] [--stat-dir D --stat-name N] --out DIR

``priors``, ``sample`` and the notebooks that ``reproduce`` runs read their dataset, dataset options
(CamVid's hold-out), pipeline, splits and counts from one table, :mod:`scp_core.study.settings`; a flag
left out takes the table's value, so ``scpdiff priors --profile camvid`` builds its priors from the
study's reference set. ``priors`` and ``sample`` shard their work across processes under
``accelerate launch``; ``finetune`` splits every global batch across them. ``--device auto|cpu|cuda``
picks where each runs (``SCP_DEVICE`` sets the default; ``SCP_DTYPE`` the sampling dtype).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from . import _tv_compat  # noqa: F401
from .cli_args import _float_in, _int_at_least, _out_folder, _seed
from .cli_outside import _add_compose, _add_import_release
from .io import REPO_ROOT

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default: in the help's own words where it says "default", else appended."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


def _cmd_reproduce(a) -> int:
    from .reproduce import reproduce  # papermill, nbconvert and pandas: loaded for this command only

    for flag, var in (("pipeline", "SCP_PIPELINE"), ("data_root", "SCP_DATA_ROOT"), ("segmenter", "SCP_SEGMENTER")):
        if getattr(a, flag):  # the notebook kernels inherit these
            os.environ[var] = os.path.abspath(getattr(a, flag))

    run = reproduce(a.profile, only=a.only, smoke=a.smoke, with_training=a.with_training, out=a.out, jobs=a.jobs,
                    eval_splits=a.eval_splits, quick=a.quick)
    failed = [n for n, r in run["notebooks"].items() if r["status"] != "ok"]
    scratch = "_smoke/" if a.smoke else "_quick/" if a.quick else ""
    print(f"[scpdiff] report: {a.out or 'reports/' + scratch + a.profile}/index.md"
          + (f"; FAILED: {', '.join(failed)}" if failed else "; all notebooks ran"))
    return 1 if failed else 0


def _cmd_train(a) -> int:
    # the training stacks load diffusers and the models: for this command only
    from .training.recipes import RECIPES, TOY_SMALL, recipe_for
    from .training.toy import (GV_PIPELINE_DIR, GV_ZERO_SNR_PIPELINE_DIR, PIPELINE_DIR, RUNS, runs_dir, train_toy_gv,
                               train_toy_locked, train_toy_seed, train_toy_stack)

    if a.schedule != "sd" and a.profile not in ("toy", "toy-gv"):
        print(f"scpdiff train: --schedule {a.schedule} is an experiment of the toy profiles (toy, toy-gv)",
              file=sys.stderr)
        return 2
    if a.profile == "toy-gv":
        out = a.out or (GV_PIPELINE_DIR if a.schedule == "sd" else GV_ZERO_SNR_PIPELINE_DIR)
        facts = train_toy_gv(out=out, resume=a.resume, schedule=a.schedule, base_work=runs_dir("toy", a.schedule),
                             vae_work=RUNS, work=runs_dir("toy-gv", a.schedule))
        print(json.dumps(facts, indent=2))
        return 0
    if a.profile == "toy-seed":  # the daylight ControlNet stage again, another training seed
        print(json.dumps(train_toy_seed(a.seed, **({"out": a.out} if a.out else {}), resume=a.resume), indent=2))
        return 0
    if a.profile == "toy-locked":
        print(json.dumps(train_toy_locked(**({"out": a.out} if a.out else {}), resume=a.resume), indent=2))
        return 0
    if a.profile in RECIPES:  # real images: base UNet, ControlNet and segmenter on the pretrained TAEF2
        from .training.camvid import rewrite_report, train_stack, write_training_pack  # also loads the study

        small = REPO_ROOT / "runs" / f"{a.profile}-small"
        gpu = a.device == "cuda"  # the one-GPU recipe (GPU_RECIPES): wider networks, bf16, EMA, a time budget
        recipe = recipe_for(a.profile, small=a.small, gpu=gpu)
        if a.write_pack:
            print(write_training_pack(a.write_pack, a.profile, data_root=a.data_root,
                                      work=small if a.small else None, recipe=recipe, limit=8 if a.small else None))
            return 0
        if a.report_only:
            print(rewrite_report(a.profile, out=a.out or (small / "zoo" if a.small else None),
                                 work=small if a.small else None, data_root=a.data_root, recipe=recipe))
            return 0
        facts = train_stack(a.profile, out=a.out or (small / "zoo" if a.small else None),
                            work=a.work or (small if a.small else None), data_root=a.data_root, resume=a.resume,
                            recipe=recipe, limit=8 if a.small else None,
                            device=None if a.device == "auto" else a.device, pack=a.pack)
        print(json.dumps(facts, indent=2, default=str))
        return 0
    if a.profile != "toy":
        print("scpdiff train: the toy profiles (toy, toy-gv) and camvid train here; for SD 2.1 use `scpdiff finetune`",
              file=sys.stderr)
        return 2

    # another schedule shares the committed stack's VAE (runs/toy): by default it trains UNet and ControlNet only
    default_stages = ("vae", "unet", "controlnet") if a.schedule == "sd" else ("unet", "controlnet")
    stages = tuple(a.stage) if a.stage else default_stages
    name = "toy-small" if a.small else "toy"
    work = runs_dir(name, a.schedule)
    default_out = PIPELINE_DIR if (a.schedule == "sd" and not a.small) else work / "pipeline"
    facts = train_toy_stack(TOY_SMALL if a.small else None, out=a.out or default_out, resume=a.resume, stages=stages,
                            work=work, report=not a.small, schedule=a.schedule, vae_work=runs_dir(name))
    print(json.dumps(facts, indent=2))
    return 0


def _cmd_finetune(a) -> int:
    import torch

    from .data import get_dataset
    from .models import load_sd_components
    from .pipeline import SCPDiffPipeline
    from .training.finetune import finetune_controlnet  # accelerate and diffusers: for this command only
    from .training.loop import TrainConfig, make_accelerator

    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, checkpoint_every=a.checkpoint_every,
                      mixed_precision=a.mixed_precision, gradient_checkpointing=a.gradient_checkpointing, seed=a.seed)
    # the accelerator first: each process loads the models straight onto its own device, as float32 weights
    acc = make_accelerator(cfg.mixed_precision, a.device)
    pipe = SCPDiffPipeline.from_pretrained(a.pipeline, device=acc.device, dtype=torch.float32) if a.pipeline else None
    size = tuple(a.size) if a.size else (pipe.image_size if pipe is not None else None)
    ds = get_dataset(a.dataset, root=a.root, split="train", **({"size": size} if size else {}))
    if pipe is None:
        comps = load_sd_components(a.base, controlnet=a.controlnet, prompt=ds.prompt, device=acc.device,
                                   dtype=torch.float32)
        pipe = SCPDiffPipeline.from_components(comps, num_classes=ds.num_classes, palette=ds.palette,
                                               image_size=ds.size, ignore_index=ds.ignore_index,
                                               info={"dataset": a.dataset, "prompt": ds.prompt})
    elif tuple(ds.size) != tuple(pipe.image_size):
        raise ValueError(f"--size {ds.size} differs from the pipeline's image size {pipe.image_size}; "
                         "leave --size out to continue at the pipeline's size")
    r = finetune_controlnet(pipe, ds, cfg, a.work, resume=a.resume, unlock=not a.locked, save_to=a.out,
                            accelerator=acc)
    print(json.dumps({k: r[k] for k in ("steps", "wall_s", "final_loss")}))
    return 0


def command_settings(a, command: str):
    """The settings and split ``scpdiff priors`` / ``sample`` run with: the profile's row and the command's
    entry of the study's table (:mod:`scp_core.study.settings`), then the flags given.

    A ``--dataset`` other than the profile's drops the profile's dataset options (keywords of that
    profile's dataset class); a pipeline folder from the table is a path in the repository.
    """
    from .study.settings import REFERENCE_SPLIT, settings  # the study package loads the models

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
    if command == "priors":
        return s, a.split or REFERENCE_SPLIT
    if len(s.eval_splits) != 1:
        raise ValueError(f"scpdiff sample takes one split (--split); profile {a.profile!r} gives {list(s.eval_splits)}")
    return s, s.eval_splits[0]


def _cmd_priors(a) -> int:
    from .distributed import build_priors_distributed  # accelerate and the models: loaded for this command only

    s, split = command_settings(a, "priors")
    build_priors_distributed(s.pipeline, s.dataset, s.data_root, split, s.n_ref, a.out, min_count=s.min_count,
                             fallback=s.fallback, seed=s.seed, device=a.device, dataset_options=s.dataset_options,
                             overwrite=a.overwrite)
    return 0


def _cmd_sample(a) -> int:
    from .distributed import sample_distributed  # accelerate and the models: loaded for this command only

    s, split = command_settings(a, "sample")
    prior, mu = a.prior, a.mu
    if a.convention:  # the imported pipeline's recorded conventions fill what was not given
        from .pipeline import TOY_PIPELINE_DIR
        from .pipeline_folder import CONFIG_NAME, read_config
        from .release.conventions import recorded_conventions, sampling_choices

        folder = Path(s.pipeline) if s.pipeline else TOY_PIPELINE_DIR
        conv = recorded_conventions(read_config(folder / CONFIG_NAME).get("info"), a.convention, folder)
        c = sampling_choices(conv, prior, a.guidance, a.steps, mu)
        prior, mu, s = c["prior"], c["mu"], replace(s, guidance=c["guidance"], steps=c["steps"])
    sample_distributed(s.pipeline, s.dataset, s.data_root, split, s.n_eval, a.out, prior=prior, mu=mu,
                       steps=s.steps, guidance=s.guidance, seed=s.seed, batch_size=s.batch_size, device=a.device,
                       dataset_options=s.dataset_options, overwrite=a.overwrite, clamp=a.n is None, force=a.force)
    return 0


def _device_option(parser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (default: SCP_DEVICE if set, else this process's GPU where there is one, "
                             "else the CPU), cpu or cuda")


def _add_reproduce(sub) -> None:
    r = sub.add_parser("reproduce", help="run the study notebooks and render reports/<profile>/")
    r.add_argument("--profile", default="toy", help="a profile of scp_core.study.settings.PROFILES")
    r.add_argument("--only", nargs="+", metavar="NAME", help="notebooks to run (e.g. 03_prior_comparison)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny counts; writes to reports/_smoke/<profile>")
    size.add_argument("--quick", action="store_true", help="a student's quick run: every notebook in minutes on a "
                      "2-core CPU (small counts, the real DDIM steps); writes to reports/_quick/<profile>")
    r.add_argument("--with-training", action="store_true", help="include 07_training")
    r.add_argument("--out", help="report folder (default reports/<profile>)")
    r.add_argument("--jobs", type=int, default=2, help="notebooks at once (each single-threaded when > 1)")
    r.add_argument("--eval-splits", nargs="+", metavar="SPLIT",
                   help="evaluation splits of every notebook, concatenated (default: the table's, e.g. camvid: "
                        "val, and val + holdout for 08_global_factors)")
    r.add_argument("--pipeline", help="real scale: the fine-tuned SCP-Diff pipeline folder")
    r.add_argument("--data-root", help="real scale: the dataset root (default data/<dataset>)")
    r.add_argument("--segmenter", help="real scale: a transformers segmentation model folder for mIoU")
    r.set_defaults(fn=_cmd_reproduce)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train the toy stack from scratch (VAE, base UNet, ControlNet); "
                       "--profile toy-gv fine-tunes the global-variation variant from it, --profile toy-locked a "
                       "daylight ControlNet with the UNet frozen whole; --profile camvid "
                       "trains base UNet, ControlNet and segmenter on CamVid with the pretrained TAEF2")
    t.add_argument("--profile", default="toy", choices=["toy", "toy-gv", "toy-locked", "toy-seed", "camvid"],
                   help="the stack to train (toy-seed: zoo/toy's ControlNet stage with training seed --seed)")
    t.add_argument("--seed", type=_int_at_least(1, "--seed"), default=1,
                   help="toy-seed: the training seed (zoo/toy is seed 0), into zoo/toy-seeds/seed<N>")
    t.add_argument("--small", action="store_true", help="a few-minute run into runs/<profile>-small")
    t.add_argument("--data-root", help="camvid: the dataset root (default SCP_DATA_ROOT or data/camvid)")
    t.add_argument("--report-only", action="store_true",
                   help="camvid: write REPORT.md again from a finished run (and evaluate one trained from a pack)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="camvid: where the diffusion stages train; cuda takes the one-GPU recipe (GPU_RECIPES)")
    t.add_argument("--write-pack", default=None, metavar="FILE",
                   help="camvid: write the training pack (latents and label maps, for a machine without the "
                        "frames) and stop (default: none)")
    t.add_argument("--pack", default=None, metavar="FILE",
                   help="camvid: train from a training pack instead of the dataset (default: the dataset)")
    t.add_argument("--work", default=None, help="camvid: checkpoints and logs (default runs/camvid)")
    t.add_argument("--resume", choices=["latest"], help="continue each stage from its newest checkpoint")
    t.add_argument("--stage", nargs="+", choices=["vae", "unet", "controlnet"],
                   help="toy: the stages to (re)train, the others are read from runs/toy; without 'controlnet' "
                        "the run stops after the base UNet (then `--stage controlnet` and `--profile toy-gv` "
                        "can train the two ControlNets side by side)")
    t.add_argument("--schedule", default="sd", choices=["sd", "zero-snr"],
                   help="toy, toy-gv: the noise schedule of the UNet and ControlNet stages; zero-snr (Lin et al. 2024: "
                        "alpha_bar(T) = 0, v-prediction, trailing DDIM steps) trains base UNet and ControlNet into "
                        "runs/<profile>-zero-snr on the VAE of runs/toy; toy-gv then writes zoo/toy-gv-zero-snr")
    t.add_argument("--out", default=None,
                   help="toy: pipeline folder (default zoo/toy/pipeline; REPORT.md, report/ and training_facts.json "
                        "go beside it, in its parent folder); camvid: the zoo folder (default zoo/camvid)")
    t.set_defaults(fn=_cmd_train)


def _add_finetune(sub) -> None:
    f = sub.add_parser("finetune", help="fine-tune a ControlNet on label maps (SD 2.1 or a pipeline folder)")
    f.add_argument("--pipeline", help="an SCP-Diff pipeline folder to continue from")
    f.add_argument("--base", default="stabilityai/stable-diffusion-2-1-base", help="SD 2.1 base folder or hub id")
    f.add_argument("--controlnet", help="a ControlNet folder to start from (default: a copy of the UNet encoder)")
    f.add_argument("--dataset", required=True, help="dataset registry name (e.g. cityscapes)")
    f.add_argument("--root", help="dataset root (default: the dataset's, data/<dataset>)")
    f.add_argument("--out", required=True, help="where the fine-tuned pipeline is written")
    f.add_argument("--work", default="runs/finetune", help="checkpoints and loss log")
    f.add_argument("--steps", type=_int_at_least(1, "--steps"), default=10000, help="optimiser steps")
    f.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"), default=16,
                   help="global batch (split across processes)")
    f.add_argument("--lr", type=_float_in(0, math.inf, "--lr", low_open=True), default=1e-5, help="learning rate")
    f.add_argument("--checkpoint-every", type=_int_at_least(1, "--checkpoint-every"), default=1000,
                   help="steps between checkpoints")
    f.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="autocast dtype")
    f.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    f.add_argument("--locked", action="store_true", help="keep the UNet decoder frozen (default: unlocked)")
    f.add_argument("--resume", help="'latest' or a checkpoint folder")
    f.add_argument("--seed", type=_seed, default=0, help="seed of the run, in [0, 2**63 - 1]")
    f.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="training image size (default: the dataset's paper size, or the --pipeline's)")
    _device_option(f)
    f.set_defaults(fn=_cmd_finetune)


def _study_options(s, split_help: str, n_help: str) -> None:
    """The flags ``priors`` and ``sample`` share; each left out takes the study's table value."""
    s.add_argument("--profile", default="toy",
                   help="the row of scp_core.study.settings.PROFILES whose dataset, dataset options (CamVid's "
                        "hold-out), pipeline and counts apply (default: toy)")
    s.add_argument("--pipeline", default=None, help="pipeline folder (default: the profile's; toy: the toy zoo)")
    s.add_argument("--dataset", default=None,
                   help="dataset registry name (default: the profile's; another dataset drops the profile's "
                        "dataset options, e.g. CamVid's hold-out: use --profile camvid for the study's frames)")
    s.add_argument("--root", help="dataset root (default: the profile's, SCP_DATA_ROOT at real scale)")
    s.add_argument("--split", default=None, help=split_help)
    s.add_argument("--n", type=_int_at_least(1, "--n"), default=None, help=n_help + "; an integer >= 1")
    s.add_argument("--out", required=True, type=_out_folder,
                   help="output folder (no default), written as a whole: built in a temporary folder beside it and "
                        "renamed into place; a second run into the same folder at the same time is refused")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out holding an earlier run of this command, as a whole "
                        "(default: refuse it)")
    s.add_argument("--seed", type=_seed, default=None, help="base seed in [0, 2**63 - 1] (default: the profile's)")
    _device_option(s)


def _add_priors(sub) -> None:
    s = sub.add_parser("priors", help="build spatial / categorical / joint priors (sharded)")
    _study_options(s, "the reference split (default: the study's, train)",
                   "reference images (default: the profile's n_ref; at most the split's size)")
    s.add_argument("--min-count", type=_int_at_least(1, "--min-count"), default=None,
                   help="joint prior fallback threshold, an integer >= 1 (default: the profile's)")
    s.add_argument("--fallback", default=None, choices=["class", "spatial"],
                   help="joint prior fallback (default: the profile's)")
    s.set_defaults(fn=_cmd_priors)


def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="sample label maps of a dataset with a prior (sharded)")
    _study_options(s, "the split of the label maps (default: the profile's evaluation split)",
                   "label maps, the first n of the split (default: the table's for sample)")
    s.add_argument("--prior", help="prior file, 'normal' (default: plain ControlNet, mu = 1) or 'authors-normal' "
                   "(the authors' N(0, I) baseline: 19 of 20 steps, from t = 901)")
    s.add_argument("--convention", default=None, choices=["authors", "ours"],
                   help="an imported pipeline's recorded sampling conventions (CFG, steps, mu; under 'authors' the "
                        "normal prior is their baseline); flags given explicitly win (default: none, the table's)")
    s.add_argument("--batch-size", type=_int_at_least(1, "--batch-size"), default=None,
                   help="images per batch, an integer >= 1 (default: the table's for sample)")
    s.add_argument("--mu", type=_float_in(0, 1, "--mu", low_open=True), default=None,
                   help="step fraction in (0, 1] (default: 1 for the normal prior, i.e. plain ControlNet; else the "
                        "priors' mu)")
    s.add_argument("--steps", type=_int_at_least(1, "--steps"), default=None,
                   help="DDIM steps, an integer >= 1 (default: the profile's)")
    s.add_argument("--guidance", type=_float_in(1, math.inf, "--guidance"), default=None,
                   help="classifier-free guidance scale, a finite number >= 1; 1 runs no unconditional branch "
                        "(plain ControlNet sampling), so values below 1 would sample as 1 and are refused "
                        "(default: the profile's)")
    s.add_argument("--force", action="store_true",
                   help="sample with a prior built for another autoencoder (scale factor, image size or "
                        "autoencoder files differ from the pipeline's; default: refuse it)")
    s.set_defaults(fn=_cmd_sample)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scpdiff", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_reproduce, _add_train, _add_finetune, _add_priors, _add_sample, _add_compose,
                _add_import_release):
        add(sub)
    for command in sub.choices.values():  # every option's help shows its default
        command.formatter_class = _HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if getattr(args, "root", None):  # a path given on the command line is relative to where it was typed
        args.root = os.path.abspath(args.root)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"scpdiff: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
