"""Benchmark: SCP-Diff sampling against diffusers' ControlNet pipeline, SD 2.1 base shapes, on a GPU.

The same randomly initialised SD 2.1 base modules (UNet, ``ControlNetModel.from_unet``, VAE;
the cost does not depend on the weights) are driven, in the same run, by

* ours, normal prior at mu = 1 (plain ControlNet sampling),
* ours, joint prior at mu = 0.8 (16 of 20 DDIM steps),
* diffusers' ``StableDiffusionControlNetPipeline`` (20 DDIM steps, the same start latents),
* with ``--compile``: ours at mu = 0.8 with ``compile=True`` (``torch.compile`` of UNet and ControlNet),

for Cityscapes (512 x 1024, 19 classes + ignore, CFG 4.0) and ADE20K (512 x 512, 150 classes +
ignore, CFG 7.5), at batch 1 and 8, 20 DDIM steps, float16, images decoded (``output_type="np"``).
Each configuration: one warm-up call, then the median of ``--repeats`` (>= 5) timed calls,
the order of the methods rotated between repeats; peak GPU memory per method; the device name.
The headline is ours (mu = 1) / diffusers. As a correctness check the first batch of ours at
mu = 1 is compared with diffusers' images from the same start latents.

``--quick`` runs the same comparison on the CPU at toy shapes (the toy UNet / VAE configs, random
weights, 32 x 64 and 32 x 32 images, batch 1 and 2, 5 steps) in well under a minute, written to
the git-ignored ``reports/_scratch/bench``.

Usage: ``python bench/gpu_sampling.py [--quick] [--compile] [--repeats 5] [--batches 1 8]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, QUICK_OUT, command_line, md_table, median, write_results  # noqa: E402
from sampling_cost import SD21_UNET, SD21_VAE, clock  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scp_core.priors import NormalPrior, PriorAccumulator  # noqa: E402

# name, image size, real classes, CFG scale (the authors' settings)
DATASETS = [("cityscapes", (512, 1024), 19, 4.0), ("ade20k", (512, 512), 150, 7.5)]
QUICK_DATASETS = [("cityscapes (toy shapes)", (32, 64), 19, 4.0), ("ade20k (toy shapes)", (32, 32), 150, 7.5)]
# the goals set before the first GPU run, one H100
GOALS = {"joint mu=0.8 s/img at batch 8": 0.25, "joint mu=0.8 s/img at batch 1": 0.5}


def build_modules(quick: bool, seed: int = 0):
    """SD 2.1 base UNet / ControlNet / VAE shapes (random weights), or the toy configs for --quick."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from scp_core.models import TOY_CROSS_DIM, TOY_TEXT_TOKENS, controlnet_from_unet, toy_unet, toy_vae

    torch.manual_seed(seed)
    if quick:  # the test suite's tiny toy configuration: seconds on a CPU
        unet, vae = toy_unet(seed, block_out_channels=(32, 64), sample_size=(8, 16)), toy_vae(seed)
        tokens, dim = TOY_TEXT_TOKENS, TOY_CROSS_DIM
    else:
        unet, vae = UNet2DConditionModel(**SD21_UNET), AutoencoderKL(**SD21_VAE)
        tokens, dim = 77, 1024
    cn = controlnet_from_unet(unet, vae_factor=2 ** (len(vae.config.block_out_channels) - 1))
    g = torch.Generator().manual_seed(seed)
    cond, uncond = torch.randn(1, tokens, dim, generator=g), torch.randn(1, tokens, dim, generator=g)
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6
              for k, m in (("unet", unet), ("controlnet", cn), ("vae", vae))}
    return vae.eval(), unet.eval(), cn.eval(), cond, uncond, params


def make_pipelines(modules, image_size, classes, device, dtype):
    """Ours and diffusers' on the very same module objects."""
    from diffusers import StableDiffusionControlNetPipeline

    from scp_core.models import make_scheduler
    from scp_core.pipeline import SCPDiffPipeline

    vae, unet, cn, cond, uncond, _ = modules
    palette = np.random.default_rng(classes).integers(0, 256, (classes, 3)).astype(np.uint8)
    ours = SCPDiffPipeline(vae, unet, cn, make_scheduler("ddim"), cond, uncond, num_classes=classes, palette=palette,
                           image_size=image_size, ignore_index=255).to(device, dtype)
    theirs = StableDiffusionControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=cn,
                                               scheduler=make_scheduler("ddim"), safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    return ours, theirs


