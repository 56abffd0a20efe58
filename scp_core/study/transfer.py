"""Notebook 10: does a prior need the model it was built for? Prior transfer and a locked UNet.

Two questions that users of the authors' toolkit asked (SCP-Diff issue #5) and that the paper
does not answer, put to the toy stacks in one harness (same maps, seeds, steps and ``mu``):

1. *Training-free*: the paper's ControlNets were fine-tuned with the UNet decoder unlocked
   (``sd_locked=False``); a public ControlNet keeps the UNet frozen whole. Do the priors still
   help such a model? ``zoo/toy-locked`` is the daylight ControlNet trained that way, in the same
   latent space (:func:`scp_core.training.toy.train_toy_locked`).
2. *Transfer*: does a prior built from one dataset help, or restyle, a model of another? The
   daylight stack and the toy-city-gv stack share one autoencoder, so each can start from the
   other's prior.

Every model samples the maps of its own regime (toy-city and toy-city-gv share their layouts:
the same maps), from N(0, I) at mu = 1 and from each regime's joint prior at ``mu``. Each image
set is scored against **both** regimes' real validation images, so a table row says whether a
foreign prior still helps (distance to the model's own data) and whether it restyles (distance to
the prior's data). The decision rules come before the run (:data:`GOALS`) and are read off the
paired intervals (every start of one model samples the same maps with the same seeds) by
:mod:`scp_core.metrics.verdict`.
"""
from __future__ import annotations

import time

import pandas as pd

from ..priors import NormalPrior
from .context import build_priors, eval_set, load_pipeline
from .evaluation import Comparison
from .experiments import generate
from .global_factors import brightness
from .settings import Settings

# regime -> the profile whose data (maps, real images) and priors it is
REGIMES = {"daylight": "toy", "toy-gv": "toy-gv"}
# model -> (the profile of its stack, the regime it was fine-tuned on)
MODELS = {"daylight": ("toy", "daylight"), "toy-gv": ("toy-gv", "toy-gv"),
          "locked UNet": ("toy-locked", "daylight")}
NORMAL = "N(0, I)"
GOALS = (
    "**Training-free** (first question): the priors help a ControlNet whose UNet was never unlocked "
    "when the locked daylight ControlNet started from the daylight joint prior is *better* than from N(0, I) in "
    "FD-toy against daylight images (the 95 % interval of the paired difference excludes 0; the rule was "
    "\"disjoint 95 % intervals\" until the paired-difference revision); *worse* says they hurt; an interval "
    "including 0 "
    "says the harness cannot tell. mIoU is read the same way. "
    "**Transfer** (second question): a foreign prior *still helps* a model when it is better than N(0, I) in "
    "FD-toy against the model's own regime; it *restyles* when its images are closer to the prior's regime "
    "(FD-toy against the prior's real images) than the images from the model's own prior are. "
    "Expected before the run: the locked model is helped (the start carries each class's average look, "
    "which no decoder weights are needed to keep); a foreign prior moves images towards its regime's lighting.")


def _starts(kind: str, priors: dict, channels: int) -> dict:
    """``{start name: prior}``: N(0, I) and each regime's prior of ``kind``."""
    return {NORMAL: NormalPrior(latent_channels=channels), **{f"{r} {kind}": p for r, p in priors.items()}}


def transfer_table(models: dict[str, tuple[Settings, str]], regimes: dict[str, Settings],
                   kind: str = "joint") -> tuple[pd.DataFrame, dict, dict]:
    """Every model from every start on its own regime's maps, scored against every regime.

    Args:
        models: ``{name: (settings of its stack, its regime)}``.
        regimes: ``{name: settings}``: whose priors are built (:func:`build_priors`), whose maps
            are sampled and whose real validation images are the references.
        kind: the prior every regime contributes (N(0, I) at mu = 1 always comes first).

    Returns:
        the table (one row per model and start: ``mu``, mIoU with its interval, ``fd_<regime>``
        with ``fd_<regime>_ci`` for every regime, the second judge's ``fid_<regime>``, brightness mean and
        std), the images ``{(model, start): uint8 [n, H, W, 3]}`` and the comparisons
        ``{(model, regime): Comparison}`` (the starts of one model, scored against one regime).
    """
    priors = {r: build_priors(sr)[kind] for r, sr in regimes.items()}
    rows, images, comps = [], {}, {}
    for name, (sm, own) in models.items():
        _, labels = eval_set(regimes[own])
        comps.update({(name, r): Comparison(sr, labels) for r, sr in regimes.items()})
        for start, prior in _starts(kind, priors, load_pipeline(sm).latent_shape[0]).items():
            t = time.time()
            gen, mu, _ = generate(sm, labels, prior=prior)
            for r in regimes:
                comps[(name, r)].add(start, gen)
            b = brightness(gen)
            rows.append({"model": name, "regime": own, "start": start, "mu": mu, "brightness_mean": float(b.mean()),
                         "brightness_std": float(b.std()), "sample_s": round(time.time() - t, 1)})
            images[(name, start)] = gen
    for row in rows:
        for r in regimes:
            sc = comps[(row["model"], r)].row(row["start"])
            row.update({f"{col}_{r}{ci}": sc[col + ci] for col in ("fd", "fid") if col in sc for ci in ("", "_ci")})
        own = comps[(row["model"], row["regime"])].row(row["start"])
        row.update({k: v for k, v in own.items() if not k.startswith(("fd", "fid", "kid"))})
    return pd.DataFrame(rows), images, comps


