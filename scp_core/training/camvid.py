"""Train a profile's model stack on a real dataset: the toy recipe, generalised.

``scpdiff train --profile camvid`` (or :func:`train_stack`) runs, with the pretrained TAEF2
autoencoder in place of a trained VAE (:mod:`scp_core.taef2`) and the recipe of
:data:`scp_core.training.recipes.RECIPES`:

1. encode the training images and their horizontal flips once (the flip is the
   augmentation; TAEF2 is deterministic, so the latents are cached in the run folder) and fit
   LDM's scale factor ``1 / std`` of the latents;
2. train the base UNet on those latents with a fixed seeded "prompt" embedding (10 % null
   prompt for CFG), as the toy stack does;
3. fine-tune a ControlNet with the colour-coded label map, the UNet decoder unlocked (the
   authors' ``sd_locked=False``);
4. train a segmenter with the toy segmenter's recipe on the same training images and report
   its mIoU / accuracy on the real validation images (the ceiling of generated images).

Each stage uses :func:`scp_core.training.loop.fit` (checkpoints; ``resume="latest"`` continues a
stage and skips finished ones, :func:`scp_core.training.stacks.run_stage`). The pipeline goes to
``<out>/pipeline`` (float16 weights; the autoencoder's weights are not copied: its folder holds
only its config and it loads from the weights folder), the segmenter to ``<out>/segmenter``, the
report to ``<out>/REPORT.md`` with its figures in ``<out>/report/``: nothing is written outside
``out`` and ``work``.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors import safe_open
from tqdm.auto import tqdm

from .. import _tv_compat  # noqa: F401
from ..data import REPO_ROOT, get_dataset, images_labels, to_float
from ..data.profiles import PROFILES, repo_path, training_seed_folder
from ..data.profiles import profile as profile_row
from ..data.profiles import data_root as profile_data_root
from ..io import follow_umask, save_safetensors, write_json, write_text
from ..metrics.segmentation import evaluate_segmentation
from ..metrics.toy_segmenter import ToySegmenter, train_toy_segmenter
from ..models import make_scheduler, run_on_cpu, toy_text_conditioning, toy_unet
from ..taef2 import TAEF2
from .finetune import ControlNetWithUNet
from .loop import fit
from .losses import LatentCache, fit_scale_factor, unet_loss_fn
from .recipes import StackRecipe, recipe_for
from .pack import read_pack, write_pack
from .report import write_camvid_report
from .report import copy_loss_logs, write_seed_report
from .stacks import (assemble_pipeline, controlnet_stage, reconstruction_psnr, run_stage, save_final, save_half,
                     save_modules, stage_done)

__all__ = ["train_stack", "train_controlnet_seed", "train_segmenter", "rewrite_report", "load_images", "LatentSet",
           "scrub_local_paths", "write_training_pack"]


def _profile_dataset(name: str, split: str, data_root=None):
    """The profile's dataset (its row of ``data.profiles``: dataset, options, data folder) and the row."""
    p = profile_row(name)
    return get_dataset(p.dataset, root=profile_data_root(name, data_root), split=split, **p.dataset_options), p


def _dirs(name: str, out, work) -> tuple[Path, Path]:
    """``out`` (default: the profile's zoo folder, ``zoo/<profile>``) and ``work`` (default ``runs/<profile>``)."""
    zoo = PROFILES[name].zoo if name in PROFILES else REPO_ROOT / "zoo" / name
    return (Path(out) if out else zoo), (Path(work) if work else REPO_ROOT / "runs" / name)


