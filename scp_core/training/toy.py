"""The toy model zoo: train the toy stack on toy-city from scratch.

``scpdiff train --profile toy`` (or :func:`train_toy_stack`) runs three stages, each with
:func:`scp_core.training.loop.fit` (checkpoints and ``--resume latest`` included), with the
recipes of :mod:`.recipes`:

1. the VAE on the images of both toy regimes, daylight toy-city and toy-city-gv (the same
   layouts under a per-image global lighting factor), then LDM's scale factor ``1 / std``
   of their latents;
2. the base UNet on those latents with the fixed toy "prompt" (10 % null prompt for CFG),
   so the base model has seen day and night before any ControlNet is fine-tuned;
3. ControlNet fine-tuning on daylight toy-city with the colour-coded label map, the UNet
   decoder unlocked (:func:`train_toy_gv` runs this stage on toy-city-gv from the same base).

The result is written with ``SCPDiffPipeline.save_pretrained`` to ``zoo/toy/pipeline``
(float16 weights, loaded back as float32; :func:`scp_core.pipeline.load_pipeline`) with a
training report in ``zoo/toy/REPORT.md``.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from .. import _tv_compat  # noqa: F401
from ..data import REPO_ROOT, ToyCity, get_dataset
from ..data.profiles import PROFILES, TOY_PIPELINE_DIR, repo_path, training_seed_folder
from ..io import write_json
from ..models import make_scheduler, toy_text_conditioning, toy_unet, toy_vae
from ..pipeline import load_pipeline
from .loop import TrainConfig, fit
from .losses import LatentCache, fit_scale_factor, unet_loss_fn, vae_loss_fn
from .recipes import TOY_BASE_DATASETS, TOY_FULL, TOY_GV_CONTROLNET
from .report import copy_loss_logs, write_seed_report, write_toy_report
from .stacks import (assemble_pipeline, controlnet_stage, read_facts, reconstruction_psnr, run_stage, save_half,
                     save_modules, write_facts)

# The zoo folders each trainer writes by default: the table of data.profiles (toy-gv-zero-snr: the toy-gv stack
# retrained under zero terminal SNR; toy-locked: a daylight ControlNet trained with the UNet frozen whole).
PIPELINE_DIR = TOY_PIPELINE_DIR
ZOO = PIPELINE_DIR.parent
GV_PIPELINE_DIR = repo_path(PROFILES["toy-gv"].pipeline)
GV_ZERO_SNR_PIPELINE_DIR = repo_path(PROFILES["toy-gv-zero-snr"].pipeline)
LOCKED_PIPELINE_DIR = repo_path(PROFILES["toy-locked"].pipeline)
RUNS = REPO_ROOT / "runs" / "toy"


def runs_dir(name: str = "toy", schedule: str = "sd") -> Path:
    """Checkpoint folder of a toy run: ``runs/<name>``, or ``runs/<name>-<schedule>`` for another schedule."""
    return RUNS.with_name(name if schedule == "sd" else f"{name}-{schedule}")


def base_schedule(base_work: Path) -> str:
    """The noise schedule the base UNet under ``base_work`` was trained with (``sd`` when its facts name none)."""
    return read_facts(Path(base_work) / "unet").get("schedule", "sd")


def _same_schedule(base_work: Path, schedule: str) -> None:
    """Refuse to build on a base UNet trained under another noise schedule than the one asked for."""
    trained = base_schedule(base_work)
    if trained != schedule:
        raise ValueError(f"the base UNet in {Path(base_work).name}/unet was trained with the {trained!r} schedule, "
                         f"not {schedule!r}; train one first (`scpdiff train --profile toy --schedule {schedule} "
                         "--stage unet`) or ask for its schedule")


def base_images(n_train: int = 4000, datasets=TOY_BASE_DATASETS) -> np.ndarray:
    """The first ``n_train`` training images of each of ``datasets``, concatenated (uint8 ``[N, H, W, 3]``):
    what the toy VAE, its latent scale factor and the base UNet are fitted on."""
    return np.concatenate([get_dataset(name, split="train").images[:n_train] for name in datasets])


def toy_models(seed: int = 0):
    """Fresh toy components at the zoo's sizes."""
    vae = toy_vae(seed)
    unet = toy_unet(seed)
    return vae, unet


