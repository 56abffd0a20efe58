"""The experiments the notebooks show: Table 1, Fig. 3, Fig. 8, Table 3, Table 2, and what they rest on.

Each function samples with the study's settings, scores with :mod:`.evaluation` and returns a
DataFrame (and the images where a notebook shows them).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..data import to_float, to_uint8
from ..data.profiles import SEED_BASE, seed_folder
from ..metrics import diversity, load_lpips
from ..metrics.colour import colour_spread
from ..metrics.resampling import N_BOOT, Draws, difference, draw_indices, interval
from ..metrics.verdict import compare, relation_of_difference
from ..priors import NormalPrior
from . import cache
from .context import build_priors, eval_set, load_pipeline
from .evaluation import Comparison, frame_block
from .settings import PRIOR_KINDS, Settings

# The paper's numbers (docs/method.md, section 2), for the tables that set ours beside them.
PAPER_TABLE1 = pd.DataFrame(
    [("normal", 65.14, 94.14, 23.35, 20.73, 61.14, 20.58), ("spatial", 66.77, 94.29, 12.83, 20.86, 64.46, 16.03),
     ("categorical", 66.86, 94.54, 11.63, 21.86, 66.63, 16.56), ("joint", 67.92, 94.65, 10.53, 25.61, 71.79, 12.66)],
    columns=["prior", "cityscapes_miou", "cityscapes_acc", "cityscapes_fid", "ade20k_miou", "ade20k_acc", "ade20k_fid"])

PAPER_TABLE2 = pd.DataFrame([("ControlNet", 20.7, 20.6, 28.4), ("SCP-Diff", 10.5, 13.0, 17.6)],
                            columns=["method", "cityscapes_fid", "ade20k_fid", "coco_stuff_fid"])

PAPER_TABLE3 = pd.DataFrame([("OASIS", 0.35, 0.65), ("ControlNet", 0.59, 0.17), ("SCP-Diff", 0.56, 0.21)],
                            columns=["method", "lpips", "ms_ssim"])

def prior_summary(priors: dict, class_names) -> pd.DataFrame:
    """Per class: reference tokens, the class mean and std (first four latent channels), joint cells that fall back."""
    cat, joint = priors["categorical"], priors["joint"]
    names = list(class_names) + ["(ignore)"] * (cat.num_classes - len(class_names))
    rows = []
    for c in range(cat.num_classes):
        seen = joint.count[c] > 0
        rows.append({"class": names[c], "tokens": int(cat.class_counts[c]),
                     "mean (ch 0-3)": np.round(cat.mean[c, :4].numpy(), 3).tolist(),
                     "std (ch 0-3)": np.round(cat.std[c, :4].numpy(), 3).tolist(),
                     "cells seen": int(seen.sum()),
                     "cells with fallback among seen": int((joint.fallback_mask[c] & seen).sum())})
    return pd.DataFrame(rows)

class Generated(NamedTuple):
    """What :func:`generate` returns: uint8 images ``[n, H, W, 3]`` and the ``mu`` and ``t_start`` that ran."""

    images: torch.Tensor
    mu: float
    t_start: int


def generate(s: Settings, labels: torch.Tensor, prior=None, mu: float | None = None, x0=None,
             seed_offset: int = 0, steps: int | None = None) -> Generated:
    """Images for label maps; sample ``i`` uses seed ``seed + seed_offset + i``.

    ``mu=None``: the pipeline's rule (:func:`scp_core.sampling.resolve_mu`: the normal prior at 1, the
    others at ``s.mu``); with ``x0`` (Fig. 3), ``mu`` is the start level. The result says which ran. Each image is
    made once per reports folder (:mod:`.cache`: kept under a key of everything that determines it), so notebooks
    that ask for the same sample share it.
    """
    pipe, labels, steps = load_pipeline(s), torch.as_tensor(labels), steps or s.steps
    seeds = [s.seed + seed_offset + i for i in range(len(labels))]

    def make(todo: list[int]):
        out = pipe(labels[todo], prior=prior, mu=mu, default_mu=s.mu, num_inference_steps=steps,
                   guidance_scale=s.guidance, seed=[seeds[i] for i in todo], batch_size=s.batch_size,
                   output_type="np", x0=x0[todo] if x0 is not None else None, progress=True)
        return out.images, out.mu, out.t_start

    if cache.enabled(s):
        call, keys = cache.image_keys(s, pipe, labels, prior if prior is not None else pipe.prior, mu, steps, seeds,
                                      x0)
        images, mu_run, t_start = cache.generated(s, call, keys, make)
    else:
        images, mu_run, t_start = make(list(range(len(labels))))
    return Generated(torch.as_tensor(images), mu_run, t_start)

def trajectory(s: Settings, labels: torch.Tensor, prior, mu: float | None = None) -> tuple[list[int], torch.Tensor]:
    """What the model believes at every kept DDIM step, for one label map: the decoded x0-predictions.

    At step ``t`` DDIM predicts the clean latent ``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) /
    sqrt(alpha_bar_t)`` (Song et al. 2021, Eq. 12) and moves towards it. Decoding each ``x0_hat``
    shows what a start saves: from N(0, I) the first predictions are a grey average; from a prior's
    start they already hold the map's colours. Returns the timesteps and uint8 images ``[steps, H, W, 3]``.
    """
    pipe = load_pipeline(s)
    steps, preds = [], []
    pipe(labels[:1], prior=prior, mu=mu, default_mu=s.mu, num_inference_steps=s.steps, guidance_scale=s.guidance,
         seed=s.seed, output_type="latent", progress=False,
         x0_callback=lambda i, t, x0: (steps.append(t), preds.append(x0)))
    return steps, to_uint8(pipe.decode(torch.cat(preds))).cpu()

def prior_comparison(s: Settings, kinds=PRIOR_KINDS,
                     priors: dict | None = None) -> tuple[pd.DataFrame, dict, Comparison]:
    """Table 1: each prior at ``s.mu`` (normal at mu = 1, plain ControlNet) on ``n_eval`` maps, the same seeds.

    Returns the table, the images ``{kind: uint8}`` and the :class:`Comparison` the verdicts are read from.
    ``priors``: ``{kind: Prior}`` to use (default :func:`build_priors` of ``s``).
    """
    priors = priors or build_priors(s)
    _, labels = eval_set(s)
    comp, meta, images = Comparison(s, labels), [], {}
    for k in kinds:
        t = time.time()
        gen = generate(s, labels, prior=priors[k])
        images[k] = gen.images
        meta.append({"prior": k, "mu": gen.mu, "sample_s": round(time.time() - t, 1)})
        comp.add(k, images[k])
    return pd.DataFrame([{**m, **comp.row(m["prior"])} for m in meta]), images, comp

TRAINING_SEEDS = {k: seed_folder(k) for k in (1, 2)}  # seed 0: the committed zoo/toy


def seed_study(s: Settings, seed0: tuple[pd.DataFrame, Comparison], kinds=PRIOR_KINDS,
               seeds=tuple(TRAINING_SEEDS)) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Table 1's priors on the daylight ControlNet trained from each training seed (``seed0``: the committed
    stack's table and comparison), the same maps, sampling seeds and priors (the VAE is shared).

    Returns the long table (``training_seed`` beside each row), one row per training seed with the ordering of
    the priors by the profile's distance and the joint-minus-normal gap with its paired interval, and the
    comparisons ``{training seed: Comparison}``.
    """
    priors = build_priors(s)
    tables, comps = {0: seed0[0]}, {0: seed0[1]}
    for k in seeds:
        sk = replace(s, pipeline=SEED_BASE, trained=TRAINING_SEEDS[k])
        tables[k], _, comps[k] = prior_comparison(sk, kinds, priors=priors)
    gaps = []
    for k, comp in comps.items():
        t = tables[k].set_index("prior")
        rec = comp.record("joint", "normal", "fd")
        gaps.append({"training_seed": k, "ordering (best first)": " < ".join(t.fd.sort_values().index),
                     "joint - normal": rec["diff"], "joint - normal 95% CI": rec["diff_ci"],
                     "verdict": rec["verdict"], "text": rec["text"]})
    long = pd.concat([t.assign(training_seed=k) for k, t in tables.items()], ignore_index=True)
    return long, pd.DataFrame(gaps), comps