def _row(table: pd.DataFrame, model: str, start: str) -> pd.Series:
    hit = table[(table.model == model) & (table.start == start)]
    if len(hit) != 1:
        raise KeyError(f"the table has {len(hit)} rows for model {model!r} from {start!r}, not one")
    return hit.iloc[0]


def _fd(comps: dict, table, model, a, b, regime, metric, col: str = "fd") -> tuple[str, str]:
    """``(relation, sentence)`` of ``model`` from start ``a`` against start ``b``, distance to ``regime``'s images."""
    rec = comps[(model, regime)].record(a, b, col)
    return rec["verdict"], f"{rec['metric']} to {regime} images: " + rec["text"].split(": ", 1)[1]


def answers(table: pd.DataFrame, comps: dict, kind: str = "joint", metric: str = "FD-toy") -> dict:
    """The two questions of :data:`GOALS`, answered from the paired comparisons by :mod:`scp_core.metrics.verdict`.

    Returns ``{"training_free": sentence, "transfer": {model: sentence}}``; every sentence quotes
    the numbers, their intervals, the interval of the difference and ``n``, and ends with the answer the
    rule gives. Where the toy profiles' second judge (FID with Inception) was measured, the sentence adds
    its reading and says whether the two judges agree.
    """
    out = {"transfer": {}}
    locked = [m for m in table.model.unique() if "locked" in m]
    for m in locked:
        regime = _row(table, m, NORMAL).regime
        own = f"{regime} {kind}"
        rel, fd = _fd(comps, table, m, own, NORMAL, regime, metric)
        miou = comps[(m, regime)].record(own, NORMAL, "miou")["text"]
        answer = {"better": "yes, they help", "worse": "no, they hurt",
                  "not distinguishable": "not distinguishable at this n"}.get(rel, rel)  # or not a test
        out["training_free"] = f"{m}: {fd}; {miou} -> {answer}" + _second(comps, m, own, NORMAL, regime, rel)
    for m in table.model.unique():
        if m in locked:
            continue
        own_regime = _row(table, m, NORMAL).regime
        for foreign in sorted(set(table.regime) - {own_regime}):
            f_start, o_start = f"{foreign} {kind}", f"{own_regime} {kind}"
            helps, s_help = _fd(comps, table, m, f_start, NORMAL, own_regime, metric)
            cost, s_cost = _fd(comps, table, m, f_start, o_start, own_regime, metric)
            style, s_style = _fd(comps, table, m, f_start, o_start, foreign, metric)
            out["transfer"][m] = (f"{m} model, {foreign} prior: {s_help} -> "
                                  + {"better": "still helps", "worse": "does not help",
                                     "not distinguishable": "help not distinguishable"}.get(helps, helps)
                                  + _second(comps, m, f_start, NORMAL, own_regime, helps)
                                  + f"; against its own prior, {s_cost}; {s_style} -> "
                                  + {"better": f"restyles towards {foreign}", "worse": "does not restyle",
                                     "not distinguishable": "restyling not distinguishable at this n"}.get(style, style)
                                  + _second(comps, m, f_start, o_start, foreign, style))
    return out


def _second(comps: dict, model, a, b, regime, first: str) -> str:
    """The second judge's reading of the same comparison (FID with Inception), where it was measured."""
    comp = comps[(model, regime)]
    if "fid" not in comp.columns:
        return ""
    rec = comp.record(a, b, "fid")
    agree = "the judges agree" if rec["verdict"] == first else "the judges DISAGREE"
    return f" [second judge, {rec['text']}: {agree}]"