def anneal_vae(vae, images: np.ndarray, cfg: TrainConfig | None, vae_work: Path, resume: str | None = None):
    """The VAE stage's second phase: the same loss at a tenth of the learning rate.

    The constant-lr phase leaves the weights bouncing around a minimum; a short phase at a
    low rate settles them (``zoo/toy/REPORT.md`` gives the PSNR). Checkpoints, loss log and
    facts go to ``vae_work/anneal``; ``cfg=None`` skips the phase.
    """
    if cfg is None:
        return vae
    r = fit(vae, vae_loss_fn(images), len(images), cfg, Path(vae_work) / "anneal", resume=resume,
            desc="toy VAE, low-lr phase")
    write_facts(Path(vae_work) / "anneal", r)
    return r["model"]


def _vae_stage(vae, images, configs: dict, work: Path, vae_work: Path, retrain: bool, resume, facts: dict,
               psnr_images: int = 256):
    """Train the VAE (both phases) or reuse ``vae_work``'s; its facts and its PSNR on the first ``psnr_images``
    validation images of each regime go into ``facts``."""
    def train():
        r = fit(vae, vae_loss_fn(images), len(images), configs["vae"], work / "vae", resume=resume, desc="toy VAE")
        return anneal_vae(r["model"], images, configs.get("vae_anneal"), work / "vae", resume=resume), r, {}

    vae, facts["vae"], trained = run_stage(work / "vae", train, reuse_from=None if retrain else vae_work / "vae",
                                           load=AutoencoderKL.from_pretrained)
    vae_work = work if trained else vae_work
    if anneal := read_facts(vae_work / "vae" / "anneal"):
        facts["vae_anneal"] = anneal
    vae.eval().requires_grad_(False)
    for key, gv in (("vae_psnr_val_db", 0.0), ("vae_psnr_val_gv_db", 1.0)):
        val = ToyCity(split="val", global_variation=gv)
        facts[key] = round(float(reconstruction_psnr(vae, val.images[:psnr_images]).mean()), 2)
    return vae