def load_images(ds, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``limit`` items of a file dataset: uint8 images ``[N, H, W, 3]``, label maps ``[N, H, W]``, names."""
    n = len(ds) if limit is None else min(limit, len(ds))
    images, labels = images_labels(ds, range(n))
    names = [name for name, _, _ in ds.files[:n]]
    return np.ascontiguousarray(images.numpy()), labels.numpy().astype(np.uint8), names


def _with_flips(images: np.ndarray, labels: np.ndarray, hflip: bool) -> tuple[np.ndarray, np.ndarray]:
    """The training set, followed by its horizontal flips when ``hflip``."""
    if not hflip:
        return images, labels
    return np.concatenate([images, images[:, :, ::-1]]), np.concatenate([labels, labels[:, :, ::-1]])


class LatentSet:
    """Raw autoencoder latents of a training set (and its flips), cached in a safetensors file."""

    @staticmethod
    @torch.no_grad()
    def build(vae, images: np.ndarray, path: Path, meta: dict, batch_size: int = 8) -> torch.Tensor:
        """Encode ``images`` (uint8 NHWC) or read ``path`` if it was written for the same ``meta``."""
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                if f.metadata() == {k: json.dumps(v) for k, v in meta.items()}:
                    return f.get_tensor("latents")
        if images is None:
            raise ValueError(f"{path} does not hold the latents of these frames, and there are no images to encode")
        out = []
        for s in tqdm(range(0, len(images), batch_size), desc="encoding latents", leave=False):
            out.append(vae.encode(to_float(images[s:s + batch_size])).latent_dist.mean.float())
        return LatentSet.store(torch.cat(out), path, meta)

    @staticmethod
    def store(z: torch.Tensor, path: Path, meta: dict) -> torch.Tensor:
        """Write latents with the metadata :meth:`build` recognises (a training pack's, on a device machine)."""
        z = z.float().contiguous()
        save_safetensors({"latents": z}, path, metadata={k: json.dumps(v) for k, v in meta.items()})
        return z


def _latents(vae, images, names, train, recipe: StackRecipe, work: Path, facts: dict) -> LatentCache:
    """The training latents (cached in ``work``) and LDM's scale factor, as a :class:`LatentCache`."""
    t0 = time.time()
    z = LatentSet.build(vae, np.ascontiguousarray(images), work / "latents.safetensors",
                        {"names": names, "size": list(train.size), "hflip": recipe.hflip})
    facts["encode_s"] = round(time.time() - t0, 1)
    scale = fit_scale_factor(z)
    facts["scale_factor"] = round(scale, 5)
    facts["latent_mean"] = round(float(z.mean()), 5)
    return LatentCache(z, torch.zeros_like(z), scale)


def _diffusion_stages(profile, recipe: StackRecipe, cache, labels, train, work: Path, resume, facts: dict,
                      device: str | None = None):
    """The base UNet, then the ControlNet with the UNet decoder unlocked; returns the ControlNetWithUNet."""
    cond, uncond = toy_text_conditioning(recipe.seed)
    ddpm = make_scheduler("ddpm", recipe.noise_schedule)
    unet, facts["unet"], unet_trained = _base_unet(profile, recipe, cache, labels, work, resume, device)

    def save_pair(model, final: Path):
        model.unet.save_pretrained(work / "controlnet_unet" / "final")
        follow_umask(work / "controlnet_unet" / "final")
        save_final(model.controlnet, final)

    def load_pair(final: Path):
        return ControlNetWithUNet(ControlNetModel.from_pretrained(final),
                                  UNet2DConditionModel.from_pretrained(work / "controlnet_unet" / "final"))

    # a base UNet trained in this call invalidates ControlNet checkpoints made on the old one
    cn_resume = None if unet_trained else resume
    model, facts["controlnet"], _ = run_stage(
        work / "controlnet", lambda: controlnet_stage(
            unet, cache, labels, train, ddpm, cond, uncond, recipe.controlnet_cfg, work / "controlnet", cn_resume,
            f"{profile} ControlNet", control_channels=recipe.control_channels, device=device),
        reuse_from=work / "controlnet" if cn_resume and stage_done(work / "controlnet_unet") else None,
        steps=recipe.controlnet_cfg.steps, load=load_pair, save=save_pair)
    return model, cond, uncond


def _base_unet(profile, recipe: StackRecipe, cache, labels, work: Path, resume, device=None):
    """The base UNet stage (``work/unet``): ``(unet, facts, trained in this call)``; from step 0, or, with
    ``resume``, reused when finished or continued from its newest checkpoint (also when the recipe has more steps)."""
    cond, uncond = toy_text_conditioning(recipe.seed)

    def train_unet():
        unet = toy_unet(recipe.seed, **recipe.unet)
        r = fit(unet, unet_loss_fn(cache, make_scheduler("ddpm", recipe.noise_schedule), cond, uncond), len(labels),
                recipe.unet_cfg, work / "unet", resume=resume, desc=f"{profile} base UNet", device=device)
        return r["model"], r, {}

    return run_stage(work / "unet", train_unet, reuse_from=work / "unet" if resume else None,
                     steps=recipe.unet_cfg.steps, load=UNet2DConditionModel.from_pretrained)


def train_controlnet_seed(profile: str, seed: int, out: str | Path | None = None, work: str | Path | None = None,
                          data_root=None, resume: str | None = None, recipe: StackRecipe | None = None,
                          limit: int | None = None, device: str | None = None) -> dict:
    """The stack's ControlNet stage again with training seed ``seed`` >= 1 (seed 0 is the stack in ``zoo``).

    Everything but the seed is the recipe's: the same base UNet (``work/unet``, shared with the stack; trained
    here first, by the recipe and its seed 0, when the run folder no longer holds it), latents, conditioning and
    schedule. The seed sets the ControlNet's random initial weights (its control-map encoder), the batch order
    and the timesteps and noise drawn (``TrainConfig.seed``). Only the two trained modules are written, float16,
    into ``out`` (default :func:`scp_core.data.profiles.training_seed_folder`: ``controlnet/``, ``unet/`` with
    the decoder trained beside the ControlNet), with ``training_facts.json``, the loss log and ``REPORT.md``;
    :func:`scp_core.pipeline.load_pipeline` (``trained=``) assembles the stack from them and the profile's
    pipeline folder (autoencoder, conditioning, scale factor, scheduler).
    """
    if int(seed) < 1:
        raise ValueError(f"training seed {seed}: seed 0 is the stack in zoo/{profile}; train seeds >= 1 here")
    recipe = recipe or recipe_for(profile)
    _, work = _dirs(profile, None, work)
    out = Path(out) if out else repo_path(training_seed_folder(profile, seed))
    t0 = time.time()
    images, labels, names, train, s = _training_set(profile, recipe, data_root, limit, None, work)
    work.mkdir(parents=True, exist_ok=True)
    _claim_schedule(work, recipe.noise_schedule, "latest")
    facts: dict = {}
    cache = _latents(TAEF2.from_weights(), images, names, train, recipe, work, facts)
    unet, base, base_trained = _base_unet(profile, recipe, cache, labels, work, "latest", device)
    cond, uncond = toy_text_conditioning(recipe.seed)
    cfg = replace(recipe.controlnet_cfg, seed=int(seed))
    stage_dir = work / f"controlnet-seed{int(seed)}"
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))  # ControlNetModel.from_unet draws the control-map encoder's weights
        model, stage, _ = run_stage(stage_dir, lambda: controlnet_stage(
            unet, cache, labels, train, make_scheduler("ddpm", recipe.noise_schedule), cond, uncond, cfg, stage_dir,
            resume, f"{profile} ControlNet, training seed {seed}", control_channels=recipe.control_channels,
            device=device), save=None)
    facts.update({"profile": profile, "dataset": s.dataset, "training_seed": int(seed),
                  "noise_schedule": recipe.noise_schedule, "pipeline": PROFILES[profile].pipeline,
                  "base_unet": f"runs/{work.name}/unet ({base['steps']} steps; "
                               + ("trained in this run" if base_trained else "shared with the stack") + ")",
                  "unlocked_unet_tensors": stage["unlocked_unet_tensors"], "steps": stage["steps"],
                  "wall_s": stage["wall_s"], "final_loss": stage["final_loss"],
                  "base_unet_wall_s": base["wall_s"] if base_trained else 0.0,
                  "total_wall_s": round(time.time() - t0, 1), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "config": asdict(cfg)})
    save_modules({"controlnet": model.controlnet, "unet": model.unet}, out)
    write_json(out / "training_facts.json", facts)
    copy_loss_logs({"controlnet": stage_dir}, out)
    write_seed_report(out, f"{profile}: the ControlNet stage, training seed {seed}", (
        f"`zoo/{profile}`'s ControlNet stage (the `{profile}` recipe of `scp_core.training.recipes.RECIPES`, "
        f"{recipe.noise_schedule} noise schedule) trained again with training seed {seed} (the ControlNet's initial "
        "weights, the batch order, the timesteps and noise of training) on the same base UNet, by `scpdiff train "
        f"--profile {profile} --seed {seed}`. Only the trained modules are here (`controlnet/`, `unet/` with its "
        "decoder trained beside the ControlNet; float16, their sha256 in `modules.json`); the autoencoder, "
        f"conditioning, scale factor and scheduler are `{PROFILES[profile].pipeline}`'s, so the stack loads with "
        f"`load_pipeline(\"{PROFILES[profile].pipeline}\", trained=<this folder>)`. Notebook 12 runs the schedule "
        "control on it."))
    return facts


