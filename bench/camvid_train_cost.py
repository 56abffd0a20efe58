"""Benchmark: seconds per training step of the CamVid stack on this CPU, at each image size and UNet width.

What to know before a CPU recipe is chosen: how many base-UNet and ControlNet steps fit in the
150-minute sitting at 192 x 256 (24 x 32 TAEF2 latents, the first stack) against 96 x 128 (12 x 16 latents),
for the first stack's widths (32, 64, 128), the committed (64, 96, 160) and wider ones, at batch 16 and 32.
Each row runs the stage's real loss (``unet_loss_fn`` / ``controlnet_loss_fn`` on random latents of the size,
the UNet decoder unlocked for the ControlNet, AdamW, gradient clipping as in ``training.loop.fit``): two warm-up
steps, then the median of the timed ones. Also the float16 size of UNet + ControlNet (the zoo's budget is 25 MB
with the segmenter).

Usage: ``python bench/camvid_train_cost.py [--quick] [--steps 8]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, QUICK_OUT, command_line, md_table, median, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scp_core.data.palettes import CAMVID_PALETTE  # noqa: E402  (the palette only: no frames needed)
from scp_core.data.transforms import control_map  # noqa: E402
from scp_core.models import controlnet_from_unet, make_scheduler, toy_text_conditioning, toy_unet  # noqa: E402
from scp_core.training.finetune import prepare_controlnet_training  # noqa: E402
from scp_core.training.losses import LatentCache, controlnet_loss_fn, unet_loss_fn  # noqa: E402
from scp_core.training.recipes import RECIPES  # noqa: E402

LATENT_CHANNELS = 32  # TAEF2
ZOO_WIDTHS = tuple(RECIPES["camvid"].unet["block_out_channels"])  # the committed recipe's row follows the recipe
WIDTHS = {"32-64-128 (first stack)": (32, 64, 128),
          f"{'-'.join(map(str, ZOO_WIDTHS))} (zoo since its third CPU training)": ZOO_WIDTHS,
          "64-96-192": (64, 96, 192), "64-128-256": (64, 128, 256)}
SIZES = {"192 x 256": (24, 32), "96 x 128": (12, 16)}


def unet_for(widths, latent_hw):
    kw = dict(RECIPES["camvid"].unet, sample_size=latent_hw, block_out_channels=widths)
    return toy_unet(0, **kw)


def step_seconds(model, loss_fn, n_items: int, batch: int, steps: int) -> tuple[float, float]:
    """Median seconds of one optimizer step (after two warm-up steps) and the last loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    times, loss = [], float("nan")
    for s in range(steps + 2):
        idx = np.random.default_rng([0, s]).choice(n_items, batch, replace=False)
        gen = torch.Generator().manual_seed(s)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        l = loss_fn(model, s, idx, gen)
        l.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - t)
        loss = float(l.detach())
    return median(times), loss


def fp16_mb(*modules) -> float:
    return sum(p.numel() for m in modules for p in m.parameters()) * 2 / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two timed steps, one width, into reports/_scratch/bench")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per row (after two warm-up steps)")
    args = ap.parse_args(argv)
    steps = 2 if args.quick else args.steps
    widths = dict(list(WIDTHS.items())[:1]) if args.quick else WIDTHS
    cond, uncond = toy_text_conditioning(0)
    ddpm = make_scheduler("ddpm")
    n_items = 64
    rows = []
    for size, hw in SIZES.items():
        lat = torch.randn(n_items, LATENT_CHANNELS, *hw, generator=torch.Generator().manual_seed(0))
        cache = LatentCache(lat, torch.zeros_like(lat), 1.0)
        labels = np.random.default_rng(0).integers(0, 11, (n_items, hw[0] * 8, hw[1] * 8)).astype(np.uint8)
        controls = lambda idx: control_map(torch.as_tensor(labels[idx]).long(), CAMVID_PALETTE,  # noqa: E731
                                           ignore_index=11)
        for wname, w in widths.items():
            if size == "192 x 256" and w != (32, 64, 128):
                continue  # the large size only for the first stack's widths: the point of comparison
            for batch in (16, 32):
                unet = unet_for(w, hw)
                s_unet, _ = step_seconds(unet, unet_loss_fn(cache, ddpm, cond, uncond), n_items, batch, steps)
                cn = controlnet_from_unet(unet, conditioning_embedding_out_channels=RECIPES["camvid"].control_channels)
                model, _ = prepare_controlnet_training(cn, unet_for(w, hw))
                s_cn, _ = step_seconds(model, controlnet_loss_fn(cache, controls, ddpm, cond, uncond), n_items,
                                       batch, steps)
                rows.append({"image size": size, "latents": f"{hw[0]} x {hw[1]}", "UNet widths": wname,
                             "batch": batch, "base UNet s/step": s_unet, "ControlNet s/step": s_cn,
                             "base UNet s/image": s_unet / batch, "ControlNet s/image": s_cn / batch,
                             "UNet + ControlNet fp16 MB": fp16_mb(unet, cn)})
                print(rows[-1], flush=True)
    ref = next(r for r in rows if r["image size"] == "192 x 256" and r["batch"] == 16)
    for r in rows:
        r["ControlNet s/step vs first stack"] = r["ControlNet s/step"] / ref["ControlNet s/step"]
        # steps in a 100-minute budget split 60 / 40 between the stages (what the recipe's choice rests on)
        r["UNet steps in 60 min"] = int(3600 / r["base UNet s/step"])
        r["ControlNet steps in 40 min"] = int(2400 / r["ControlNet s/step"])
    data = {"command": command_line(), "threads": torch.get_num_threads(), "timed_steps": steps, "rows": rows}
    note = (f"Median of {steps} timed steps after two warm-up steps, {torch.get_num_threads()} thread(s); random "
            "latents and label maps of the size (the cost does not depend on the values). The ratio column is "
            "against the first stack's size and widths at batch 16.")
    write_results("camvid_train_cost", "CamVid stack: seconds per training step on this CPU",
                  [("Seconds per step", md_table(rows)), ("How it was measured", note)], data,
                  out=QUICK_OUT if args.quick else OUT)


if __name__ == "__main__":
    main()