def train_toy_stack(configs: dict | None = None, out: str | Path = PIPELINE_DIR, work: str | Path = RUNS,
                    resume: str | None = None, stages=("vae", "unet", "controlnet"), seed: int = 0,
                    n_train: int = 4000, report: bool = True, schedule: str = "sd",
                    vae_work: str | Path | None = None, psnr_images: int = 256) -> dict:
    """Train the toy stack from scratch (or resume it) and write the pipeline folder.

    Args:
        configs: ``{"vae": TrainConfig, "unet": ..., "controlnet": ...}`` (default: :data:`.recipes.TOY_FULL`).
        out: where the trained pipeline goes. work: checkpoints and loss logs of each stage.
        resume: ``"latest"`` to continue each stage from its newest checkpoint.
        stages: which stages to (re)train; the VAE and base UNet are loaded from ``work``
            when not named. Without ``"controlnet"`` the run stops after the base UNet and
            writes no pipeline (so the two ControlNets can then train side by side).
        schedule: the noise schedule of the UNet and ControlNet stages (``sd`` or ``zero-snr``,
            :func:`scp_core.models.make_scheduler`); the VAE does not depend on it.
        vae_work: where a VAE that is not retrained is read from (default ``work``), so a run
            under another schedule shares the committed stack's VAE and latent space.
        psnr_images: validation images of each regime the VAE's PSNR is measured on (the zoo's: 256).

    Returns:
        dict of measured facts (steps, wall times, final losses, VAE PSNR, scale factor).
    """
    configs = {**TOY_FULL, **(configs or {})}
    work, out = Path(work), Path(out)
    work.mkdir(parents=True, exist_ok=True)
    train = ToyCity(split="train")
    images = base_images(n_train)
    facts: dict = {"python": platform.python_version(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "n_train": n_train, "base_datasets": list(TOY_BASE_DATASETS),
                   "n_base_images": int(len(images)), "schedule": schedule}
    t_all = time.time()
    vae, unet = toy_models(seed)
    vae = _vae_stage(vae, images, configs, work, Path(vae_work) if vae_work else work, "vae" in stages, resume,
                     facts, psnr_images)
    cache = LatentCache.build(vae, images, scale_factor=1.0)  # latents of both regimes
    cache.scale_factor = scale = fit_scale_factor(cache.mean)
    facts["scale_factor"] = round(scale, 5)
    cond, uncond = toy_text_conditioning(seed)
    ddpm = make_scheduler("ddpm", schedule)

    def train_unet():
        r = fit(unet, unet_loss_fn(cache, ddpm, cond, uncond), len(images), configs["unet"], work / "unet",
                resume=resume, desc="toy base UNet")
        return r["model"], r, {"schedule": schedule}

    def load_unet(final: Path):
        _same_schedule(work, schedule)
        return UNet2DConditionModel.from_pretrained(final)

    unet, facts["unet"], _ = run_stage(work / "unet", train_unet, load=load_unet,
                                       reuse_from=None if "unet" in stages else work / "unet")
    if "controlnet" not in stages:
        facts["total_wall_s"] = round(time.time() - t_all, 1)
        return facts
    cache = LatentCache(cache.mean[:n_train], cache.std[:n_train], scale)  # the daylight toy-city part
    labels = train.labels[:n_train]
    model, facts["controlnet"], _ = run_stage(work / "controlnet", lambda: controlnet_stage(
        unet, cache, labels, train, ddpm, cond, uncond, configs["controlnet"], work / "controlnet", resume,
        "toy ControlNet"), save=None)
    facts["total_wall_s"] = round(time.time() - t_all, 1)
    pipe = assemble_pipeline(vae, model.unet, model.controlnet, cond, uncond, train, scale, schedule=schedule,
                             info={"profile": "toy", "dataset": "toy-city", "prompt": train.prompt, "trained": facts})
    save_half(pipe, out)
    if report:
        write_toy_report(load_pipeline(out, device="cpu", dtype=torch.float32), facts, configs, work,
                         report_dir=out.parent)
    return facts


def _gv_vae_dir(base_work: Path, vae_work: Path | None) -> Path:
    """The VAE the base UNet was trained on: ``vae_work``'s, or ``base_work``'s own when that run trained one."""
    for d in (Path(vae_work or base_work) / "vae" / "final", base_work / "vae" / "final"):
        if d.is_dir():
            return d
    raise FileNotFoundError(f"no trained toy VAE under {Path(vae_work or base_work).name}/vae/final or "
                            f"{base_work.name}/vae/final; train the toy stack first (`scpdiff train --profile toy`)")


def train_toy_gv(cfg: TrainConfig | None = None, base_work: str | Path = RUNS, out: str | Path = GV_PIPELINE_DIR,
                 work: str | Path = RUNS.with_name("toy-gv"), resume: str | None = None, n_train: int = 4000,
                 seed: int = 0, schedule: str = "sd", vae_work: str | Path | None = None) -> dict:
    """The toy stack for toy-city-gv: the shared VAE and base UNet, a ControlNet fine-tuned on toy-city-gv.

    Stage 3 of :func:`train_toy_stack` with the same recipe (decoder unlocked, same steps)
    on the global-variation data, starting from the toy run's VAE and base UNet
    (``base_work/{vae,unet}/final``, trained on both regimes) and the same latent scale
    factor, so both settings share one latent space and differ only in what the
    ControlNet stage saw. ``schedule`` must be the one the base UNet was trained with;
    ``vae_work`` (default ``base_work``) is where the VAE is read from.
    """
    cfg = cfg or TOY_GV_CONTROLNET
    base_work, work, out = Path(base_work), Path(work), Path(out)
    _same_schedule(base_work, schedule)
    vae = AutoencoderKL.from_pretrained(_gv_vae_dir(base_work, vae_work)).eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base_work / "unet" / "final")
    t0 = time.time()
    scale = fit_scale_factor(LatentCache.build(vae, base_images(n_train), scale_factor=1.0).mean)
    train = get_dataset("toy-city-gv", split="train")
    images, labels = train.images[:n_train], train.labels[:n_train]
    cache = LatentCache.build(vae, images, scale_factor=scale)
    cond, uncond = toy_text_conditioning(seed)
    model, stage, _ = run_stage(work, lambda: controlnet_stage(
        unet, cache, labels, train, make_scheduler("ddpm", schedule), cond, uncond, cfg, work, resume,
        "toy-gv ControlNet"), save=None)
    base = base_work.resolve()
    facts = {"base": str(base.relative_to(REPO_ROOT)) if base.is_relative_to(REPO_ROOT) else base.name,
             "dataset": "toy-city-gv", "schedule": schedule, "scale_factor": round(scale, 5), "steps": stage["steps"],
             "wall_s": stage["wall_s"], "total_wall_s": round(time.time() - t0, 1), "final_loss": stage["final_loss"],
             "unlocked_unet_tensors": stage["unlocked_unet_tensors"], "config": asdict(cfg),
             "base_unet": read_facts(base_work / "unet")}
    pipe = assemble_pipeline(vae, model.unet, model.controlnet, cond, uncond, train, scale, schedule=schedule,
                             info={"profile": "toy-gv", "dataset": "toy-city-gv", "prompt": train.prompt,
                                   "trained": facts})
    save_half(pipe, out)
    write_json(out.parent / "training_facts.json", facts)
    copy_loss_logs({"controlnet": work}, out.parent)
    if schedule != "sd":  # this run's base UNet is not the committed toy zoo's: keep its loss curve beside it
        copy_loss_logs({"base_unet": base_work / "unet"}, out.parent)
    return facts


