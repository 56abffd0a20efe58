"""The toy model zoo: train the toy stack on toy-city from scratch, and load it.

``scpdiff train --profile toy`` (or :func:`train_toy_stack`) runs three stages, each with
:func:`scp_core.training.loop.fit` (checkpoints and ``--resume latest`` included):

1. the VAE on the images of both toy regimes, daylight toy-city and toy-city-gv (the same
   layouts under a per-image global lighting factor), then LDM's scale factor ``1 / std``
   of their latents;
2. the base UNet on those latents with the fixed toy "prompt" (10 % null prompt for CFG),
   so the base model has seen day and night before any ControlNet is fine-tuned;
3. ControlNet fine-tuning on daylight toy-city with the colour-coded label map, the UNet
   decoder unlocked (:func:`train_toy_gv` runs this stage on toy-city-gv from the same base).

The result is written with ``SCPDiffPipeline.save_pretrained`` to ``zoo/toy/pipeline``
(float16 weights, loaded back as float32) with a training report in ``zoo/toy/REPORT.md``.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import _tv_compat  # noqa: F401
from ..data import REPO_ROOT, ToyCity, colorize, control_map
from ..io import atomic_path, write_json, write_text
from ..models import (controlnet_from_unet, make_scheduler, toy_text_conditioning, toy_unet, toy_vae)
from ..pipeline import TOY_PIPELINE_DIR, SCPDiffPipeline, load_pipeline
from ..priors import MIN_COUNT, NormalPrior
from ..reference import reference_accumulator
from .loop import (LatentCache, TrainConfig, controlnet_loss_fn, fit, fit_scale_factor,
                    prepare_controlnet_training, unet_loss_fn, vae_loss_fn)

ZOO = REPO_ROOT / "zoo" / "toy"
PIPELINE_DIR = TOY_PIPELINE_DIR
GV_PIPELINE_DIR = REPO_ROOT / "zoo" / "toy-gv" / "pipeline"
RUNS = REPO_ROOT / "runs" / "toy"
# The toy-gv stack retrained under zero terminal SNR (``models.ZERO_SNR_SCHEDULER_CONFIG``), same VAE:
# the experiment that asks whether SD's schedule keeps plain ControlNet from painting night (issue 13).
GV_ZERO_SNR_PIPELINE_DIR = REPO_ROOT / "zoo" / "toy-gv-zero-snr" / "pipeline"


def runs_dir(name: str = "toy", schedule: str = "sd") -> Path:
    """Checkpoint folder of a toy run: ``runs/<name>``, or ``runs/<name>-<schedule>`` for another schedule."""
    return RUNS.with_name(name if schedule == "sd" else f"{name}-{schedule}")


def base_schedule(base_work: Path) -> str:
    """The noise schedule the base UNet under ``base_work`` was trained with (``sd`` for runs before the option)."""
    return _stage_facts(Path(base_work) / "unet").get("schedule", "sd")

# What the VAE and the base UNet are trained on: both regimes, so the base model can paint the
# global factor that toy-city-gv varies (issue 13); each ControlNet then sees one regime.
BASE_DATASETS = ("toy-city", "toy-city-gv")

# The committed zoo was trained with these (about 75 minutes on a 2-core CPU).
FULL = dict(vae=TrainConfig(steps=3000, batch_size=8, lr=1e-3, warmup=100, checkpoint_every=250),
            vae_anneal=TrainConfig(steps=600, batch_size=8, lr=1e-4, seed=1, checkpoint_every=300),
            unet=TrainConfig(steps=1200, batch_size=16, lr=3e-4, warmup=100, checkpoint_every=300),
            controlnet=TrainConfig(steps=1500, batch_size=16, lr=2e-4, warmup=50, checkpoint_every=300))
# A few minutes, for the training notebook and smoke runs.
SMALL = dict(vae=TrainConfig(steps=60, batch_size=8, lr=5e-4, log_every=5), vae_anneal=None,
             unet=TrainConfig(steps=60, batch_size=16, lr=3e-4, log_every=5),
             controlnet=TrainConfig(steps=60, batch_size=16, lr=2e-4, log_every=5))


def _stage_facts(stage_dir: Path, r: dict | None = None, **extra) -> dict:
    """Write (after training, with ``extra`` facts) or read (when a stage is reused) ``stage_dir/facts.json``."""
    path = Path(stage_dir) / "facts.json"
    if r is not None:
        write_json(path, {"steps": r["steps"], "wall_s": round(r["wall_s"], 1), "final_loss": r["final_loss"], **extra})
    return json.loads(path.read_text()) if path.is_file() else {}


def base_images(n_train: int = 4000, datasets=BASE_DATASETS) -> np.ndarray:
    """The first ``n_train`` training images of each of ``datasets``, concatenated (uint8 ``[N, H, W, 3]``):
    what the toy VAE, its latent scale factor and the base UNet are fitted on."""
    from ..data import get_dataset

    return np.concatenate([get_dataset(name, split="train").images[:n_train] for name in datasets])


def anneal_vae(vae, images: np.ndarray, cfg: TrainConfig | None, vae_work: Path, resume: str | None = None):
    """The VAE stage's second phase: the same loss at a tenth of the learning rate.

    The constant-lr phase leaves the weights bouncing around a minimum; a short phase at a
    low rate settles them (600 steps at 1e-4 took the toy VAE from 24.81 to 25.48 dB PSNR, ``zoo/toy/REPORT.md``).
    Checkpoints, loss log and facts go to ``vae_work/anneal``; ``cfg=None`` skips the phase.
    """
    if cfg is None:
        return vae
    r = fit(vae, vae_loss_fn(images), len(images), cfg, Path(vae_work) / "anneal", resume=resume,
            desc="toy VAE, low-lr phase")
    _stage_facts(Path(vae_work) / "anneal", r)
    return r["model"]


def toy_models(seed: int = 0):
    """Fresh toy components at the zoo's sizes."""
    vae = toy_vae(seed)
    unet = toy_unet(seed)
    return vae, unet


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


