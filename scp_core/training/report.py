"""The training reports: ``REPORT.md`` beside a trained pipeline, with its loss curves and a sample grid.

Both reports (:func:`write_toy_report`, :func:`write_camvid_report`) share the header, the recipe
table, the table of measured facts, the loss logs and the grid of samples (plain ControlNet
sampling and the joint prior beside label maps and real images); each adds its stack's rows.
Everything is written under the report's folder only.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..data import ToyCity, colorize, images_labels, to_float, to_uint8
from ..io import atomic_path, write_json, write_text
from ..metrics.colour import colour_figure, colour_spread
from ..pipeline import SCPDiffPipeline
from ..priors import MIN_COUNT, NormalPrior
from ..reference import reference_accumulator
from . import memorisation
from .recipes import StackRecipe

NAN = float("nan")


# ---------------------------------------------------------------------------- shared parts
def header(profile: str) -> str:
    return f"# The {profile} model zoo\n\nTrained from scratch by `scpdiff train --profile {profile}`"


def recipe_table(configs) -> str:
    """``configs``: ``(stage name, TrainConfig)`` pairs, as a markdown table."""
    rows = "\n".join(f"| {k} | {v.steps} | {v.batch_size} | {v.lr:g} | {v.warmup} | {v.schedule} | "
                     f"{v.ema_decay or 'none'} |" for k, v in configs)
    return f"| stage | steps | batch | lr | warmup | schedule | EMA decay |\n|---|---|---|---|---|---|---|\n{rows}"


def measured_table(rows) -> str:
    """``rows``: ``(what, value)`` pairs, as the report's table of measured facts."""
    return "Measured:\n\n| what | value |\n|---|---|\n" + "\n".join(f"| {what} | {value} |" for what, value in rows)


def stage_cell(facts: dict) -> str:
    """A training stage's ``steps, wall time, final loss``."""
    return f"{facts.get('steps')}, {facts.get('wall_s')} s, {facts.get('final_loss', NAN):.4f}"


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def copy_loss_logs(stage_dirs: dict, dest: Path, exts=("png", "csv")) -> None:
    """``stage_dir/loss.{png,csv}`` of each ``{name: stage_dir}`` to ``dest/loss_<name>.{png,csv}``, where present."""
    for name, stage_dir in stage_dirs.items():
        for ext in exts:
            if (Path(stage_dir) / f"loss.{ext}").is_file():
                shutil.copy(Path(stage_dir) / f"loss.{ext}", Path(dest) / f"loss_{name}.{ext}")


def write_seed_report(out: Path, title: str, about: str) -> Path:
    """``REPORT.md`` of a training-seed folder (the ControlNet stage again with another training seed), from its
    ``training_facts.json``: ``title``, ``about`` (what was trained and how it loads), then what it took."""
    facts = json.loads((Path(out) / "training_facts.json").read_text())
    cfg = facts["config"]
    rows = [("training seed", facts["training_seed"]), ("steps", facts["steps"]), ("batch", cfg["batch_size"]),
            ("learning rate", cfg["lr"]), ("warmup", cfg["warmup"]),
            ("UNet tensors trained with the ControlNet (decoder unlocked)", facts["unlocked_unet_tensors"]),
            ("final loss", round(facts["final_loss"], 5)), ("wall time of the stage", f"{facts['wall_s']} s"),
            ("threads", facts["threads"]), ("torch", facts["torch"])]
    if facts.get("base_unet"):
        rows.insert(1, ("base UNet", facts["base_unet"]))
    text = (f"# {title}\n\n{about}\n\n"
            "| what | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
            + (f"\n{facts['note'][0].upper() + facts['note'][1:]}.\n" if facts.get("note") else "")
            + "\n![loss](loss_controlnet.png)\n")
    return write_text(Path(out) / "REPORT.md", text)