def train_toy_locked(out: str | Path = LOCKED_PIPELINE_DIR, work: str | Path = RUNS.with_name("toy-locked"),
                     resume: str | None = None, n_train: int = 4000, seed: int = 0,
                     configs: dict | None = None) -> dict:
    """A daylight toy ControlNet trained the original ControlNet way: the UNet frozen whole.

    The committed toy stacks unlock the UNet decoder (the authors' ``sd_locked=False``); a public
    ControlNet does not. To ask whether the priors still help such a model (SCP-Diff toolkit
    issue #5), this trains one in the committed stacks' latent space: the VAE and scale factor of
    ``zoo/toy/pipeline`` (so the priors of zoo/toy and zoo/toy-gv apply unchanged), a base UNet
    retrained with the toy recipe on both regimes (the zoo keeps only fine-tuned UNets; it is
    reused from ``work/unet`` when finished), then the toy ControlNet recipe on daylight toy-city
    with no UNet tensor trainable. ``configs``: ``{"unet": ..., "controlnet": ...}`` overrides.
    """
    configs = {**TOY_FULL, **(configs or {})}
    work, out = Path(work), Path(out)
    zoo = load_pipeline(PIPELINE_DIR, device="cpu", dtype=torch.float32)
    vae, scale = zoo.vae.eval().requires_grad_(False), zoo.scale_factor
    # written back file for file (its config names where the zoo's VAE was trained), so the priors' fingerprint holds
    zoo_vae_config = json.loads((PIPELINE_DIR / "vae" / "config.json").read_text())
    vae.register_to_config(_name_or_path=zoo_vae_config["_name_or_path"])
    t0 = time.time()
    images = base_images(n_train)
    cache = LatentCache.build(vae, images, scale_factor=scale)
    cond, uncond = toy_text_conditioning(seed)
    ddpm = make_scheduler("ddpm")

    def train_unet():
        r = fit(toy_unet(seed), unet_loss_fn(cache, ddpm, cond, uncond), len(images), configs["unet"], work / "unet",
                resume=resume, desc="toy base UNet (for the locked ControlNet)")
        return r["model"], r, {"schedule": "sd"}

    unet, unet_facts, _ = run_stage(work / "unet", train_unet, reuse_from=work / "unet",
                                    steps=configs["unet"].steps, load=UNet2DConditionModel.from_pretrained)
    train = ToyCity(split="train")
    daylight = LatentCache(cache.mean[:n_train], cache.std[:n_train], scale)
    model, stage, _ = run_stage(work / "controlnet", lambda: controlnet_stage(
        unet, daylight, train.labels[:n_train], train, ddpm, cond, uncond, configs["controlnet"],
        work / "controlnet", resume, "toy ControlNet, UNet locked", unlock=False), save=None)
    facts = {"dataset": "toy-city", "vae": "zoo/toy/pipeline", "scale_factor": round(scale, 5),
             "unlocked_unet_tensors": stage["unlocked_unet_tensors"], "steps": stage["steps"],
             "wall_s": stage["wall_s"], "final_loss": stage["final_loss"], "total_wall_s": round(time.time() - t0, 1),
             "threads": torch.get_num_threads(), "torch": torch.__version__, "base_unet": unet_facts,
             "config": asdict(configs["controlnet"])}
    pipe = assemble_pipeline(vae, model.unet, model.controlnet, cond, uncond, train, scale,
                             info={"profile": "toy-locked", "dataset": "toy-city", "prompt": train.prompt,
                                   "trained": facts})
    save_half(pipe, out)
    write_json(out.parent / "training_facts.json", facts)
    copy_loss_logs({"controlnet": work / "controlnet", "base_unet": work / "unet"}, out.parent)
    return facts


