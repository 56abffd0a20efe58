"""The ``scpdiff`` commands that train: ``train`` (a profile's stack from scratch, through
:func:`scp_core.training.train_profile`) and ``finetune`` (a ControlNet on label maps, SD 2.1 or a pipeline
folder, sharded across processes under ``accelerate launch``)."""
from __future__ import annotations

import json
import math

from .args import LazyChoices, device_option, float_in, int_at_least, out_folder, seed


def _cmd_train(a) -> int:
    from ..training import TRAIN_OPTIONS, train_profile  # diffusers and the models: for this command only

    result = train_profile(a.profile, **{name: getattr(a, name) for name in TRAIN_OPTIONS})
    print(json.dumps(result, indent=2, default=str) if isinstance(result, dict) else result)
    return 0


def _cmd_finetune(a) -> int:
    import torch  # torch, accelerate, diffusers and the models: for this command only

    from ..data import get_dataset
    from ..models import load_sd_components
    from ..pipeline import SCPDiffPipeline
    from ..training.finetune import finetune_controlnet
    from ..training.loop import TrainConfig, make_accelerator

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


def add_train(sub) -> None:
    """``scpdiff train``; its defaults are :data:`scp_core.training.TRAIN_OPTIONS` (a test keeps them equal)."""
    t = sub.add_parser("train", help="train the toy stack from scratch (VAE, base UNet, ControlNet); "
                       "--profile toy-gv fine-tunes the global-variation variant from it, --profile toy-locked a "
                       "daylight ControlNet with the UNet frozen whole; --profile camvid "
                       "trains base UNet, ControlNet and segmenter on CamVid with the pretrained TAEF2")
    t.add_argument("--profile", default="toy", metavar="PROFILE",
                   choices=LazyChoices("scp_core.training.entry", "TRAIN_PROFILES"),
                   help="the stack to train: toy, toy-gv, toy-locked, toy-seed (zoo/toy's ControlNet stage with "
                        "training seed --seed) or a recipe's profile (camvid); each refuses the options it does "
                        "not take")
    t.add_argument("--seed", type=int_at_least(1, "--seed"), default=None,
                   help="toy-seed: the training seed (zoo/toy is seed 0, default 1), into zoo/toy-seeds/seed<N>; "
                        "toy-gv: its ControlNet stage again with this training seed, into zoo/toy-gv/seeds/seed<N>; a "
                        "recipe's profile (camvid, camvid-sd): its ControlNet stage again with this training seed on "
                        "the stack's base UNet, into zoo/<profile>/seeds/seed<N>")
    t.add_argument("--small", action="store_true", help="toy, camvid: a few-minute run into runs/<profile>-small")
    t.add_argument("--data-root", help="camvid: the dataset root (default SCP_DATA_ROOT or data/camvid)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true",
                      help="camvid: write REPORT.md again from a finished run (and evaluate one trained from a pack)")
    mode.add_argument("--write-pack", default=None, metavar="FILE",
                      help="camvid: write the training pack (latents and label maps, for a machine without the "
                           "frames) and stop (default: none)")
    mode.add_argument("--pack", default=None, metavar="FILE",
                      help="camvid: train from a training pack instead of the dataset (default: the dataset)")
    device_option(t, "camvid: where the diffusion stages train; cuda takes the one-GPU recipe (GPU_RECIPES)")
    t.add_argument("--work", default=None, type=out_folder,
                   help="camvid: checkpoints and logs (default runs/camvid)")
    t.add_argument("--resume", choices=["latest"], help="continue each stage from its newest checkpoint")
    t.add_argument("--stage", nargs="+", choices=["vae", "unet", "controlnet"],
                   help="toy: the stages to (re)train, the others are read from runs/toy; without 'controlnet' "
                        "the run stops after the base UNet (then `--stage controlnet` and `--profile toy-gv` "
                        "can train the two ControlNets side by side)")
    t.add_argument("--schedule", default="sd", choices=["sd", "zero-snr"],
                   help="toy, toy-gv: the noise schedule of the UNet and ControlNet stages; zero-snr (Lin et al. 2024: "
                        "alpha_bar(T) = 0, v-prediction, trailing DDIM steps) trains base UNet and ControlNet into "
                        "runs/<profile>-zero-snr on the VAE of runs/toy; toy-gv then writes zoo/toy-gv-zero-snr")
    t.add_argument("--out", default=None, type=out_folder,
                   help="toy: pipeline folder (default zoo/toy/pipeline; REPORT.md, report/ and training_facts.json "
                        "go beside it, in its parent folder); camvid: the zoo folder (default zoo/camvid)")
    t.set_defaults(fn=_cmd_train)


def add_finetune(sub) -> None:
    f = sub.add_parser("finetune", help="fine-tune a ControlNet on label maps (SD 2.1 or a pipeline folder)")
    f.add_argument("--pipeline", help="an SCP-Diff pipeline folder to continue from")
    f.add_argument("--base", default="stabilityai/stable-diffusion-2-1-base", help="SD 2.1 base folder or hub id")
    f.add_argument("--controlnet", help="a ControlNet folder to start from (default: a copy of the UNet encoder)")
    f.add_argument("--dataset", required=True, help="dataset registry name (e.g. cityscapes)")
    f.add_argument("--root", help="dataset root (default: the dataset's, data/<dataset>)")
    f.add_argument("--out", required=True, type=out_folder, help="where the fine-tuned pipeline is written")
    f.add_argument("--work", default="runs/finetune", type=out_folder, help="checkpoints and loss log")
    f.add_argument("--steps", type=int_at_least(1, "--steps"), default=10000, help="optimiser steps")
    f.add_argument("--batch-size", type=int_at_least(1, "--batch-size"), default=16,
                   help="global batch (split across processes)")
    f.add_argument("--lr", type=float_in(0, math.inf, "--lr", low_open=True), default=1e-5, help="learning rate")
    f.add_argument("--checkpoint-every", type=int_at_least(1, "--checkpoint-every"), default=1000,
                   help="steps between checkpoints")
    f.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="autocast dtype")
    f.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    f.add_argument("--locked", action="store_true", help="keep the UNet decoder frozen (default: unlocked)")
    f.add_argument("--resume", help="'latest' or a checkpoint folder")
    f.add_argument("--seed", type=seed, default=0, help="seed of the run, in [0, 2**63 - 1]")
    f.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="training image size (default: the dataset's paper size, or the --pipeline's)")
    device_option(f)
    f.set_defaults(fn=_cmd_finetune)