def _pyplot():
    import matplotlib  # slow to import: only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

    return plt


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def sample_grid(rows, title: str, path: Path, row_height: float) -> None:
    """``rows``: ``(name, images)`` pairs, the same number of images in each, one grid row per pair."""
    plt = _pyplot()
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, row_height * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(imgs[c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def joint_prior(pipe: SCPDiffPipeline, ds, n: int, seed: int = 0, min_count: int = MIN_COUNT):
    """A joint prior from the first ``n`` images of ``ds``, by the project's one reference-set
    convention (:func:`scp_core.reference.reference_accumulator`)."""
    return reference_accumulator(pipe, ds, n, seed=seed).joint(min_count=min_count)


def prior_samples(pipe: SCPDiffPipeline, labels: torch.Tensor, joint) -> tuple[np.ndarray, np.ndarray]:
    """Plain ControlNet sampling (normal prior, mu = 1) and the joint prior at mu = 0.8 (20 DDIM steps, seed 0)."""
    normal = pipe(labels, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=20,
                  seed=0, output_type="np", progress=False).images
    return normal, pipe(labels, prior=joint, mu=0.8, num_inference_steps=20, seed=0, output_type="np",
                        progress=False).images


# ---------------------------------------------------------------------------- the toy stack
def write_toy_report(pipe: SCPDiffPipeline, facts: dict, configs: dict, work: Path, report_dir: str | Path,
                     prior_n: int = 1000) -> Path:
    """``<report_dir>/REPORT.md`` with the loss curves and a grid of samples next to masks and real images.

    ``report_dir`` is the folder holding the trained pipeline (``zoo/toy`` for the committed
    zoo): the report, its figures and ``training_facts.json`` describe that pipeline only, so
    training elsewhere (``scpdiff train --out X``) never touches the committed zoo's report.
    ``prior_n``: training images of the joint prior's reference set.
    """
    report_dir, work = Path(report_dir), Path(work)
    fig_dir = report_dir / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    copy_loss_logs({s.replace("/", "_"): work / s for s in ("vae", "vae/anneal", "unet", "controlnet")
                    if (work / s / "loss.png").is_file()}, fig_dir)
    val = ToyCity(split="val")
    idx = np.arange(6)
    normal, joint = prior_samples(pipe, torch.as_tensor(val.labels[idx]).long(),
                                  joint_prior(pipe, ToyCity(split="train"), prior_n))
    sample_grid([("mask", colorize(val.labels[idx], val.palette)), ("real", val.images[idx]),
                 ("normal, mu=1", normal), ("joint, mu=0.8", joint)],
                "toy ControlNet samples (20 DDIM steps, seed 0) beside their masks and real images",
                fig_dir / "samples.png", row_height=1.25)
    write_json(report_dir / "training_facts.json", facts)
    stages = ("vae", "vae_anneal", "unet", "controlnet")
    measured = measured_table([
        ("VAE reconstruction PSNR, 256 toy-city validation images (posterior mean)", f"{facts['vae_psnr_val_db']} dB"),
        ("the same on 256 toy-city-gv validation images", f"{facts.get('vae_psnr_val_gv_db', 'not measured')} dB"),
        ("latent scale factor (1 / std of training latents)", facts['scale_factor']),
        ("VAE: steps, wall time, final loss", stage_cell(facts.get('vae', {}))),
        ("VAE, low-lr phase: steps, wall time, final loss", stage_cell(facts.get('vae_anneal', {}))),
        ("base UNet: steps, wall time, final loss", stage_cell(facts.get('unet', {}))),
        ("ControlNet (+ unlocked decoder): steps, wall time, final loss", stage_cell(facts['controlnet'])),
        ("sum of the stages' training wall times", f"{sum(facts.get(k, {}).get('wall_s') or 0 for k in stages):.0f} s"),
        ("wall time of the last `scpdiff train` invocation (incl. encoding and evaluation)",
         f"{facts['total_wall_s']} s")])
    size_mb = folder_mb(report_dir / "pipeline")
    text = f"""{header('toy')} on a CPU ({facts['threads']} threads), torch
{facts['torch']}: the VAE and the base UNet on {facts.get('n_base_images', facts['n_train'])} images
({' + '.join(facts.get('base_datasets', ['toy-city']))}, {facts['n_train']} training images each,
64 x 128), the ControlNet on the {facts['n_train']} toy-city ones.
Weights: `pipeline/` beside this report (diffusers folders, float16 safetensors, {size_mb:.1f} MB).

{recipe_table((k, v) for k, v in configs.items() if v is not None)}

{measured}

Loss curves: [VAE](report/loss_vae.png) ([low-lr phase](report/loss_vae_anneal.png)), [base UNet](report/loss_unet.png),
[ControlNet](report/loss_controlnet.png).

![samples](report/samples.png)

Rows: the validation mask, the real image, plain ControlNet sampling (normal prior,
mu = 1) and the joint prior at mu = 0.8 (prior from {prior_n:,} training images, min_count {MIN_COUNT}).
"""
    return write_text(report_dir / "REPORT.md", text)


# ---------------------------------------------------------------------------- real-image stacks
def _moving_avg(x: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def _loss_figure(work: Path, fig_dir: Path) -> dict:
    """Both diffusion stages' loss curves in one figure, their logs beside it; returns each stage's mean
    loss over its last 50 steps."""
    import pandas as pd  # slow to import: only the report reads the logs with it

    fig, axes = _pyplot().subplots(1, 2, figsize=(9, 3.2))
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
    save_figure(fig, fig_dir / "loss.png")
    return last50


def _camvid_samples(pipe: SCPDiffPipeline, facts: dict, recipe: StackRecipe, val_labels: np.ndarray,
                    val_images: np.ndarray, train_ds, fig_dir: Path) -> tuple[int, float]:
    """The sample grid over validation maps spread along the sequence; returns its size and sampling time."""
    n = min(recipe.n_samples, len(val_labels))
    pick = np.linspace(0, len(val_labels) - 1, n).round().astype(int)
    val_labels, val_images = val_labels[pick], val_images[pick]
    joint = joint_prior(pipe, train_ds, facts["n_train_images"], min_count=5)
    t0 = time.time()
    normal, joint_s = prior_samples(pipe, torch.as_tensor(val_labels).long(), joint)
    sample_s = time.time() - t0
    rec = to_uint8(pipe.decode(pipe.encode(to_float(val_images[:n]), sample=False))).numpy()
    sample_grid([("label map", colorize(val_labels[:n], pipe.palette)), ("real", val_images[:n]),
                 ("TAEF2 round trip", rec), ("normal, mu=1", normal), ("joint, mu=0.8", joint_s)],
                f"{facts['profile']}: validation maps {pick.tolist()}, real images and samples "
                f"(20 DDIM steps, seeds 0..{n - 1})", fig_dir / "samples.png", row_height=1.75)
    return n, sample_s


def write_camvid_report(out: Path, work: Path, facts: dict, recipe: StackRecipe, val_labels: np.ndarray,
                        val_images: np.ndarray, train_ds) -> Path:
    """``<out>/REPORT.md`` with loss curves and samples beside label maps (written only under ``out``).

    The joint prior of the samples comes from the first ``facts["n_train_images"]`` images of
    ``train_ds`` by the reference-set convention (:func:`joint_prior`).
    """
    fig_dir = out / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    last50 = _loss_figure(work, fig_dir)
    pipe = SCPDiffPipeline.from_pretrained(out / "pipeline", device="cpu", dtype=torch.float32)
    n, sample_s = _camvid_samples(pipe, facts, recipe, val_labels, val_images, train_ds, fig_dir)
    checks = _checks(pipe, facts, val_labels, val_images, train_ds, fig_dir)
    facts["checks"] = checks
    write_json(out / "training_facts.json", facts)
    u, c, sg = facts["unet"], facts["controlnet"], facts["segmenter"]
    ci = sg["val_ci"]
    measured = measured_table([
        (f"TAEF2 round-trip PSNR, {facts['taef2_psnr_n']} validation images", f"{facts['taef2_psnr_val_db']} dB"),
        (f"latent scale factor (1 / std of the training latents; their mean is {facts['latent_mean']})",
         facts["scale_factor"]),
        ("encoding the training latents, or reading them from the run's cache when resumed", f"{facts['encode_s']} s"),
        ("base UNet: steps, wall time of the sitting that finished it, last loss, mean loss of the last 50 steps",
         f"{stage_cell(u)}, {last50.get('unet', NAN):.4f}"),
        (f"ControlNet (+ {c.get('unlocked_unet_tensors')} unlocked UNet decoder tensors): steps, wall time of the "
         "sitting that finished it, last loss, mean of the last 50",
         f"{stage_cell(c)}, {last50.get('controlnet', NAN):.4f}"),
        ("segmenter: steps, wall time, mean loss of the last 50 steps",
         f"{sg['steps']}, {sg['wall_s']} s, {sg['loss_last_50']}"),
        (f"segmenter on {sg['n_val']} real validation images: mIoU / pixel accuracy",
         f"{100 * sg['val_miou']:.2f} [{100 * ci['miou'][0]:.2f}, {100 * ci['miou'][1]:.2f}] / "
         f"{100 * sg['val_acc']:.2f} [{100 * ci['acc'][0]:.2f}, {100 * ci['acc'][1]:.2f}]"),
        ("wall time of the last `scpdiff train` invocation (before this report)", f"{facts['total_wall_s']} s"),
        (f"sampling the grid below (2 x {n} images, 20 DDIM steps)", f"{sample_s:.1f} s")])
    recipes = recipe_table((("base UNet", recipe.unet_cfg), ("ControlNet", recipe.controlnet_cfg)))
    size_mb, seg_mb = folder_mb(out / "pipeline"), folder_mb(recipe.segmenter_dir(out))
    text = f"""{header(facts['profile'])} on {facts['n_train_images']} training images
of {facts['dataset']} ({facts['image_size'][0]} x {facts['image_size'][1]}; dataset options
`{json.dumps(facts['dataset_options'])}`; horizontal flips {'added' if facts['hflip'] else 'not used'}:
{facts['n_train_latents']} latents), on a CPU with {facts['threads']} thread(s), torch {facts['torch']}.
The autoencoder is the pretrained TAEF2 (8x, 32 latent channels), not trained here; its weights
are read from the weights folder and not stored in `pipeline/vae/` (only its config).
Weights: `pipeline/` (diffusers folders, float16 safetensors, {size_mb:.1f} MB) and the segmenter
{f"reused from `{recipe.segmenter_from}`" if recipe.segmenter_from else "`segmenter/`"} ({seg_mb:.1f} MB).

{recipes}

Noise schedule of both diffusion stages and of the pipeline's sampler: {_schedule_words(facts)}.

{measured}

Bracketed: 95 % bootstrap intervals over images. Segmenter mIoU is over the 11 classes (void ignored).

![loss curves](report/loss.png)

![samples](report/samples.png)

Rows: the validation label map, the real image, its TAEF2 round trip (the sharpness ceiling),
plain ControlNet sampling (normal prior, mu = 1) and the joint prior at mu = 0.8 (prior from
the first {facts['n_train_images']} training images, without flips, min_count 5).
"""
    text += _checks_text(checks)
    notes = work / "NOTES.md"  # what happened between sittings, written by whoever ran them
    if notes.is_file():
        text += "\n## How the run went\n\n" + notes.read_text().strip() + "\n"
    return write_text(out / "REPORT.md", text)


def _schedule_words(facts: dict) -> str:
    """The stack's noise schedule in words (a stack trained before the field existed used SD's)."""
    if facts.get("noise_schedule", "sd") == "zero-snr":
        return ("zero terminal SNR (Lin et al. 2024: SD's betas rescaled so that alpha_bar(999) = 0, v-prediction, "
                "DDIM steps counted from t = 999, 'trailing')")
    return "SD's (scaled-linear betas, epsilon prediction, 'leading' DDIM steps)"


def _checks(pipe: SCPDiffPipeline, facts: dict, val_labels, val_images, train_ds, fig_dir: Path) -> dict:
    """Does the stack paint, does it copy (:mod:`.memorisation`): measured, drawn, and kept in
    ``<out>/training_facts.json``'s ``"checks"`` (without the arrays)."""
    images, _ = images_labels(train_ds, range(min(facts["n_train_images"], len(train_ds))))  # no flips
    train_images = np.ascontiguousarray(images.numpy())
    t0 = time.time()
    result = memorisation.check(pipe, train_images, val_labels, val_images)
    memorisation.figures(result, train_images, fig_dir, save_figure, _pyplot)
    generated = result.pop("arrays")["generated"]
    result["colour"] = colour_spread(generated, val_images, seed=result["seed"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    colour_figure(generated, val_images, ax, label="plain ControlNet samples of the same maps")
    c = result["colour"]
    ax.set_title(f"Per-image mean colour ({_schedule_words(facts).split(' (')[0]} schedule): spread "
                 f"{c['colour']:.2f}x real [{c['colour_ci'][0]:.2f}, {c['colour_ci'][1]:.2f}]", fontsize=9)
    fig.tight_layout()
    save_figure(fig, fig_dir / "colour_cast.png")
    result["wall_s"] = round(time.time() - t0, 1)
    return result


def _checks_text(c: dict) -> str:
    """The report's section on the two checks, every number from ``c``."""
    met = {True: "met", False: "NOT met"}
    ratio = "undefined (floor <= 0)" if c["kid_ratio"] is None else f"{c['kid_ratio']:.2f}"
    rows = [("KID x1e3, samples vs real val frames",
             f"{c['kid_plain_vs_val_x1e3']:.2f} (jackknife s.e. {c['kid_plain_se_x1e3']:.2f})", ""),
            ("KID x1e3, real training frames vs real val frames (the floor)",
             f"{c['kid_train_vs_val_x1e3']:.2f} (s.e. {c['kid_train_se_x1e3']:.2f})", ""),
            ("ratio of the two", ratio, f"at most {c['kid_goal']:g}: {met[c['kid_goal_met']]}"),
            (f"samples nearer to a training frame than the closest val frame is ({c['val_nearest_min']:.2f})",
             f"{100 * c['share_below_closest_val']:.1f} %",
             f"at most {100 * c['share_goal']:g} %: {met[c['share_goal_met']]}"),
            ("samples nearer to a training frame than their own map's real frame is",
             f"{100 * c['share_below_own_val']:.1f} %", ""),
            ("median distance to the nearest training frame: samples / real val frames",
             f"{c['gen_nearest_median']:.2f} / {c['val_nearest_median']:.2f}", "")]
    if "colour" in c:  # checks measured before the colour-cast check have none
        k = c["colour"]
        rows += [("spread of per-image mean colour (R, G, B averaged), samples over real",
                  f"{k['colour']:.2f} [{k['colour_ci'][0]:.2f}, {k['colour_ci'][1]:.2f}]", "1 is real's"),
                 ("spread of per-image brightness, samples over real",
                  f"{k['brightness']:.2f} [{k['brightness_ci'][0]:.2f}, {k['brightness_ci'][1]:.2f}]", "1 is real's")]
    table = "| check | measured | goal |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {g} |" for a, b, g in rows)
    colour_text = "" if "colour" not in c else """
![colour cast](report/colour_cast.png)

Colour casts: each sample's mean colour against each real frame's. A model that reads the picture's colour from
the start's noise (SD's schedule on small latents) spreads its samples' colours wider than the real frames'
(ratios above 1 in the table; 95 % intervals over maps, resampled once for both sets).
"""
    return f"""
## Does it paint, and does it copy?

Plain ControlNet (normal prior, mu = 1, 20 DDIM steps, seeds {c['seed']}..) sampled on all {c['n_generated']}
validation maps, scored in Inception's 2048-d pool features against the {c['n_generated']} real validation frames
and the {c['n_train']} training frames (without flips); {c['wall_s']} s.

{table}

![memorisation](report/memorisation.png)

![nearest pairs](report/nearest_pairs.png)
{colour_text}
A model that copied its training frames would put its samples left of every real validation frame (a frame of
the same city it never saw); the closest pairs show what the nearest samples look like beside the frame they
are nearest to.
"""
