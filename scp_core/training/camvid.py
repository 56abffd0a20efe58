"""Train a profile's model stack on a real dataset: the toy recipe, generalised.

``scpdiff train --profile camvid`` (or :func:`train_stack`) runs, with the pretrained TAEF2
autoencoder in place of a trained VAE (:mod:`scp_core.taef2`):

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
stage and skips finished ones). The pipeline goes to ``<out>/pipeline`` (float16 weights;
the autoencoder's weights are not copied: its folder holds only its config and it loads
from the weights folder), the segmenter to ``<out>/segmenter``, the report to
``<out>/REPORT.md`` with its figures in ``<out>/report/``: nothing is written outside
``out`` and ``work``.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import _tv_compat  # noqa: F401
from ..data import REPO_ROOT, colorize, control_map, get_dataset
from ..io import atomic_path, write_json, write_text
from .loop import TrainConfig

__all__ = ["StackRecipe", "RECIPES", "train_stack", "train_segmenter", "rewrite_report", "load_images", "LatentSet"]


@dataclass
class StackRecipe:
    """What :func:`train_stack` trains for one profile.

    Attributes:
        profile: the study profile (its dataset, options and image size come from
            ``scp_core.study.PROFILES``).
        unet: ``UNet2DConditionModel`` keyword overrides of the toy UNet.
        control_channels: channels of ControlNet's control-map encoder (``len - 1`` stride-2
            convolutions = log2 of the autoencoder's 8x).
        unet_cfg, controlnet_cfg: the two diffusion stages.
        segmenter: keywords of :func:`scp_core.metrics.toy_segmenter.train_toy_segmenter`.
        hflip: add horizontally flipped copies of every training image.
        n_samples: validation maps in the report's sample grid.
    """

    profile: str
    unet: dict
    control_channels: tuple = (16, 32, 64, 128)
    unet_cfg: TrainConfig = field(default_factory=TrainConfig)
    controlnet_cfg: TrainConfig = field(default_factory=TrainConfig)
    segmenter: dict = field(default_factory=dict)
    hflip: bool = True
    n_samples: int = 6
    seed: int = 0


# Sized for about an hour of one CPU thread (measured before the committed run: base UNet
# ~1.2 s/step, ControlNet + decoder ~2.3 s/step at batch 16 on 24 x 32 x 32 latents;
# segmenter ~0.7 s/step on batches of 8 crops of 96 x 128). The committed run shared the
# 2-core machine with other jobs (2-3x slower per step), so the steps were cut while it ran
# (base UNet 800 -> 600 at its checkpoint 500, ControlNet 900 -> 400 and segmenter 700 -> 500;
# the schedule is constant after warm-up, so a cut changes nothing before it).
RECIPES = {
    "camvid": StackRecipe(
        profile="camvid",
        unet=dict(sample_size=(24, 32), in_channels=32, out_channels=32, block_out_channels=(32, 64, 128),
                  down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        unet_cfg=TrainConfig(steps=4000, batch_size=16, lr=3e-4, warmup=100, checkpoint_every=300),
        controlnet_cfg=TrainConfig(steps=1500, batch_size=16, lr=2e-4, warmup=50, checkpoint_every=300),
        segmenter=dict(steps=500, batch_size=8, lr=3e-3, crop=(96, 128), channels=(16, 32, 64, 128)),
    ),
}
# Seconds-sized counts for tests and smoke runs (same code path).
SMALL = dict(unet_cfg=TrainConfig(steps=4, batch_size=2, lr=3e-4, checkpoint_every=2, log_every=1),
             controlnet_cfg=TrainConfig(steps=4, batch_size=2, lr=2e-4, checkpoint_every=2, log_every=1),
             segmenter=dict(steps=3, batch_size=2, crop=(64, 64)), n_samples=2)


def _profile_dataset(profile: str, split: str, data_root=None, limit: int | None = None):
    from ..study import settings

    s = settings(profile, smoke=False)
    ds = get_dataset(s.dataset, root=data_root or s.data_root, split=split, **s.dataset_options)
    return ds, s


def load_images(ds, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A dataset's items as ``uint8 [N, H, W, 3]`` images, label maps ``[N, H, W]`` and names."""
    n = len(ds) if limit is None else min(limit, len(ds))
    imgs, labs, names = [], [], []
    for i in range(n):
        it = ds[i]
        imgs.append(((it["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
        labs.append(it["labels"].numpy().astype(np.uint8))
        names.append(it["name"])
    return np.stack(imgs), np.stack(labs), names


class LatentSet:
    """Raw autoencoder latents of a training set (and its flips), cached in a safetensors file."""

    @staticmethod
    @torch.no_grad()
    def build(vae, images: np.ndarray, path: Path, meta: dict, batch_size: int = 8) -> torch.Tensor:
        """Encode ``images`` (uint8 NHWC) or read ``path`` if it was written for the same ``meta``."""
        from safetensors import safe_open
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        meta = {k: json.dumps(v) for k, v in meta.items()}
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                if f.metadata() == meta:
                    return f.get_tensor("latents")
        out = []
        for s in tqdm(range(0, len(images), batch_size), desc="encoding latents", leave=False):
            x = torch.as_tensor(images[s:s + batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            out.append(vae.encode(x).latent_dist.mean.float())
        z = torch.cat(out).contiguous()
        with atomic_path(path) as tmp:
            save_file({"latents": z}, str(tmp), metadata=meta)
        return z


@torch.no_grad()
def taef2_psnr(vae, images: np.ndarray, batch_size: int = 8) -> list[float]:
    """Per-image round-trip PSNR (dB) of uint8 images through the autoencoder."""
    from .toy import psnr

    vals = []
    for s in range(0, len(images), batch_size):
        x = torch.as_tensor(images[s:s + batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        vals += psnr(vae.decode(vae.encode(x).latent_dist.mean).sample, x).tolist()
    return vals


def _stage_done(work: Path, stage: str, steps: int | None = None) -> bool:
    """A stage finished (with ``steps`` steps, when given: more steps in the recipe continue it)."""
    if not (work / stage / "final" / "config.json").is_file():
        return False
    return steps is None or _facts(work / stage).get("steps") == steps


def train_stack(profile: str = "camvid", out: str | Path | None = None, work: str | Path | None = None,
                data_root=None, resume: str | None = None, recipe: StackRecipe | None = None,
                limit: int | None = None, report: bool = True) -> dict:
    """Train (or resume) the profile's base UNet, ControlNet and segmenter; write pipeline and report.

    Args:
        profile: a key of :data:`RECIPES`.
        out: where the pipeline, segmenter and report go (default ``zoo/<profile>``).
        work: checkpoints, loss logs and the latent cache (default ``runs/<profile>``).
        data_root: the dataset root (default: the profile's, ``SCP_DATA_ROOT`` or ``data/<name>``).
        resume: ``"latest"``: skip finished stages and continue the others from their newest
            checkpoint.
        recipe: override :data:`RECIPES` ``[profile]``.
        limit: use only the first ``limit`` training and validation images (tests).

    Returns:
        the measured facts (also in ``<out>/training_facts.json``).
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    from ..models import controlnet_from_unet, make_scheduler, toy_text_conditioning, toy_unet
    from ..taef2 import TAEF2
    from .loop import (LatentCache, controlnet_loss_fn, fit, fit_scale_factor, prepare_controlnet_training,
                        unet_loss_fn)

    if recipe is None and profile not in RECIPES:
        raise ValueError(f"no training recipe for profile {profile!r}; known: {sorted(RECIPES)} (toy: scp_core.training.toy)")
    recipe = recipe or RECIPES[profile]
    out = Path(out) if out else REPO_ROOT / "zoo" / profile
    work = Path(work) if work else REPO_ROOT / "runs" / profile
    t_all = time.time()
    vae = TAEF2.from_weights()  # fails early, naming the missing file
    train, s = _profile_dataset(profile, "train", data_root)
    val, _ = _profile_dataset(profile, "val", data_root)
    images, labels, names = load_images(train, limit)
    if recipe.hflip:
        images = np.concatenate([images, images[:, :, ::-1]])
        labels = np.concatenate([labels, labels[:, :, ::-1]])
    work.mkdir(parents=True, exist_ok=True)
    facts: dict = {"profile": profile, "dataset": s.dataset, "dataset_options": s.dataset_options,
                   "image_size": list(train.size), "n_train_images": len(names), "hflip": recipe.hflip,
                   "n_train_latents": int(len(images)), "python": platform.python_version(),
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine()}

    # 1. latents (cached) and the scale factor
    t0 = time.time()
    z = LatentSet.build(vae, np.ascontiguousarray(images), work / "latents.safetensors",
                        {"names": names, "size": list(train.size), "hflip": recipe.hflip})
    facts["encode_s"] = round(time.time() - t0, 1)
    scale = fit_scale_factor(z)
    facts["scale_factor"] = round(scale, 5)
    facts["latent_mean"] = round(float(z.mean()), 5)
    cache = LatentCache(z, torch.zeros_like(z), scale)
    cond, uncond = toy_text_conditioning(recipe.seed)
    ddpm = make_scheduler("ddpm")

    # 2. base UNet
    unet_trained = False
    if resume and _stage_done(work, "unet", recipe.unet_cfg.steps):
        unet = UNet2DConditionModel.from_pretrained(work / "unet" / "final")
    else:  # from step 0, or on from the stage's newest checkpoint (also when the recipe has more steps now)
        unet_trained = True
        unet = toy_unet(recipe.seed, **recipe.unet)
        r = fit(unet, unet_loss_fn(cache, ddpm, cond, uncond), len(images), recipe.unet_cfg, work / "unet",
                resume=resume, desc=f"{profile} base UNet")
        unet = r["model"]
        _save_stage(work / "unet", unet, r)
    facts["unet"] = _facts(work / "unet")

    # 3. ControlNet with the UNet decoder unlocked
    controls = lambda idx: control_map(torch.as_tensor(labels[idx]).long(), train.palette,  # noqa: E731
                                       ignore_index=train.ignore_index)
    # a base UNet trained in this call invalidates ControlNet checkpoints made on the old one
    cn_resume = None if unet_trained else resume
    if cn_resume and _stage_done(work, "controlnet", recipe.controlnet_cfg.steps) and _stage_done(work, "controlnet_unet"):
        cn = ControlNetModel.from_pretrained(work / "controlnet" / "final")
        unet = UNet2DConditionModel.from_pretrained(work / "controlnet_unet" / "final")
    else:
        model, unlocked = prepare_controlnet_training(
            controlnet_from_unet(unet, conditioning_embedding_out_channels=recipe.control_channels), unet, unlock=True)
        r = fit(model, controlnet_loss_fn(cache, controls, ddpm, cond, uncond), len(images), recipe.controlnet_cfg,
                work / "controlnet", resume=cn_resume, desc=f"{profile} ControlNet")
        cn, unet = r["model"].controlnet, r["model"].unet
        unet.save_pretrained(work / "controlnet_unet" / "final")
        _save_stage(work / "controlnet", cn, r, unlocked_unet_tensors=len(unlocked))
    facts["controlnet"] = _facts(work / "controlnet")

    # 4. segmenter (the toy segmenter's recipe), scored on real validation images
    seg, seg_log = _segmenter_stage(images, labels, train, recipe, work / "segmenter", resume)
    val_images, val_labels, _ = load_images(val, limit)
    t0 = time.time()
    facts["taef2_psnr_val_db"] = round(float(np.mean(taef2_psnr(vae, val_images))), 2)
    facts["taef2_psnr_n"] = int(len(val_images))
    facts["taef2_psnr_s"] = round(time.time() - t0, 1)
    seg_eval = _evaluate_segmenter(seg, val_images, val_labels, train)
    facts["segmenter"] = {"steps": seg_log["steps_done"], "wall_s": seg_log["wall_time_s"],
                          "loss_last_50": round(seg_log["loss_last_50"], 4),
                          "val_miou": round(seg_eval["miou"], 4), "val_acc": round(seg_eval["acc"], 4),
                          "val_ci": seg_eval["ci"], "n_val": int(len(val_images))}
    facts["total_wall_s"] = round(time.time() - t_all, 1)

    # 5. the pipeline, the segmenter and the report, all under ``out``
    from ..pipeline import SCPDiffPipeline
    from .toy import save_half

    pipe = SCPDiffPipeline(vae, unet.eval().requires_grad_(False), cn.eval().requires_grad_(False),
                           make_scheduler("ddim"), cond, uncond, num_classes=train.num_classes,
                           palette=train.palette, image_size=train.size, ignore_index=train.ignore_index,
                           scale_factor=scale, info={"profile": profile, "dataset": s.dataset,
                                                     "autoencoder": "TAEF2", "trained": facts})
    save_half(pipe, out / "pipeline")
    scrub_local_paths(out / "pipeline")
    seg.save_pretrained(out / "segmenter", extra_config={"dataset": s.dataset, "image_size": list(train.size)})
    write_json(out / "segmenter" / "training_log.json", seg_log)
    write_json(out / "segmenter" / "val_metrics.json", _seg_summary(seg_eval))
    write_json(out / "training_facts.json", facts)
    if report:
        write_report(out, work, facts, recipe, val_labels, val_images, z, labels)
    return facts


def rewrite_report(profile: str = "camvid", out: str | Path | None = None, work: str | Path | None = None,
                   data_root=None, recipe: StackRecipe | None = None) -> Path:
    """Write ``<out>/REPORT.md`` again from ``<out>/training_facts.json`` and the run folder, without training."""
    from safetensors.torch import load_file

    recipe = recipe or recipe_for(profile)
    out = Path(out) if out else REPO_ROOT / "zoo" / profile
    work = Path(work) if work else REPO_ROOT / "runs" / profile
    facts_path, lat_path = out / "training_facts.json", work / "latents.safetensors"
    for p, what in ((facts_path, "a finished `scpdiff train` run"), (lat_path, "the run's latent cache")):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: the report needs {what}")
    facts = json.loads(facts_path.read_text())
    train, _ = _profile_dataset(profile, "train", data_root)
    val, _ = _profile_dataset(profile, "val", data_root)
    _, labels, _ = load_images(train, facts["n_train_images"])  # the images the run used
    if facts.get("hflip"):
        labels = np.concatenate([labels, labels[:, :, ::-1]])
    val_images, val_labels, _ = load_images(val, facts["taef2_psnr_n"])
    return write_report(out, work, facts, recipe, val_labels, val_images, load_file(str(lat_path))["latents"], labels)


def _segmenter_stage(images, labels, train, recipe: StackRecipe, seg_dir: Path, resume: str | None):
    """Train (or, resuming, load) the segmenter with the toy segmenter's recipe on the training images."""
    from ..metrics.toy_segmenter import ToySegmenter, train_toy_segmenter

    if resume and (seg_dir / "model.safetensors").is_file() and (seg_dir / "config.json").is_file():
        return ToySegmenter.from_pretrained(seg_dir), json.loads((seg_dir / "training_log.json").read_text())
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
    work = Path(work) if work else REPO_ROOT / "runs" / profile
    train, _ = _profile_dataset(profile, "train", data_root)
    images, labels, _ = load_images(train, limit)
    if recipe.hflip:
        images = np.concatenate([images, images[:, :, ::-1]])
        labels = np.concatenate([labels, labels[:, :, ::-1]])
    return _segmenter_stage(images, labels, train, recipe, work / "segmenter", resume=None)


def scrub_local_paths(folder: Path) -> None:
    """Drop diffusers' ``_name_or_path`` (the run folder a component was loaded from: a path of
    the training machine) from the component configs under ``folder``."""
    for cfg in Path(folder).glob("*/config.json"):
        data = json.loads(cfg.read_text())
        if data.pop("_name_or_path", None) is not None:
            write_text(cfg, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_stage(stage_dir: Path, module, r: dict, **extra) -> None:
    write_json(stage_dir / "facts.json", {"steps": r["steps"], "wall_s": round(r["wall_s"], 1),
                                          "final_loss": r["final_loss"], **extra})
    final = stage_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    module.save_pretrained(final)


def _facts(stage_dir: Path) -> dict:
    p = stage_dir / "facts.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _evaluate_segmenter(seg, images, labels, ds) -> dict:
    from ..metrics.segmentation import evaluate_segmentation

    return evaluate_segmentation(images, labels.astype(np.int64), seg, ds.num_classes, ignore_index=ds.ignore_index,
                                 class_names=list(ds.class_names), batch_size=16, keep_per_sample=True,
                                 progress=False)


def _seg_summary(r: dict) -> dict:
    import math

    return {"miou": r["miou"], "acc": r["acc"], "macc": r["macc"], "n_images": r["n_images"], "ci": r["ci"],
            "per_class_iou": {c: (None if math.isnan(v) else round(float(v), 6)) for c, v in r["per_class"]["iou"].items()}}


def _moving_avg(x: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def write_report(out: Path, work: Path, facts: dict, recipe: StackRecipe, val_labels: np.ndarray,
                 val_images: np.ndarray, z: torch.Tensor, train_labels: np.ndarray) -> Path:
    """``<out>/REPORT.md`` with loss curves and samples beside label maps (written only under ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..pipeline import SCPDiffPipeline
    from ..priors import NormalPrior, PriorAccumulator

    fig_dir = out / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    last50 = {}
    for ax, stage in zip(axes, ("unet", "controlnet")):
        csv = work / stage / "loss.csv"
        if csv.is_file():
            df = pd.read_csv(csv)
            last50[stage] = float(df["loss"].tail(50).mean())
            with atomic_path(fig_dir / f"loss_{stage}.csv") as tmp:
                df.to_csv(tmp, index=False)
            ax.plot(df["step"], df["loss"], alpha=0.3, lw=0.8, label="loss")
            ax.plot(df["step"], _moving_avg(df["loss"].to_numpy(), 50), lw=1.5, label="moving avg (50)")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        ax.set_title({"unet": "base UNet", "controlnet": "ControlNet + unlocked decoder"}[stage], fontsize=9)
    fig.tight_layout()
    with atomic_path(fig_dir / "loss.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    pipe = SCPDiffPipeline.from_pretrained(out / "pipeline", device="cpu", dtype=torch.float32)
    n = min(recipe.n_samples, len(val_labels))
    pick = np.linspace(0, len(val_labels) - 1, n).round().astype(int)  # spread over the sequence
    val_labels, val_images = val_labels[pick], val_images[pick]
    lab = torch.as_tensor(val_labels).long()
    acc = PriorAccumulator(pipe.prior_num_classes, pipe.latent_shape)
    acc.update(z.float() * pipe.scale_factor, pipe.prior_labels(torch.as_tensor(train_labels).long()))
    joint = acc.joint(min_count=5)
    t0 = time.time()
    normal = pipe(lab, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=20,
                  seed=0, output_type="np", progress=False).images
    joint_s = pipe(lab, prior=joint, mu=0.8, num_inference_steps=20, seed=0, output_type="np", progress=False).images
    sample_s = time.time() - t0
    rec = ((pipe.decode(pipe.encode(torch.as_tensor(val_images[:n]).permute(0, 3, 1, 2).float().div(127.5).sub(1),
                                    sample=False)) + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    rows = [("label map", colorize(val_labels[:n], pipe.palette)), ("real", val_images[:n]),
            ("TAEF2 round trip", rec), ("normal, mu=1", normal), ("joint, mu=0.8", joint_s)]
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 1.75 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(imgs[c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{facts['profile']}: validation maps {pick.tolist()}, real images and samples "
                 f"(20 DDIM steps, seeds 0..{n - 1})", fontsize=9)
    fig.tight_layout()
    with atomic_path(fig_dir / "samples.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    size_mb = sum(p.stat().st_size for p in (out / "pipeline").rglob("*") if p.is_file()) / 2**20
    seg_mb = sum(p.stat().st_size for p in (out / "segmenter").rglob("*") if p.is_file()) / 2**20
    u, c, sg = facts["unet"], facts["controlnet"], facts["segmenter"]
    cfg_rows = "\n".join(f"| {name} | {cfg.steps} | {cfg.batch_size} | {cfg.lr:g} | {cfg.warmup} |"
                         for name, cfg in (("base UNet", recipe.unet_cfg), ("ControlNet", recipe.controlnet_cfg)))
    ci = sg["val_ci"]
    text = f"""# The {facts['profile']} model zoo

Trained from scratch by `scpdiff train --profile {facts['profile']}` on {facts['n_train_images']} training images
of {facts['dataset']} ({facts['image_size'][0]} x {facts['image_size'][1]}; dataset options
`{json.dumps(facts['dataset_options'])}`; horizontal flips {'added' if facts['hflip'] else 'not used'}:
{facts['n_train_latents']} latents), on a CPU with {facts['threads']} thread(s), torch {facts['torch']}.
The autoencoder is the pretrained TAEF2 (8x, 32 latent channels), not trained here; its weights
are read from the weights folder and not stored in `pipeline/vae/` (only its config).
Weights: `pipeline/` (diffusers folders, float16 safetensors, {size_mb:.1f} MB) and `segmenter/`
({seg_mb:.1f} MB).

| stage | steps | batch | lr | warmup |
|---|---|---|---|---|
{cfg_rows}

Measured:

| what | value |
|---|---|
| TAEF2 round-trip PSNR, {facts['taef2_psnr_n']} validation images | {facts['taef2_psnr_val_db']} dB |
| latent scale factor (1 / std of the training latents; their mean is {facts['latent_mean']}) | {facts['scale_factor']} |
| encoding the training latents, or reading them from the run's cache when resumed | {facts['encode_s']} s |
| base UNet: steps, wall time of the sitting that finished it, last loss, mean loss of the last 50 steps | {u.get('steps')}, {u.get('wall_s')} s, {u.get('final_loss', float('nan')):.4f}, {last50.get('unet', float('nan')):.4f} |
| ControlNet (+ {c.get('unlocked_unet_tensors')} unlocked UNet decoder tensors): steps, wall time of the sitting that finished it, last loss, mean of the last 50 | {c.get('steps')}, {c.get('wall_s')} s, {c.get('final_loss', float('nan')):.4f}, {last50.get('controlnet', float('nan')):.4f} |
| segmenter: steps, wall time, mean loss of the last 50 steps | {sg['steps']}, {sg['wall_s']} s, {sg['loss_last_50']} |
| segmenter on {sg['n_val']} real validation images: mIoU / pixel accuracy | {100 * sg['val_miou']:.2f} [{100 * ci['miou'][0]:.2f}, {100 * ci['miou'][1]:.2f}] / {100 * sg['val_acc']:.2f} [{100 * ci['acc'][0]:.2f}, {100 * ci['acc'][1]:.2f}] |
| wall time of the last `scpdiff train` invocation (before this report) | {facts['total_wall_s']} s |
| sampling the grid below (2 x {n} images, 20 DDIM steps) | {sample_s:.1f} s |

Bracketed: 95 % bootstrap intervals over images. Segmenter mIoU is over the 11 classes (void ignored).

![loss curves](report/loss.png)

![samples](report/samples.png)

Rows: the validation label map, the real image, its TAEF2 round trip (the sharpness ceiling),
plain ControlNet sampling (normal prior, mu = 1) and the joint prior at mu = 0.8 (prior from
all training latents, min_count 5).
"""
    notes = work / "NOTES.md"  # what happened between sittings, written by whoever ran them
    if notes.is_file():
        text += "\n## How the run went\n\n" + notes.read_text().strip() + "\n"
    return write_text(out / "REPORT.md", text)


def recipe_for(profile: str, small: bool = False) -> StackRecipe:
    """The profile's recipe (``small``: seconds-sized counts, same code path)."""
    if profile not in RECIPES:
        raise ValueError(f"no training recipe for profile {profile!r}; known: {sorted(RECIPES)}")
    return replace(RECIPES[profile], **SMALL) if small else RECIPES[profile]


def recipe_dict(recipe: StackRecipe) -> dict:
    return asdict(recipe)