def _training_set(profile, recipe: StackRecipe, data_root, limit, pack, work: Path):
    """``(images or None, labels, names, train, settings)``: the frames and their flips from the dataset, or,
    from a training pack, no images (its latents are stored where :class:`LatentSet` finds them)."""
    if pack is None:
        train, s = _profile_dataset(profile, "train", data_root)
        images, labels, names = load_images(train, limit)
        return (*_with_flips(images, labels, recipe.hflip), names, train, s)
    s = profile_row(profile)
    z, labels, names, train, hflip = read_pack(pack, profile)
    if hflip != recipe.hflip:
        raise ValueError(f"the pack {pack} was written with hflip={hflip}, the recipe asks for {recipe.hflip}")
    work.mkdir(parents=True, exist_ok=True)
    LatentSet.store(z, work / "latents.safetensors", {"names": names, "size": list(train.size), "hflip": hflip})
    return None, labels, names, train, s


def write_training_pack(path: str | Path, profile: str = "camvid", data_root=None, work: str | Path | None = None,
                        recipe: StackRecipe | None = None, limit: int | None = None) -> Path:
    """The training pack of ``profile`` (:mod:`.pack`): the latents of the training frames and their flips
    (reusing ``work``'s latent cache when it holds them) and their label maps, for a machine without the data."""
    recipe = recipe or recipe_for(profile)
    _, work = _dirs(profile, None, work)
    images, labels, names, train, _ = _training_set(profile, recipe, data_root, limit, None, work)
    z = LatentSet.build(TAEF2.from_weights(), np.ascontiguousarray(images), work / "latents.safetensors",
                        {"names": names, "size": list(train.size), "hflip": recipe.hflip})
    return write_pack(path, z, labels, names, train, profile, recipe.hflip)