def blocky_labels(batch: int, image_size, classes: int, seed: int = 0) -> torch.Tensor:
    """Label maps of 32 x 32 blocks (a few with the ignore id 255)."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size[0] // 32 or 1, image_size[1] // 32 or 1
    coarse = torch.randint(0, classes, (batch, h, w), generator=g)
    coarse[:, -1, :1] = 255
    fy, fx = image_size[0] // h, image_size[1] // w
    return coarse.repeat_interleave(fy, 1).repeat_interleave(fx, 2)


def joint_prior(pipe, seed: int = 0):
    """A joint prior with the right shapes (its values do not change the cost)."""
    g = torch.Generator().manual_seed(seed)
    K, shape = pipe.prior_num_classes, pipe.latent_shape
    return PriorAccumulator(K, shape).update(torch.randn(8, *shape, generator=g),
                                             torch.randint(0, K, (8, *shape[1:]), generator=g)).joint(min_count=1)


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def run_config(ours, theirs, labels, guidance, steps, repeats, device, compile_: bool) -> dict:
    """Time every method on one batch; returns ``{method: {"times", "peak_gib"}}`` and the image check."""
    B = len(labels)
    joint = joint_prior(ours)
    normal = NormalPrior(latent_channels=ours.latent_shape[0])
    control = ours.control(labels).to(device, ours.dtype)
    embeds = ours.prompt_embeds.expand(B, -1, -1), ours.negative_prompt_embeds.expand(B, -1, -1)
    start = ours(labels, prior=normal, mu=1.0, num_inference_steps=1, seed=0, batch_size=B, output_type="latent",
                 progress=False).start_latents.to(device, ours.dtype)  # the start latents of seed 0 (N(0, I))

    def ours_call(prior, mu, compile=False):
        return lambda: ours(labels, prior=prior, mu=mu, num_inference_steps=steps, guidance_scale=guidance, seed=0,
                            batch_size=B, output_type="np", progress=False, compile=compile).images

    def theirs_call():
        return theirs(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], image=control,
                      num_inference_steps=steps, guidance_scale=guidance, latents=start, height=labels.shape[1],
                      width=labels.shape[2], output_type="np", controlnet_conditioning_scale=1.0).images

    methods = {"ours, normal mu=1": ours_call(normal, 1.0), "ours, joint mu=0.8": ours_call(joint, 0.8),
               "diffusers ControlNet": theirs_call}
    if compile_:
        methods["ours, joint mu=0.8, compile=True"] = ours_call(joint, 0.8, compile=True)
    res = {m: {"times": [], "peak_gib": None, "warmup_s": None} for m in methods}
    for m, fn in methods.items():  # warm-up (for compile=True: the compilation)
        reset_peak(device)
        res[m]["warmup_s"] = clock(device, fn)[0]
    names = list(methods)
    for r in range(repeats):
        for m in names[r % len(names):] + names[:r % len(names)]:
            reset_peak(device)
            res[m]["times"].append(clock(device, methods[m])[0])
            res[m]["peak_gib"] = max(res[m]["peak_gib"] or 0.0, peak_gib(device) or 0.0) if peak_gib(device) else None
    a = np.asarray(methods["ours, normal mu=1"](), dtype=np.float64) / 255.0
    b = np.asarray(theirs_call(), dtype=np.float64)
    return {"methods": res, "max_abs_image_diff_ours_mu1_vs_diffusers": float(np.abs(a - b).max())}


def parse_gpu_bench(ap: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, str]:
    """The options both GPU benchmarks share; returns the arguments and the device (cuda, or cpu with --quick)."""
    ap.add_argument("--quick", action="store_true", help="CPU, toy shapes, well under a minute")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None,
                    help="output folder (default reports/bench; with --quick reports/_scratch/bench)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = a.device or ("cpu" if a.quick else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: the GPU figures need one (run with --quick for the CPU toy-shape check)")
    return a, device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 (quick: 1 2)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 20; quick 5)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per method after the warm-up (>= 5)")
    ap.add_argument("--compile", action="store_true", help="add ours with compile=True (minutes of compilation)")
    a, device = parse_gpu_bench(ap, argv)
    if a.repeats < 5:
        sys.exit("--repeats must be >= 5 (medians of at least 5 calls)")
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    batches = a.batches or ([1, 2] if a.quick else [1, 8])
    steps = a.steps or (5 if a.quick else 20)
    modules = build_modules(a.quick)
    rows, configs = [], []
    for name, size, classes, guidance in (QUICK_DATASETS if a.quick else DATASETS):
        ours, theirs = make_pipelines(modules, size, classes, device, dtype)
        for B in batches:
            r = run_config(ours, theirs, blocky_labels(B, size, classes), guidance, steps, a.repeats, device, a.compile)
            ref = median(r["methods"]["diffusers ControlNet"]["times"])
            for m, v in r["methods"].items():
                med = median(v["times"])
                rows.append({"dataset": name, "size": f"{size[0]} x {size[1]}", "CFG": guidance, "batch": B,
                             "method": m, "median s / call": med, "s / img": med / B, "/ diffusers": med / ref,
                             "peak GiB": v["peak_gib"] if v["peak_gib"] is not None else "not measured (CPU)"})
            configs.append({"dataset": name, "image_size": list(size), "classes": classes, "guidance": guidance,
                            "batch": B, **r})
    # headline: ours at mu = 1 over diffusers, per dataset and batch
    head = [{"dataset": r["dataset"], "batch": r["batch"], "ours mu=1 / diffusers": r["/ diffusers"]}
            for r in rows if r["method"] == "ours, normal mu=1"]
    on_gpu = torch.device(device).type == "cuda"
    goal_rows = []
    if on_gpu:
        for r in rows:
            if r["method"].startswith("ours, joint mu=0.8") and r["dataset"] == "cityscapes" and r["batch"] in (1, 8):
                goal = GOALS[f"joint mu=0.8 s/img at batch {r['batch']}"]
                goal_rows.append({"method": r["method"], "batch": r["batch"], "s / img": r["s / img"],
                                  "goal (H100)": goal, "met": r["s / img"] <= goal})
    where = (f"{'toy UNet / VAE configs' if a.quick else 'SD 2.1 base shapes'} with random weights (UNet "
             f"{modules[5]['unet']:.1f} M, ControlNet {modules[5]['controlnet']:.1f} M, VAE {modules[5]['vae']:.1f} M "
             f"parameters), {device}, {str(dtype).replace('torch.', '')}, {steps} DDIM steps, images decoded")
    checks = "; ".join(f"{c['dataset']} batch {c['batch']}: {c['max_abs_image_diff_ours_mu1_vs_diffusers']:.2e}"
                       for c in configs)
    sections = [
        ("Ours against diffusers", md_table(head) + f"""

