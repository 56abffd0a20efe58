"""Benchmark: ControlNet fine-tuning at SD 2.1 base shapes, with and without gradient checkpointing.

``scp_core.training.finetune.finetune_controlnet`` (the code ``scpdiff finetune`` runs: frozen VAE encoding,
ControlNet + unlocked UNet decoder, AdamW, fp16 mixed precision, grad clipping) on randomly
initialised SD 2.1 base modules (the cost does not depend on the weights), Cityscapes-size
512 x 1024 images, global batch 8, with ``gradient_checkpointing`` off and on. Reported: seconds
per optimizer step (median over the steps after ``--warmup`` steps; a step is the time between
two consecutive entries into the loss function, so it covers loading, VAE encoding, forward,
backward, clipping and the optimizer), peak GPU memory, the device name.

``--quick`` runs the same on the CPU at toy shapes (the test suite's tiny UNet, 32 x 64 images,
batch 2, float32) in well under a minute, written to the git-ignored ``reports/_scratch/bench``.

Usage: ``python bench/gpu_finetune.py [--quick] [--steps 8] [--warmup 2] [--batch 8]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, QUICK_OUT, command_line, md_table, median, write_results  # noqa: E402
from gpu_sampling import blocky_labels, build_modules, parse_gpu_bench, peak_gib, reset_peak  # noqa: E402
from sampling_cost import sync  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import scp_core.training.finetune as FT  # noqa: E402  (its loss factory is patched to time the steps)
from scp_core.training.loop import TrainConfig  # noqa: E402


class BlockyScenes(torch.utils.data.Dataset):
    """Label maps of blocks and images painted with one colour per class."""

    def __init__(self, n: int, size, classes: int = 19, seed: int = 0):
        self.labels = blocky_labels(n, size, classes, seed)
        pal = torch.rand(256, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        self.images = pal[self.labels].permute(0, 3, 1, 2).contiguous()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "labels": self.labels[i], "name": str(i)}


def timed_steps(device):
    """Patch the loss-function factory that ``finetune_controlnet`` uses: record each step's entry time."""
    stamps = []
    make = FT.dataset_controlnet_loss_fn

    def patched(pipe, dataset, p_uncond: float = 0.1):
        loss_fn = make(pipe, dataset, p_uncond)

        def timed(*args):
            sync(device)
            stamps.append(time.perf_counter())
            return loss_fn(*args)
        return timed
    return stamps, patched


def run(modules, size, batch, steps, warmup, checkpointing, mixed, device) -> dict:
    from scp_core.models import make_scheduler
    from scp_core.pipeline import SCPDiffPipeline

    vae, unet, cn, cond, uncond, _ = modules
    palette = np.random.default_rng(0).integers(0, 256, (19, 3)).astype(np.uint8)
    pipe = SCPDiffPipeline(vae, unet, cn, make_scheduler("ddim"), cond, uncond, num_classes=19, palette=palette,
                           image_size=size, ignore_index=255)
    data = BlockyScenes(2 * batch, size)
    stamps, patched = timed_steps(device)
    FT.dataset_controlnet_loss_fn, original = patched, FT.dataset_controlnet_loss_fn
    reset_peak(device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(steps=warmup + steps + 1, batch_size=batch, lr=1e-5, mixed_precision=mixed,
                              gradient_checkpointing=checkpointing, log_every=1000)
            r = FT.finetune_controlnet(pipe, data, cfg, tmp, device=device)
            sync(device)
            stamps.append(time.perf_counter())
    finally:
        FT.dataset_controlnet_loss_fn = original
    per_step = np.diff(stamps)[warmup:warmup + steps].tolist()
    return {"gradient_checkpointing": checkpointing, "step_s": per_step, "median_step_s": median(per_step),
            "peak_gib": peak_gib(device), "final_loss": r["final_loss"], "mixed_precision": mixed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=None, help="global batch (default 8; quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 8; quick 5)")
    ap.add_argument("--warmup", type=int, default=2, help="steps before timing")
    a, device = parse_gpu_bench(ap, argv)
    on_gpu = torch.device(device).type == "cuda"
    batch, steps = a.batch or (2 if a.quick else 8), a.steps or (5 if a.quick else 8)
    size = (32, 64) if a.quick else (512, 1024)
    mixed = "fp16" if on_gpu else "no"
    results = []
    for ckpt in (False, True):
        modules = build_modules(a.quick)  # fresh weights and optimizer state for each configuration
        params = modules[5]
        results.append(run(modules, size, batch, steps, a.warmup, ckpt, mixed, device))
        del modules
        if on_gpu:
            torch.cuda.empty_cache()
    rows = [{"gradient checkpointing": r["gradient_checkpointing"], "median s / step": r["median_step_s"],
             "s / image": r["median_step_s"] / batch,
             "peak GiB": r["peak_gib"] if r["peak_gib"] is not None else "not measured (CPU)",
             "steps timed": len(r["step_s"])} for r in results]
    ratio = results[1]["median_step_s"] / results[0]["median_step_s"]
    where = (f"{'toy UNet / VAE configs' if a.quick else 'SD 2.1 base shapes'}, random weights, {device}, "
             f"mixed precision {mixed}, images {size[0]} x {size[1]}, global batch {batch}, ControlNet + unlocked "
             "UNet decoder, AdamW lr 1e-5")
    sections = [("Fine-tuning step", md_table(rows) + f"""

{where}. Median over {steps} steps after {a.warmup} warm-up steps; all step times: """
                 + "; ".join(f"checkpointing {r['gradient_checkpointing']}: "
                             + " / ".join(f"{t:.3f}" for t in r["step_s"])
                             for r in results) + f""" s. With checkpointing a step takes **{ratio:.2f}x** as long
(the blocks run again in the backward pass).""")]
    if not on_gpu:
        sections.append(("GPU", "Not measured: this run had no GPU (`--quick` is the CPU toy-shape check). On a GPU: "
                         "`python bench/gpu_finetune.py` writes `reports/bench/gpu_finetune.{json,md}`."))
    data = {"command": command_line(), "quick": a.quick, "device": device, "batch": batch, "image_size": list(size),
            "warmup": a.warmup, "steps": steps, "mixed_precision": mixed, "results": results,
            "checkpointing_time_ratio": ratio, "parameters_M": params}
    write_results("gpu_finetune", "ControlNet fine-tuning: step time and memory", sections, data,
                  out=Path(a.out) if a.out else (QUICK_OUT if a.quick else OUT))


if __name__ == "__main__":
    main()