@torch.no_grad()
def vae_psnr(vae, images: np.ndarray, batch_size: int = 64) -> float:
    """Mean reconstruction PSNR (posterior mean) over uint8 images ``[N, H, W, 3]``."""
    vals = []
    for s in range(0, len(images), batch_size):
        x = torch.as_tensor(images[s:s + batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        x = x.to(next(vae.parameters()).device)  # wherever training left the VAE (accelerate's device)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        vals.append(psnr(rec.float(), x).cpu())
    return float(torch.cat(vals).mean())


def train_toy_stack(configs: dict | None = None, out: str | Path = PIPELINE_DIR, work: str | Path = RUNS,
                    resume: str | None = None, stages=("vae", "unet", "controlnet"), seed: int = 0,
                    n_train: int = 4000, report: bool = True, schedule: str = "sd",
                    vae_work: str | Path | None = None) -> dict:
    """Train the toy stack from scratch (or resume it) and write the pipeline folder.

    Args:
        configs: ``{"vae": TrainConfig, "unet": ..., "controlnet": ...}`` (default: :data:`FULL`).
        out: where the trained pipeline goes.
        work: checkpoints and loss logs of each stage.
        resume: ``"latest"`` to continue each stage from its newest checkpoint.
        stages: which stages to (re)train; the VAE and base UNet are loaded from ``work``
            when not named. Without ``"controlnet"`` the run stops after the base UNet and
            writes no pipeline (so the two ControlNets can then train side by side).
        schedule: the noise schedule of the UNet and ControlNet stages (``sd`` or ``zero-snr``,
            :func:`scp_core.models.make_scheduler`); the VAE does not depend on it.
        vae_work: where a VAE that is not retrained is read from (default ``work``), so a run
            under another schedule shares the committed stack's VAE and latent space.

    Returns:
        dict of measured facts (steps, wall times, final losses, VAE PSNR, scale factor).
    """
    configs = {**FULL, **(configs or {})}
    work, out = Path(work), Path(out)
    vae_work = Path(vae_work) if vae_work else work
    work.mkdir(parents=True, exist_ok=True)
    train = ToyCity(split="train")
    val = ToyCity(split="val")
    images = base_images(n_train)
    facts: dict = {"python": platform.python_version(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "n_train": n_train, "base_datasets": list(BASE_DATASETS),
                   "n_base_images": int(len(images)), "schedule": schedule}
    t_all = time.time()

    vae, unet = toy_models(seed)
    # 1. VAE
    if "vae" in stages or not (vae_work / "vae" / "final").is_dir():
        vae_work = work
        r = fit(vae, vae_loss_fn(images), len(images), configs["vae"], work / "vae", resume=resume, desc="toy VAE")
        facts["vae"] = _stage_facts(work / "vae", r)
        vae = anneal_vae(r["model"], images, configs.get("vae_anneal"), work / "vae", resume=resume)
        vae.save_pretrained(work / "vae" / "final")
    else:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL.from_pretrained(vae_work / "vae" / "final")
        facts["vae"] = _stage_facts(vae_work / "vae")
    if anneal := _stage_facts(vae_work / "vae" / "anneal"):
        facts["vae_anneal"] = anneal
    vae.eval().requires_grad_(False)
    facts["vae_psnr_val_db"] = round(vae_psnr(vae, val.images[:256]), 2)
    facts["vae_psnr_val_gv_db"] = round(vae_psnr(vae, ToyCity(split="val", global_variation=1.0).images[:256]), 2)

    # 2. latents of both regimes and the scale factor
    cache = LatentCache.build(vae, images, scale_factor=1.0)
    scale = fit_scale_factor(cache.mean)
    cache.scale_factor = scale
    facts["scale_factor"] = round(scale, 5)
    cond, uncond = toy_text_conditioning(seed)
    ddpm = make_scheduler("ddpm", schedule)

    # 3. base UNet
    if "unet" in stages or not (work / "unet" / "final").is_dir():
        r = fit(unet, unet_loss_fn(cache, ddpm, cond, uncond), len(images), configs["unet"], work / "unet",
                resume=resume, desc="toy base UNet")
        unet = r["model"]
        unet.save_pretrained(work / "unet" / "final")
        facts["unet"] = _stage_facts(work / "unet", r, schedule=schedule)
    else:
        from diffusers import UNet2DConditionModel
        _same_schedule(work, schedule)
        unet = UNet2DConditionModel.from_pretrained(work / "unet" / "final")
        facts["unet"] = _stage_facts(work / "unet")

    if "controlnet" not in stages:
        facts["total_wall_s"] = round(time.time() - t_all, 1)
        return facts

    # 4. ControlNet fine-tuning on daylight toy-city (decoder unlocked, the authors' sd_locked=False)
    cache = LatentCache(cache.mean[:n_train], cache.std[:n_train], scale)  # the toy-city part
    controlnet = controlnet_from_unet(unet)
    labels = train.labels[:n_train]
    controls = lambda idx: control_map(torch.as_tensor(labels[idx]).long(), train.palette)  # noqa: E731
    model, unlocked = prepare_controlnet_training(controlnet, unet, unlock=True)
    r = fit(model, controlnet_loss_fn(cache, controls, ddpm, cond, uncond), len(labels), configs["controlnet"],
            work / "controlnet", resume=resume, desc="toy ControlNet")
    model = r["model"]
    facts["controlnet"] = {**_stage_facts(work / "controlnet", r), "unlocked_unet_tensors": len(unlocked)}
    facts["total_wall_s"] = round(time.time() - t_all, 1)

    pipe = SCPDiffPipeline(vae, model.unet.eval().requires_grad_(False), model.controlnet.eval().requires_grad_(False),
                           make_scheduler("ddim", schedule), cond, uncond, num_classes=train.num_classes,
                           palette=train.palette, image_size=train.size, ignore_index=None, scale_factor=scale,
                           info={"profile": "toy", "dataset": "toy-city", "prompt": train.prompt,
                                 "trained": facts})
    save_half(pipe, out)
    if report:
        write_report(load_pipeline(out, device="cpu", dtype=torch.float32), facts, configs, work, report_dir=out.parent)
    return facts


def _same_schedule(base_work: Path, schedule: str) -> None:
    """Refuse to build on a base UNet trained under another noise schedule than the one asked for."""
    trained = base_schedule(base_work)
    if trained != schedule:
        raise ValueError(f"the base UNet in {Path(base_work).name}/unet was trained with the {trained!r} schedule, "
                         f"not {schedule!r}; train one first (`scpdiff train --profile toy --schedule {schedule} "
                         "--stage unet`) or ask for its schedule")


def save_half(pipe: SCPDiffPipeline, out: Path) -> None:
    """Save with float16 weights (half the size in git), keeping the pipeline in float32."""
    pipe.to(dtype=torch.float16)
    try:
        pipe.save_pretrained(out)
    finally:
        pipe.to(dtype=torch.float32)


def toy_joint_prior(pipe: SCPDiffPipeline, n: int = 1000, seed: int = 0, min_count: int = MIN_COUNT):
    """A joint prior from the first ``n`` toy-city training images (for the report), by the
    project's one reference-set convention (:func:`scp_core.reference.reference_accumulator`)."""
    return reference_accumulator(pipe, ToyCity(split="train"), n, seed=seed).joint(min_count=min_count)


def write_report(pipe: SCPDiffPipeline, facts: dict, configs: dict, work: Path, report_dir: str | Path) -> Path:
    """``<report_dir>/REPORT.md`` with the loss curves and a grid of samples next to masks and real images.

    ``report_dir`` is the folder holding the trained pipeline (``zoo/toy`` for the committed
    zoo): the report, its figures and ``training_facts.json`` describe that pipeline only, so
    training elsewhere (``scpdiff train --out X``) never touches the committed zoo's report.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shutil

    report_dir = Path(report_dir)
    fig_dir = report_dir / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for stage in ("vae", "vae/anneal", "unet", "controlnet"):
        if (work / stage / "loss.png").is_file():
            name = stage.replace("/", "_")
            shutil.copy(work / stage / "loss.png", fig_dir / f"loss_{name}.png")
            shutil.copy(work / stage / "loss.csv", fig_dir / f"loss_{name}.csv")
    val = ToyCity(split="val")
    idx = np.arange(6)
    lab = torch.as_tensor(val.labels[idx]).long()
    normal = pipe(lab, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=20, seed=0, output_type="np").images
    joint = pipe(lab, prior=toy_joint_prior(pipe), mu=0.8, num_inference_steps=20, seed=0, output_type="np").images
    rows = [("mask", colorize(val.labels[idx], val.palette)), ("real", val.images[idx]),
            ("normal, mu=1", normal), ("joint, mu=0.8", joint)]
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(2.2 * len(idx), 1.25 * len(rows)))
    for r, (name, imgs) in enumerate(rows):
        for c in range(len(idx)):
            axes[r, c].imshow(imgs[c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("toy ControlNet samples (20 DDIM steps, seed 0) beside their masks and real images", fontsize=9)
    fig.tight_layout()
    with atomic_path(fig_dir / "samples.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    write_json(report_dir / "training_facts.json", facts)
    cfg_md = "\n".join(f"| {k} | {v.steps} | {v.batch_size} | {v.lr:g} | {v.warmup} |" for k, v in configs.items() if v is not None)
    pipe_dir = report_dir / "pipeline"
    size_mb = sum(p.stat().st_size for p in pipe_dir.rglob("*") if p.is_file()) / 2**20
    text = f"""# The toy model zoo

Trained from scratch by `scpdiff train --profile toy` on a CPU ({facts['threads']} threads), torch
{facts['torch']}: the VAE and the base UNet on {facts.get('n_base_images', facts['n_train'])} images
({' + '.join(facts.get('base_datasets', ['toy-city']))}, {facts['n_train']} training images each,
64 x 128), the ControlNet on the {facts['n_train']} toy-city ones.
Weights: `pipeline/` beside this report (diffusers folders, float16 safetensors, {size_mb:.1f} MB).

| stage | steps | batch | lr | warmup |
|---|---|---|---|---|
{cfg_md}

Measured:

| what | value |
|---|---|
| VAE reconstruction PSNR, 256 toy-city validation images (posterior mean) | {facts['vae_psnr_val_db']} dB |
| the same on 256 toy-city-gv validation images | {facts.get('vae_psnr_val_gv_db', 'not measured')} dB |
| latent scale factor (1 / std of training latents) | {facts['scale_factor']} |
| VAE: steps, wall time, final loss | {facts.get('vae', {}).get('steps')}, {facts.get('vae', {}).get('wall_s')} s, {facts.get('vae', {}).get('final_loss', float('nan')):.4f} |
| VAE, low-lr phase: steps, wall time, final loss | {facts.get('vae_anneal', {}).get('steps')}, {facts.get('vae_anneal', {}).get('wall_s')} s, {facts.get('vae_anneal', {}).get('final_loss', float('nan')):.4f} |
| base UNet: steps, wall time, final loss | {facts.get('unet', {}).get('steps')}, {facts.get('unet', {}).get('wall_s')} s, {facts.get('unet', {}).get('final_loss', float('nan')):.4f} |
| ControlNet (+ unlocked decoder): steps, wall time, final loss | {facts['controlnet']['steps']}, {facts['controlnet']['wall_s']} s, {facts['controlnet']['final_loss']:.4f} |
| sum of the stages' training wall times | {sum(facts.get(k, {}).get('wall_s') or 0 for k in ('vae', 'vae_anneal', 'unet', 'controlnet')):.0f} s |
| wall time of the last `scpdiff train` invocation (incl. encoding and evaluation) | {facts['total_wall_s']} s |

Loss curves: [VAE](report/loss_vae.png) ([low-lr phase](report/loss_vae_anneal.png)), [base UNet](report/loss_unet.png),
[ControlNet](report/loss_controlnet.png).

![samples](report/samples.png)

Rows: the validation mask, the real image, plain ControlNet sampling (normal prior,
mu = 1) and the joint prior at mu = 0.8 (prior from 1,000 training images, min_count 5).
"""
    return write_text(report_dir / "REPORT.md", text)


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
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..data import get_dataset

    cfg = cfg or FULL["controlnet"]
    base_work = Path(base_work)
    _same_schedule(base_work, schedule)
    # the VAE the base UNet was trained on: vae_work's, or base_work's own when that run trained one
    vae_dir = next((d for d in (Path(vae_work or base_work) / "vae" / "final", base_work / "vae" / "final") if d.is_dir()),
                   None)
    if vae_dir is None:
        raise FileNotFoundError(f"no trained toy VAE under {Path(vae_work or base_work).name}/vae/final or "
                                f"{base_work.name}/vae/final; train the toy stack first (`scpdiff train --profile toy`)")
    vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base_work / "unet" / "final")
    t0 = time.time()
    scale = fit_scale_factor(LatentCache.build(vae, base_images(n_train), scale_factor=1.0).mean)
    train = get_dataset("toy-city-gv", split="train")
    images, labels = train.images[:n_train], train.labels[:n_train]
    cache = LatentCache.build(vae, images, scale_factor=scale)
    cond, uncond = toy_text_conditioning(seed)
    controls = lambda idx: control_map(torch.as_tensor(labels[idx]).long(), train.palette)  # noqa: E731
    model, unlocked = prepare_controlnet_training(controlnet_from_unet(unet), unet, unlock=True)
    r = fit(model, controlnet_loss_fn(cache, controls, make_scheduler("ddpm", schedule), cond, uncond), len(images),
            cfg, work, resume=resume, desc="toy-gv ControlNet")
    base = base_work.resolve()
    facts = {"base": str(base.relative_to(REPO_ROOT)) if base.is_relative_to(REPO_ROOT) else base.name,
             "dataset": "toy-city-gv", "schedule": schedule, "scale_factor": round(scale, 5), "steps": r["steps"],
             "wall_s": round(r["wall_s"], 1), "total_wall_s": round(time.time() - t0, 1),
             "final_loss": r["final_loss"], "unlocked_unet_tensors": len(unlocked), "config": asdict(cfg),
             "base_unet": _stage_facts(base_work / "unet")}
    model = r["model"]
    pipe = SCPDiffPipeline(vae, model.unet.eval().requires_grad_(False), model.controlnet.eval().requires_grad_(False),
                           make_scheduler("ddim", schedule), cond, uncond, num_classes=train.num_classes,
                           palette=train.palette, image_size=train.size, scale_factor=scale,
                           info={"profile": "toy-gv", "dataset": "toy-city-gv", "prompt": train.prompt, "trained": facts})
    save_half(pipe, Path(out))
    write_json(Path(out).parent / "training_facts.json", facts)
    import shutil
    shutil.copy(Path(work) / "loss.png", Path(out).parent / "loss_controlnet.png")
    shutil.copy(Path(work) / "loss.csv", Path(out).parent / "loss_controlnet.csv")
    if schedule != "sd":  # this run's base UNet is not the committed toy zoo's: keep its loss curve beside it
        for ext in ("png", "csv"):
            if (base_work / "unet" / f"loss.{ext}").is_file():
                shutil.copy(base_work / "unet" / f"loss.{ext}", Path(out).parent / f"loss_base_unet.{ext}")
    return facts