def spread_ratio(gen_u8, real_u8, n_boot: int = 1000, seed: int = 0) -> tuple[float, list]:
    """``std(gen) / std(real)`` of per-image brightness with its 95 % interval (image ``i`` of both sets on map ``i``,
    the maps resampled once for both: paired): the brightness column of
    :func:`scp_core.metrics.colour.colour_spread`."""
    c = colour_spread(gen_u8, real_u8, n_boot=n_boot, seed=seed)
    return c["brightness"], c["brightness_ci"]


def global_brightness(s: Settings, kinds=("normal", "spatial", "joint"), n: int = 100,
                      images: dict | None = None, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The global-factor diagnostic (docs/method.md, section 4): the spread of per-image mean brightness.

    Independent token draws *could* average per-image global factors (lighting) away, and then, if the
    model keeps the low frequencies of its start, generated images would vary less in brightness than
    real ones; this measures whether they do. Returns the std (and mean) over ``n`` maps and ``spread
    ratio``, the std over real's, with its 95 % interval (the maps resampled once for both sets: paired).
    ``images``: ``{kind: uint8 images}`` already generated for the first ``n`` (or more) evaluation maps
    with the same seeds by :func:`prior_comparison`, used instead of sampling them again, and ``table``, its
    table (the ``mu`` each prior ran at).
    """
    if images and table is None:
        raise ValueError("global_brightness: images from prior_comparison come with its table (the mu each "
                         "prior ran at): pass table=<prior_comparison's table>")
    priors = build_priors(s)
    img, labels = eval_set(replace(s, n_eval=n))

    def row(name, mu, u8):
        b = (u8.float() / 255).mean(dim=(1, 2, 3)).numpy()
        ratio, ratio_ci = spread_ratio(u8, img, n_boot=50 if s.smoke else N_BOOT, seed=s.seed)
        return {"images": name, "mu": mu, "brightness std": float(b.std(ddof=1)), "brightness mean": float(b.mean()),
                "spread ratio": ratio, "spread ratio 95% CI": list(ratio_ci), "n": int(len(u8))}
    rows = [row("real", None, img)]
    for k in kinds:
        if images and k in images:  # Table 1's images and the mu they ran at
            gen, mu = images[k][:len(labels)], float(table.set_index("prior").mu[k])
        else:
            gen, mu, _ = generate(s, labels, prior=priors[k])
        rows.append(row(f"{k} prior", mu, gen))
    return pd.DataFrame(rows)


def mismatch_study(s: Settings, mus=(0.2, 0.4, 0.6, 0.8, 1.0), block: int | None = None
                   ) -> tuple[pd.DataFrame, Comparison]:
    """Fig. 3: denoise from N(sqrt(a_muT) x0, (1 - a_muT) I) with real x0, against N(0, I).

    Every N_x0 start holds ``sqrt(alpha_bar)`` of the real latent of the very image the Frechet reference
    holds for that map, so its rows are **reconstructions** (column ``kind``), never generation: they can
    fall below the real-versus-real line. The limit they approach as ``mu`` falls is the autoencoder's
    **round trip** (``decode(x0)``, ``mu = 0``: no step denoised), the last row. Rows ``start`` and ``mu``; the
    comparison's settings are named ``"x0 mu=<mu>"``, ``"N(0, I)"`` and ``"round trip"``. The maps are resampled
    in moving blocks of ``block`` consecutive maps (``None``: :func:`~.evaluation.frame_block`).
    """
    pipe = load_pipeline(s)
    img, labels = eval_set(s)
    x0 = pipe.encode(to_float(img), generator=torch.Generator().manual_seed(s.seed))
    block = frame_block(s)["block"] if block is None else int(block)
    comp, meta = Comparison(s, labels, block=block), []
    for mu in mus:
        gen = generate(s, labels, x0=x0, mu=mu)
        comp.add(f"x0 mu={mu:g}", gen.images)
        meta.append({"start": "N(sqrt(a) x0, (1-a) I)", "mu": gen.mu, "kind": "reconstruction",
                     "t_start": gen.t_start, "signal": float(pipe.scheduler.alphas_cumprod[gen.t_start].sqrt()),
                     "name": f"x0 mu={mu:g}"})
    gen = generate(s, labels, prior=NormalPrior(latent_channels=x0.shape[1]))
    comp.add("N(0, I)", gen.images)
    meta.append({"start": "N(0, I)", "mu": gen.mu, "kind": "generation", "t_start": gen.t_start,
                 "signal": 0.0, "name": "N(0, I)"})
    trip = torch.cat([to_uint8(pipe.decode(x0[i:i + 16]).cpu()) for i in range(0, len(x0), 16)])
    comp.add("round trip", trip)
    meta.append({"start": "decode(x0): the autoencoder's round trip", "mu": 0.0, "kind": "reconstruction",
                 "t_start": None, "signal": 1.0, "name": "round trip"})
    return pd.DataFrame([{**m, **comp.row(m["name"])} for m in meta]), comp


def mismatch_records(table: pd.DataFrame, comp: Comparison) -> dict:
    """What Fig. 3's sweep says, from :func:`mismatch_study`'s table and comparison (every sentence generated):

    * ``"against_normal"``: each N_x0 start against ``N(0, I)`` in every column (``same`` where the start keeps no
      signal, ``sqrt(alpha_bar) = 0``: then it *is* ``N(0, I)`` with the same seeds, never a verdict);
    * ``"steps"``: each start against the next higher ``mu`` in the primary column, then the round trip against
      the lowest ``mu`` (a reconstruction should approach it as ``mu`` falls);
    * ``"non_monotone"``: the steps where the start holding *more* of the image is **worse** (interval excluding 0);
    * ``"text"``: one paragraph of the above.
    """
    x0 = table[table.name.str.startswith("x0 ")].sort_values("mu")
    against = [comp.record("N(0, I)", r.name, col, label_b=f"N_x0 at mu = {r.mu:g}", same=bool(r.signal == 0))
               for r in x0.itertuples() for col in comp.columns]
    names, mus = list(x0.name), list(x0.mu)
    steps = [comp.record(names[i], names[i + 1], "fd", label_a=f"N_x0 at mu = {mus[i]:g}",
                         label_b=f"N_x0 at mu = {mus[i + 1]:g}") for i in range(len(names) - 1)]
    steps.insert(0, comp.record("round trip", names[0], "fd", label_a="the round trip",
                                label_b=f"N_x0 at mu = {mus[0]:g}"))
    wrong = [r for r in steps if r["verdict"] == "worse"]
    metric = steps[0]["metric"]
    trip = table[table.name == "round trip"].iloc[0]
    text = (f"{metric} of the reconstructions from mu = {mus[-1]:g} down to {mus[0]:g}: "
            + ", ".join(f"{r.mu:g}: {r.fd:.4g}" for r in x0[::-1].itertuples())
            + f"; the autoencoder's round trip: {trip.fd:.4g}. "
            + ("Each start that keeps more of the image is better than or not distinguishable from the one above "
               "it." if not wrong else "Not monotone: " + "; ".join(r["text"] for r in wrong) + ".")
            + f" Closest start against the round trip: {steps[0]['text']}.")
    return {"against_normal": against, "steps": steps, "non_monotone": [r["b"] for r in wrong], "text": text}


def mu_sweep(s: Settings, kinds=("joint", "spatial", "categorical"),
             mus=(0.5, 0.7, 0.8, 0.9, 1.0)) -> tuple[pd.DataFrame, Comparison]:
    """Fig. 8: the metrics against mu for the priors; the normal prior at mu = 1 as reference. The
    comparison's settings are named ``"<kind> mu=<mu>"`` and ``"normal mu=1"``."""
    priors = build_priors(s)
    _, labels = eval_set(s)
    comp, meta = Comparison(s, labels), []
    for k in kinds:
        for mu in mus:
            comp.add(f"{k} mu={mu:g}", generate(s, labels, prior=priors[k], mu=mu).images)
            meta.append({"prior": k, "mu": mu, "name": f"{k} mu={mu:g}"})
    gen = generate(s, labels, prior=priors["normal"])
    comp.add(f"normal mu={gen.mu:g}", gen.images)
    meta.append({"prior": "normal", "mu": gen.mu, "name": f"normal mu={gen.mu:g}"})
    return pd.DataFrame([{**m, **comp.row(m["name"])} for m in meta]), comp


def diversity_study(s: Settings, k: int = 8, n_maps: int = 32, kinds=("normal", "joint"),
                    priors: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Table 3: K samples per label map, mean pairwise LPIPS and MS-SSIM, averaged over maps.

    ``priors``: ``{kind: Prior}`` to draw from (default: :func:`build_priors`).
    """
    priors = priors or build_priors(s)
    # A reference run never loses its LPIPS column silently: missing weights raise here, before any
    # sampling, naming the fix (`python3 bootstrap.py setup`); smoke runs may report LPIPS unavailable.
    lpips_net = None if s.smoke else load_lpips("alex")
    _, labels = eval_set(replace(s, n_eval=n_maps))
    rows, grids = [], {}
    for kind in kinds:
        lab = labels.repeat_interleave(k, 0)
        gen, mu, _ = generate(s, lab, prior=priors[kind], seed_offset=10_000)
        groups = to_float(gen).view(len(labels), k, 3, *gen.shape[1:3])
        d = diversity(groups, lpips_net=lpips_net, progress=False, require_lpips=not s.smoke)
        per_map = {m: (None if d.get(f"{m}_per_map") is None else np.asarray(d[f"{m}_per_map"], float))
                   for m in ("lpips", "ms_ssim")}
        rows.append({"prior": kind, "mu": mu, "lpips": d["lpips"], "lpips_ci": _mean_interval(per_map["lpips"], s),
                     "ms_ssim": d["ms_ssim"], "ms_ssim_ci": _mean_interval(per_map["ms_ssim"], s),
                     "maps": d["n_maps"], "k": k, "lpips_note": d.get("lpips_unavailable_reason"),
                     "lpips_per_map": None if per_map["lpips"] is None else per_map["lpips"].tolist(),
                     "ms_ssim_per_map": per_map["ms_ssim"].tolist()})
        grids[kind] = gen.view(len(labels), k, *gen.shape[1:])
    return pd.DataFrame(rows), grids

def _mean_draws(per_map: np.ndarray, s: Settings) -> Draws:
    """The mean over maps and its values on the study's resampled maps (the same rows for every prior: paired)."""
    index = draw_indices(len(per_map), 50 if s.smoke else N_BOOT, s.seed)
    return Draws(float(per_map.mean()), per_map[index].mean(axis=1))


def _mean_interval(per_map, s: Settings):
    return None if per_map is None or len(per_map) < 2 else list(interval(_mean_draws(per_map, s)))


def diversity_verdict(table: pd.DataFrame, s: Settings, a: str = "joint", b: str = "normal") -> dict:
    """Table 3's comparison of two priors, LPIPS (higher: more diverse) and MS-SSIM (lower: more diverse), from
    the interval of the paired difference of their per-map means (the same maps for both). Returns
    ``{metric: record}`` like :meth:`Comparison.record`; LPIPS is left out where it was unavailable."""
    by = table.set_index("prior")
    out = {}
    for m, label, lower in (("lpips", "LPIPS (higher: more diverse)", False),
                            ("ms_ssim", "MS-SSIM (lower: more diverse)", True)):
        if by.loc[a, f"{m}_per_map"] is None or by.loc[b, f"{m}_per_map"] is None:
            continue
        da, db = (_mean_draws(np.asarray(by.loc[k, f"{m}_per_map"]), s) for k in (a, b))
        diff, ci = difference(da, db)
        text = compare(a, da.value, interval(da), b, db.value, interval(db), diff_ci=ci, n=int(by.loc[a, "maps"]),
                       lower_is_better=lower, scheme="paired resampling of the maps")
        out[m] = {"a": a, "b": b, "metric": label, "diff": diff, "diff_ci": list(ci), "text": f"{label}: {text}",
                  "verdict": relation_of_difference(ci, lower)}
    return out


def comparison_table(ours: dict | None) -> pd.DataFrame:
    """Table 2: the paper's FID rows and ours (``ours``: notebook 03's metrics, ``prior_comparison``; ``None``: the
    paper's rows alone), ours marked.

    Our numbers go to the column ``ours`` with the metric they were measured with in
    ``ours_metric`` (FD-toy on the toy profiles, FID at real scale), never into the paper's FID
    columns: a toy distance is not comparable with the paper's FID. ``ours_ci`` is each value's 95 %
    interval; on the SCP-Diff rows ``diff`` / ``diff_ci`` are the paired difference SCP-Diff minus ControlNet
    on the same maps and seeds and its interval, ``verdict`` the sentence it gives and ``relation`` its verdict
    ("better", "not distinguishable", ...; the paper reports no intervals, so its rows have none).
    """
    rows = [{"method": r.method, "source": "paper", "cityscapes": r.cityscapes_fid, "ade20k": r.ade20k_fid,
             "coco_stuff": r.coco_stuff_fid, "ours": None, "ours_metric": "FID"} for r in PAPER_TABLE2.itertuples()]
    if ours:
        metric = ours.get("settings", {}).get("metric", "FD-toy")
        for setting, tab in ours.get("tables", {}).items():
            by = {r["prior"]: r for r in tab}
            paired = {(c["a"], c["b"]): c for c in ours.get("comparisons", {}).get(setting, []) if c["column"] == "fd"}
            for method, kind in (("ControlNet", "normal"), ("SCP-Diff", "joint")):
                if kind in by:
                    row = {"method": method, "source": f"this project, {setting} profile (n={by[kind]['n']})",
                           "cityscapes": None, "ade20k": None, "coco_stuff": None, "ours": by[kind]["fd"],
                           "ours_ci": by[kind].get("fd_ci"), "ours_metric": by[kind].get("metric", metric)}
                    diff = paired.get(("joint", "normal")) if kind == "joint" else None
                    if diff:
                        row.update(diff=diff["diff"], diff_ci=diff["diff_ci"], verdict=diff["text"],
                                   relation=diff.get("verdict"))
                    rows.append(row)
    return pd.DataFrame(rows)