# the toy stacks whose ControlNet stage trains again with another training seed: their data and recipe
SEED_STACKS = {"toy": ("toy-city", TOY_FULL["controlnet"], "the daylight toy ControlNet", "toy-seed"),
               "toy-gv": ("toy-city-gv", TOY_GV_CONTROLNET, "the toy-city-gv ControlNet", "toy-gv")}


def seed_dir(seed: int, stack: str = "toy") -> Path:
    """Where ``stack``'s ControlNet stage trained with training seed ``seed`` lives: ``zoo/toy-seeds/seed<N>`` for the
    daylight stack, ``zoo/toy-gv/seeds/seed<N>`` for toy-city-gv (seed 0 is the committed stack itself)."""
    if seed == 0:
        return PIPELINE_DIR if stack == "toy" else repo_path(PROFILES[stack].pipeline)
    return repo_path(training_seed_folder(stack, seed))  # the daylight stack's is zoo/toy-seeds/seed<N>


def train_toy_seed(seed: int, out: str | Path | None = None, work: str | Path | None = None,
                   resume: str | None = None, n_train: int = 4000, stack: str = "toy") -> dict:
    """A toy ControlNet stage again, with training seed ``seed`` (Table 1 across seeds): ``stack`` "toy" (daylight
    toy-city, ``zoo/toy``'s recipe) or "toy-gv" (toy-city-gv, ``zoo/toy-gv``'s).

    The stack's ControlNet recipe (:data:`.recipes.TOY_FULL`, decoder unlocked; toy-gv's is the same) with
    ``TrainConfig.seed = seed`` (the ControlNet's initial weights, the batch order, the timesteps and noise drawn).
    The frozen parts are shared and written once: the VAE, scale factor and conditioning of ``zoo/toy/pipeline``
    (toy-gv's are the same files), and the base UNet of ``zoo/toy-locked/pipeline`` (the toy recipe's base UNet
    retrained on that VAE's latents; the locked stack never changed it). Only the two trained modules are written,
    float16, into ``out`` (``controlnet/``, ``unet/``); :func:`scp_core.pipeline.load_pipeline` assembles the stack
    from them.
    """
    if stack not in SEED_STACKS:
        raise ValueError(f"training seeds exist for the toy stacks {sorted(SEED_STACKS)}, not {stack!r}")
    if seed == 0:
        raise ValueError(f"seed 0 is the committed {stack} stack; train seeds >= 1 here")
    dataset, recipe, title, profile = SEED_STACKS[stack]
    out = Path(out) if out else seed_dir(seed, stack)
    work = Path(work) if work else RUNS.with_name(f"{stack}-seed{seed}")
    base = load_pipeline(LOCKED_PIPELINE_DIR, device="cpu", dtype=torch.float32)
    t0 = time.time()
    train = get_dataset(dataset, split="train")
    cache = LatentCache.build(base.vae.eval().requires_grad_(False), train.images[:n_train],
                              scale_factor=base.scale_factor)
    cond, uncond = toy_text_conditioning(0)
    cfg = replace(recipe, seed=int(seed))
    model, stage, _ = run_stage(work / "controlnet", lambda: controlnet_stage(
        base.unet, cache, train.labels[:n_train], train, make_scheduler("ddpm"), cond, uncond, cfg,
        work / "controlnet", resume, f"{stack} ControlNet, training seed {seed}"), save=None)
    facts = {"dataset": dataset, "stack": stack, "training_seed": int(seed), "vae": "zoo/toy/pipeline",
             "base_unet": "zoo/toy-locked/pipeline/unet", "scale_factor": round(base.scale_factor, 5),
             "unlocked_unet_tensors": stage["unlocked_unet_tensors"], "steps": stage["steps"],
             "wall_s": stage["wall_s"], "final_loss": stage["final_loss"], "total_wall_s": round(time.time() - t0, 1),
             "threads": torch.get_num_threads(), "torch": torch.__version__, "config": asdict(cfg),
             "command": f"scpdiff train --profile {profile} --seed {seed}", "title": title}
    save_modules({"controlnet": model.controlnet, "unet": model.unet}, out)
    write_json(out / "training_facts.json", facts)
    copy_loss_logs({"controlnet": work / "controlnet"}, out)
    write_toy_seed_report(out)
    return facts