def train_stack(profile: str = "camvid", out: str | Path | None = None, work: str | Path | None = None,
                data_root=None, resume: str | None = None, recipe: StackRecipe | None = None,
                limit: int | None = None, report: bool = True, device: str | None = None,
                pack: str | Path | None = None) -> dict:
    """Train (or resume) the profile's base UNet, ControlNet and segmenter; write pipeline and report.

    Args:
        profile: a key of :data:`scp_core.training.recipes.RECIPES`.
        out: where the pipeline, segmenter and report go (default ``zoo/<profile>``).
        work: checkpoints, loss logs and the latent cache (default ``runs/<profile>``).
        data_root: the dataset root (default: the profile's, ``SCP_DATA_ROOT`` or ``data/<name>``).
        resume: ``"latest"``: skip finished stages and continue the others from their newest
            checkpoint.
        recipe: override ``RECIPES[profile]``.
        limit: use only the first ``limit`` training and validation images (tests).
        device: where the diffusion stages train (``None``: accelerate's choice, ``"cuda"``, ``"cpu"``).
        pack: a training pack (:func:`write_training_pack`) instead of the dataset, on a machine without
            the frames: the recipe must reuse a segmenter, and the evaluation and report wait for
            :func:`rewrite_report` where the data is.

    Returns:
        the measured facts (also in ``<out>/training_facts.json``).
    """
    recipe = recipe or recipe_for(profile)
    out, work = _dirs(profile, out, work)
    t_all = time.time()
    vae = TAEF2.from_weights()  # fails early, naming the missing file
    images, labels, names, train, s = _training_set(profile, recipe, data_root, limit, pack, work)
    work.mkdir(parents=True, exist_ok=True)
    _claim_schedule(work, recipe.noise_schedule, resume)
    facts: dict = {"profile": profile, "noise_schedule": recipe.noise_schedule, "dataset": s.dataset,
                   "dataset_options": s.dataset_options,
                   "image_size": list(train.size), "n_train_images": len(names), "hflip": recipe.hflip,
                   "n_train_latents": int(len(labels)), "python": platform.python_version(),
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine(), "device": _device_name(device)}
    cache = _latents(vae, images, names, train, recipe, work, facts)
    model, cond, uncond = _diffusion_stages(profile, recipe, cache, labels, train, work, resume, facts, device)
    seg, seg_log = _segmenter_stage(images, labels, train, recipe, work / "segmenter", resume)
    if images is not None:
        val, _ = _profile_dataset(profile, "val", data_root)
        val_images, val_labels, _ = load_images(val, limit)
        seg_metrics = _evaluate(vae, seg, seg_log, val_images, val_labels, train, facts)
    facts["total_wall_s"] = round(time.time() - t_all, 1)

    # the pipeline, the segmenter and the report, all under ``out``
    pipe = assemble_pipeline(vae, model.unet, model.controlnet, cond, uncond, train, cache.scale_factor,
                             info={"profile": profile, "dataset": s.dataset, "autoencoder": "TAEF2", "trained": facts},
                             schedule=recipe.noise_schedule)
    save_half(pipe, out / "pipeline")
    scrub_local_paths(out / "pipeline")
    if not recipe.segmenter_from:  # a reused segmenter stays in its own folder, written once
        seg.save_pretrained(out / "segmenter", extra_config={"dataset": s.dataset, "image_size": list(train.size)})
        write_json(out / "segmenter" / "training_log.json", seg_log)
        if images is not None:
            write_json(out / "segmenter" / "val_metrics.json", seg_metrics)
    write_json(out / "training_facts.json", facts)
    if report and images is not None:
        write_camvid_report(out, work, facts, recipe, val_labels, val_images, train)
    return facts


