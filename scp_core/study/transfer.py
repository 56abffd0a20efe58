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
intervals by :mod:`scp_core.metrics.verdict`.
"""
from __future__ import annotations

import time

import pandas as pd

from ..metrics.verdict import compare, relation
from ..priors import NormalPrior
from ..sampling import resolve_mu
from .context import build_priors, eval_set, load_pipeline
from .evaluation import score
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
    "**Training-free** (toolkit #5, first question): the priors help a ControlNet whose UNet was never unlocked "
    "when the locked daylight ControlNet started from the daylight joint prior is *better* than from N(0, I) in "
    "FD-toy against daylight images (disjoint 95 % intervals); *worse* says they hurt; overlapping intervals "
    "say the harness cannot tell. mIoU is read the same way. "
    "**Transfer** (second question): a foreign prior *still helps* a model when it is better than N(0, I) in "
    "FD-toy against the model's own regime; it *restyles* when its images are closer to the prior's regime "
    "(FD-toy against the prior's real images) than the images from the model's own prior are. "
    "Expected before the run: the locked model is helped (the start carries each class's average look, "
    "which no decoder weights are needed to keep); a foreign prior moves images towards its regime's lighting.")


def _starts(kind: str, priors: dict, channels: int) -> dict:
    """``{start name: prior}``: N(0, I) and each regime's prior of ``kind``."""
    return {NORMAL: NormalPrior(latent_channels=channels), **{f"{r} {kind}": p for r, p in priors.items()}}


def transfer_table(models: dict[str, tuple[Settings, str]], regimes: dict[str, Settings],
                   kind: str = "joint") -> tuple[pd.DataFrame, dict]:
    """Every model from every start on its own regime's maps, scored against every regime.

    Args:
        models: ``{name: (settings of its stack, its regime)}``.
        regimes: ``{name: settings}``: whose priors are built (:func:`build_priors`), whose maps
            are sampled and whose real validation images are the references.
        kind: the prior every regime contributes (N(0, I) at mu = 1 always comes first).

    Returns:
        the table (one row per model and start: ``mu``, mIoU with its interval, ``fd_<regime>``
        with ``fd_<regime>_ci`` for every regime, brightness mean and std) and the images
        ``{(model, start): uint8 [n, H, W, 3]}``.
    """
    priors = {r: build_priors(sr)[kind] for r, sr in regimes.items()}
    rows, images = [], {}
    for name, (sm, own) in models.items():
        _, labels = eval_set(regimes[own])
        for start, prior in _starts(kind, priors, load_pipeline(sm).latent_shape[0]).items():
            mu = resolve_mu(prior, default=sm.mu)
            t = time.time()
            gen = generate(sm, labels, prior=prior, mu=mu)
            row = {"model": name, "regime": own, "start": start, "mu": mu}
            for r, sr in regimes.items():
                sc = score(sr, gen, labels)
                row.update({f"fd_{r}": sc["fd"], f"fd_{r}_ci": sc["fd_ci"]})
            b = brightness(gen)
            row.update({"miou": sc["miou"], "miou_ci": sc["miou_ci"], "acc": sc["acc"], "n": sc["n"],
                        "metric": sc["metric"], "brightness_mean": float(b.mean()), "brightness_std": float(b.std()),
                        "sample_s": round(time.time() - t, 1)})
            rows.append(row)
            images[(name, start)] = gen
    return pd.DataFrame(rows), images


def _row(table: pd.DataFrame, model: str, start: str) -> pd.Series:
    hit = table[(table.model == model) & (table.start == start)]
    if len(hit) != 1:
        raise KeyError(f"the table has {len(hit)} rows for model {model!r} from {start!r}, not one")
    return hit.iloc[0]


def _fd(table, model, a, b, regime, metric) -> tuple[str, str]:
    """``(relation, sentence)`` of ``model`` from start ``a`` against start ``b``, distance to ``regime``'s images."""
    ra, rb = _row(table, model, a), _row(table, model, b)
    col = f"fd_{regime}"
    return (relation(ra[col + "_ci"], rb[col + "_ci"]),
            f"{metric} to {regime} images: " + compare(a, ra[col], ra[col + "_ci"], b, rb[col], rb[col + "_ci"],
                                                       n=int(ra.n)))


def answers(table: pd.DataFrame, kind: str = "joint", metric: str = "FD-toy") -> dict:
    """The two questions of :data:`GOALS`, answered from ``table`` by the rule of :mod:`scp_core.metrics.verdict`.

    Returns ``{"training_free": sentence, "transfer": {model: sentence}}``; every sentence quotes
    the numbers, their intervals and ``n``, and ends with the answer the rule gives.
    """
    out = {"transfer": {}}
    locked = [m for m in table.model.unique() if "locked" in m]
    for m in locked:
        regime = _row(table, m, NORMAL).regime
        own = f"{regime} {kind}"
        rel, fd = _fd(table, m, own, NORMAL, regime, metric)
        a, b = _row(table, m, own), _row(table, m, NORMAL)
        miou = compare(own, a.miou, a.miou_ci, NORMAL, b.miou, b.miou_ci, n=int(a.n), lower_is_better=False,
                       digits=1)
        answer = {"better": "yes, they help", "worse": "no, they hurt",
                  "not distinguishable": "not distinguishable at this n"}[rel]
        out["training_free"] = f"{m}: {fd}; mIoU: {miou} -> {answer}"
    for m in table.model.unique():
        if m in locked:
            continue
        own_regime = _row(table, m, NORMAL).regime
        for foreign in sorted(set(table.regime) - {own_regime}):
            f_start, o_start = f"{foreign} {kind}", f"{own_regime} {kind}"
            helps, s_help = _fd(table, m, f_start, NORMAL, own_regime, metric)
            cost, s_cost = _fd(table, m, f_start, o_start, own_regime, metric)
            style, s_style = _fd(table, m, f_start, o_start, foreign, metric)
            out["transfer"][m] = (f"{m} model, {foreign} prior: {s_help} -> "
                                  + ("still helps" if helps == "better" else "does not help" if helps == "worse"
                                     else "help not distinguishable")
                                  + f"; against its own prior, {s_cost}; {s_style} -> "
                                  + {"better": f"restyles towards {foreign}", "worse": "does not restyle",
                                     "not distinguishable": "restyling not distinguishable at this n"}[style])
    return out