def write_toy_seed_report(out: Path) -> Path:
    """``REPORT.md`` of a toy training-seed folder (:func:`.report.write_seed_report`)."""
    facts = json.loads((Path(out) / "training_facts.json").read_text())
    seed, stack = facts["training_seed"], facts.get("stack", "toy")
    title = facts.get("title", SEED_STACKS[stack][2])
    command = facts.get("command", f"scpdiff train --profile {SEED_STACKS[stack][3]} --seed {seed}")
    zoo = "zoo/toy" if stack == "toy" else f"zoo/{stack}"
    return write_seed_report(out, f"{title[0].upper()}{title[1:]}, training seed {seed}", (
        f"`{zoo}`'s ControlNet stage (`scp_core.training.recipes.TOY_FULL`, on {facts['dataset']}) retrained with "
        "another training seed (the batch order, timesteps and noise of training) "
        f"by `{command}`. Only the trained modules are here (`controlnet/`, `unet/`, float16, their sha256 in "
        "`modules.json`); the VAE, scale factor and conditioning are `zoo/toy/pipeline`'s and the base UNet is "
        "`zoo/toy-locked/pipeline/unet` (the toy recipe's base UNet, retrained), so the stack loads with "
        "`load_pipeline(\"zoo/toy-locked/pipeline\", trained=<this folder>)`."
        + (" Notebook 11 scores Table 1 on it." if stack == "toy" else "")))
