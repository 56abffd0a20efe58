"""Benchmark: FID's Inception on the CPU in pytorch-fid's contiguous layout against channels-last.

Inception took a fifth of the toy batch's kernel time (``reports/bench/study_profile.md``). The extractor
(:class:`scp_core.metrics.InceptionFeatures`) now keeps its weights and inputs channels-last; this measures both
layouts side by side in one run on the same images (the toy profile's 64 x 128 and CamVid's 96 x 128, random
pixels: the cost does not depend on them), median of ``--repeats`` calls with the order rotated, and the largest
feature difference between them (float rounding: the features are the same network's).

Usage: ``python bench/feature_cost.py [--quick] [--batch 50] [--repeats 3] [--threads N] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, QUICK_OUT, command_line, md_table, median, write_results  # noqa: E402

import torch  # noqa: E402

from scp_core.metrics import InceptionFeatures  # noqa: E402

SIZES = {"toy (64 x 128)": (64, 128), "camvid (96 x 128)": (96, 128)}


def layouts() -> dict:
    """``{name: callable(images01) -> features}``: the extractor as shipped and pytorch-fid's contiguous layout."""
    ex = InceptionFeatures()
    plain = copy.deepcopy(ex.model).to(memory_format=torch.contiguous_format)

    @torch.inference_mode()
    def contiguous(x):
        return plain(x)[0].flatten(1)

    return {"contiguous (pytorch-fid)": contiguous, "channels-last (ours)": ex}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 4, one repeat, into reports/_scratch/bench")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="folder of the results (default reports/bench)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, repeats = (4, 1) if args.quick else (args.batch, args.repeats)
    runs = layouts()
    rows, raw = [], {}
    for size, hw in SIZES.items():
        x = torch.rand(batch, 3, *hw, generator=torch.Generator().manual_seed(0))
        feats = {name: fn(x[:2]) for name, fn in runs.items()}  # warm-up, and the features compared below
        times = {name: [] for name in runs}
        names = list(runs)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter()
                runs[name](x)
                times[name].append(time.perf_counter() - t)
        a, b = feats.values()
        base = median(times[names[0]]) / batch
        for name in names:
            s = median(times[name]) / batch
            rows.append({"image size": size, "layout": name, "s / image": s, "speed-up": base / s})
        rows[-1]["max feature difference / max feature"] = float((a - b).abs().max() / a.abs().max())
        raw[size] = times
        print(rows[-2:], flush=True)
    data = {"command": command_line(), "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(),
            "rows": rows, "raw_s": raw}
    note = (f"Batch {batch}, median of {repeats} calls per layout (order rotated), {torch.get_num_threads()} "
            "thread(s); each call resizes to 299 x 299 inside the network, as pytorch-fid does. The speed-up is the "
            "contiguous layout's seconds over the row's, measured in this run.")
    table = md_table(rows, list(rows[0]) + ["max feature difference / max feature"])
    write_results("feature_cost", "FID Inception on the CPU: contiguous against channels-last",
                  [("Result", table), ("Notes", note)], data,
                  Path(args.out) if args.out else (QUICK_OUT if args.quick else OUT))


if __name__ == "__main__":
    main()