def _claim_schedule(work: Path, schedule: str, resume: str | None) -> None:
    """Record the run folder's noise schedule (``work/noise_schedule.json``); refuse to resume stages that were
    trained under another one (their checkpoints would go on under the wrong targets)."""
    path = work / "noise_schedule.json"
    before = json.loads(path.read_text())["noise_schedule"] if path.is_file() else "sd"
    has_stages = any((work / stage).is_dir() for stage in ("unet", "controlnet"))
    if resume and has_stages and before != schedule:
        raise ValueError(f"{work} holds stages trained under the noise schedule {before!r}, but the recipe asks for "
                         f"{schedule!r}: train into a fresh folder (--work) or move {work} aside")
    write_json(path, {"noise_schedule": schedule})


def _device_name(device) -> str:
    """What the diffusion stages ran on (:func:`scp_core.models.run_on_cpu`'s choice), for the report."""
    return "cpu" if run_on_cpu(device) else torch.cuda.get_device_name(0)


def _evaluate(vae, seg, seg_log: dict, val_images, val_labels, train, facts: dict) -> dict:
    """The autoencoder's round-trip PSNR and the segmenter's scores on the validation images, into ``facts``;
    returns the segmenter's ``val_metrics.json``."""
    t0 = time.time()
    facts["taef2_psnr_val_db"] = round(float(np.mean(reconstruction_psnr(vae, val_images, batch_size=8).tolist())), 2)
    facts["taef2_psnr_n"] = int(len(val_images))
    facts["taef2_psnr_s"] = round(time.time() - t0, 1)
    seg_eval = evaluate_segmentation(val_images, val_labels.astype(np.int64), seg, train.num_classes,
                                     ignore_index=train.ignore_index, class_names=list(train.class_names),
                                     batch_size=16, keep_per_sample=True, progress=False)
    facts["segmenter"] = {"steps": seg_log["steps_done"], "wall_s": seg_log["wall_time_s"],
                          "loss_last_50": round(seg_log["loss_last_50"], 4),
                          "val_miou": round(seg_eval["miou"], 4), "val_acc": round(seg_eval["acc"], 4),
                          "val_ci": seg_eval["ci"], "n_val": int(len(val_images))}
    return _seg_summary(seg_eval)


def _seg_summary(r: dict) -> dict:
    return {"miou": r["miou"], "acc": r["acc"], "macc": r["macc"], "n_images": r["n_images"], "ci": r["ci"],
            "per_class_iou": {c: (None if math.isnan(v) else round(float(v), 6))
                              for c, v in r["per_class"]["iou"].items()}}