Ratio of median wall times per call, same modules, same start latents, same run; below 1 means ours is faster.
{where}."""),
        ("Every configuration", md_table(rows) + f"""

Median of {a.repeats} timed calls per method after one warm-up call each, methods rotated between repeats.
Images: ours (normal prior, mu = 1) against diffusers from the same start latents, max |difference| in
[0, 1] units: {checks}."""),
    ]
    if on_gpu:
        sections.append(("Goals set before the run (one H100)",
                         md_table(goal_rows) if goal_rows else "no Cityscapes row"))
    else:
        sections.append(("GPU", "Not measured: this run had no GPU (`--quick` is the CPU toy-shape check). On a GPU: "
                         "`python bench/gpu_sampling.py [--compile]` writes `reports/bench/gpu_sampling.{json,md}`."))
    data = {"command": command_line(), "quick": a.quick, "device": device, "dtype": str(dtype), "steps": steps,
            "repeats": a.repeats, "batches": batches, "parameters_M": modules[5], "configs": configs, "rows": rows,
            "headline": head, "goals": goal_rows}
    write_results("gpu_sampling", "Sampling: ours against diffusers' ControlNet pipeline", sections, data,
                  out=Path(a.out) if a.out else (QUICK_OUT if a.quick else OUT))


if __name__ == "__main__":
    main()