def rewrite_report(profile: str = "camvid", out: str | Path | None = None, work: str | Path | None = None,
                   data_root=None, recipe: StackRecipe | None = None, limit: int | None = None) -> Path:
    """Write ``<out>/REPORT.md`` again from ``<out>/training_facts.json`` and the run folder, without training;
    a stack trained from a pack is evaluated first (on the first ``limit`` validation frames, default all)."""
    recipe = recipe or recipe_for(profile)
    out, work = _dirs(profile, out, work)
    facts_path = out / "training_facts.json"
    if not facts_path.is_file():
        raise FileNotFoundError(f"{facts_path} not found: the report needs a finished `scpdiff train` run")
    facts = json.loads(facts_path.read_text())
    train, _ = _profile_dataset(profile, "train", data_root)
    val, _ = _profile_dataset(profile, "val", data_root)
    val_images, val_labels, _ = load_images(val, facts.get("taef2_psnr_n", limit))
    if "segmenter" not in facts:  # trained from a pack, where no frame was: the evaluation happens here
        folder = recipe.segmenter_dir(out)
        seg = ToySegmenter.from_pretrained(folder)
        seg_log = json.loads((folder / "training_log.json").read_text())
        seg_metrics = _evaluate(TAEF2.from_weights(), seg, seg_log, val_images, val_labels, train, facts)
        if not recipe.segmenter_from:
            write_json(folder / "val_metrics.json", seg_metrics)
        write_json(facts_path, facts)
    return write_camvid_report(out, work, facts, recipe, val_labels, val_images, train)


def _segmenter_stage(images, labels, train, recipe: StackRecipe, seg_dir: Path, resume: str | None):
    """Train (or, resuming, load) the segmenter with the toy segmenter's recipe on the training images, or
    reuse the recipe's ``segmenter_from``."""
    def trained(folder: Path) -> bool:
        return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()

    def load(folder: Path):
        return ToySegmenter.from_pretrained(folder), json.loads((folder / "training_log.json").read_text())

    if recipe.segmenter_from:
        if not trained(REPO_ROOT / recipe.segmenter_from):
            raise FileNotFoundError(f"the recipe reuses the segmenter in {recipe.segmenter_from}, which holds none; "
                                    "train the CPU stack first (`scpdiff train --profile camvid`) or restore it "
                                    "from git")
        return load(REPO_ROOT / recipe.segmenter_from)
    if images is None:
        raise ValueError("a training pack holds no frames to train a segmenter on: use a recipe that reuses one "
                         "(segmenter_from, as the GPU recipe does)")
    if resume and trained(seg_dir):
        return load(seg_dir)
    seg, log = train_toy_segmenter(data=(images, labels), seed=recipe.seed, progress=False,
                                   label_set=(train.num_classes, train.ignore_index, train.class_names),
                                   **recipe.segmenter)
    log["global_variations"] = []
    write_json(seg_dir / "training_log.json", log)  # before the weights: their presence marks a finished stage
    seg.save_pretrained(seg_dir, extra_config={"dataset": train.name, "image_size": list(train.size)})
    return seg, log


def train_segmenter(profile: str = "camvid", work: str | Path | None = None, data_root=None,
                    recipe: StackRecipe | None = None, limit: int | None = None):
    """Only the segmenter stage of :func:`train_stack` (same data, same recipe, same folder), e.g. in a
    second process while the diffusion stages run; a resumed ``train_stack`` then loads it."""
    recipe = recipe or recipe_for(profile)
    _, work = _dirs(profile, None, work)
    train, _ = _profile_dataset(profile, "train", data_root)
    images, labels, _ = load_images(train, limit)
    images, labels = _with_flips(images, labels, recipe.hflip)
    return _segmenter_stage(images, labels, train, recipe, work / "segmenter", resume=None)


def scrub_local_paths(folder: Path) -> None:
    """Drop diffusers' ``_name_or_path`` (the run folder a component was loaded from: a path of
    the training machine) from the component configs under ``folder``."""
    for cfg in Path(folder).glob("*/config.json"):
        data = json.loads(cfg.read_text())
        if data.pop("_name_or_path", None) is not None:
            write_text(cfg, json.dumps(data, indent=2, sort_keys=True) + "\n")
