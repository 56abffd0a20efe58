"""The schedule control (notebook 12): is the priors' gain a fix of SD's schedule, or of something else?

The paper explains plain ControlNet's artefacts by a mismatch: under SD's schedule the noisiest training input
still holds ``sqrt(alpha_bar(999)) = 0.068`` of the image, while sampling starts from ``N(0, I)``, which holds none.
It offers its priors as the training-free alternative to retraining under zero terminal SNR (Lin et al. 2024),
where the training input at ``T`` is pure noise, like the start. Two stacks trained with one recipe, differing in
the schedule alone (:data:`STACKS`), separate the two:

* **joint - normal** on each stack: the prior's gain over plain ControlNet (``N(0, I)``, ``mu = 1``);
* the **interaction** ``(joint - normal on SD) - (joint - normal on zero SNR)``: how much of the gain the
  schedule explains;
* the **cross comparison** ``joint on SD - normal on zero SNR``: does the training-free fix match retraining?
* an **A/A check** on each stack: plain ControlNet against itself on disjoint sampling seeds, whose interval must
  include 0, with the smallest difference the design detects at 80 % power.

Every arm samples the same ``n`` maps ``k`` times (seed ``seed + r n + i`` for sample ``r`` of map ``i``; the A/A
arm takes samples ``k .. 2k - 1``), so arms of both stacks are paired, and one :class:`~.evaluation.Comparison`
resamples maps for all of them: in blocks of consecutive frames where the maps are frames of one drive
(:func:`frame_block`).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ..data.profiles import PROFILES, repo_path, training_seed_folder
from ..metrics.colour import colour_spread
from ..metrics.resampling import Draws, detectable, interval
from ..metrics.verdict import relation_of_difference
from ..models import make_scheduler
from ..sampling import ddim_timesteps
from .context import build_priors, eval_set
from .evaluation import COLUMNS, Comparison, column_label, frame_block
from .experiments import generate
from .settings import Settings

# schedule -> profile of the stack trained under it (the same recipe otherwise), per dataset
STACKS = {"camvid": {"sd": "camvid-sd", "zero-snr": "camvid"},
          "toy": {"sd": "toy-gv", "zero-snr": "toy-gv-zero-snr"}}
KINDS = ("spatial", "categorical", "joint")


def prior_share(schedule: str, mu: float, steps: int = 20) -> tuple[int, float]:
    """``(t_start, sqrt(alpha_bar(t_start)))``: where ``mu`` starts on ``schedule`` and the share of the prior's
    draw the start keeps there (Eq. 6)."""
    sched = make_scheduler("ddim", schedule)
    t = int(ddim_timesteps(sched, steps, mu)[0])
    return t, float(sched.alphas_cumprod[t].sqrt())


def matched_mu(schedule: str, mu: float, other: str, steps: int = 20) -> float:
    """The ``mu`` (a multiple of ``1 / steps``) at which ``other`` keeps the share of the prior that ``schedule``
    keeps at ``mu``: the two stacks compared at equal shares rather than equal ``mu``."""
    target = prior_share(schedule, mu, steps)[1]
    grid = [j / steps for j in range(1, steps + 1)]
    return min(grid, key=lambda m: abs(prior_share(other, m, steps)[1] - target))


def _samples(s: Settings, labels, prior, mu, first: int, k: int) -> torch.Tensor:
    """``k`` samples of every map, seed-major: sample ``r`` of map ``i`` has seed ``seed + (first + r) n + i``."""
    n = len(labels)
    return torch.cat([generate(s, labels, prior=prior, mu=mu, seed_offset=(first + r) * n).images for r in range(k)])


def arms(settings: dict[str, Settings], k: int, mu: float = 0.8, kinds=KINDS) -> tuple[dict, pd.DataFrame]:
    """Every arm's images ``{name: uint8 [k n, H, W, 3]}`` and a table of what each ran.

    Per stack (``settings``: schedule name, a key of ``scp_core.models.SCHEDULES`` -> its :class:`Settings`):
    plain ControlNet twice (samples ``0 .. k - 1`` and, for the A/A check, ``k .. 2k - 1``), then each prior of
    ``kinds`` at ``mu`` and at the ``mu`` where this schedule keeps the share the other keeps at ``mu``
    (:func:`matched_mu`).
    """
    images, rows = {}, []
    a, b = settings
    for name, sp in settings.items():
        priors = build_priors(sp)
        _, labels = eval_set(sp)
        mus = sorted({mu, matched_mu(b if name == a else a, mu, name, sp.steps)}, reverse=True)
        images[f"{name}: normal"] = _samples(sp, labels, priors["normal"], None, 0, k)
        images[f"{name}: normal, seeds {k}-{2 * k - 1}"] = _samples(sp, labels, priors["normal"], None, k, k)
        rows += [{"stack": name, "prior": "normal", "mu": 1.0, "samples": f"0-{k - 1}"},
                 {"stack": name, "prior": "normal", "mu": 1.0, "samples": f"{k}-{2 * k - 1} (A/A)"}]
        for kind in kinds:
            for m in mus:
                images[f"{name}: {kind} mu={m:g}"] = _samples(sp, labels, priors[kind], m, 0, k)
                rows.append({"stack": name, "prior": kind, "mu": m, "samples": f"0-{k - 1}"})
    for row, name in zip(rows, images):
        t, share = prior_share(row["stack"], row["mu"], settings[row["stack"]].steps)
        row.update(arm=name, t_start=t, prior_share=share if row["prior"] != "normal" else 0.0)
    return images, pd.DataFrame(rows)


# how a contrast's verdict reads where "better" would not say which way (the interaction compares two gains)
INTERACTION_WORDS = {"better": "larger gain on SD's schedule", "worse": "larger gain under zero terminal SNR"}


def effect(comp: Comparison, col: str, plus: list[str], minus: list[str], words: dict | None = None) -> dict:
    """A linear contrast of arms, ``sum(plus) - sum(minus)``, in column ``col``: its value, 95 % interval from the
    paired draws (the same resampled maps for every arm), verdict and the difference detectable at 80 % power."""
    draws = comp.draws(col)
    value = sum(draws[a].value for a in plus) - sum(draws[b].value for b in minus)
    d = sum(draws[a].draws for a in plus) - sum(draws[b].draws for b in minus)
    ci = interval(Draws(value, d))
    verdict = relation_of_difference(ci, COLUMNS[col][1])
    return {"column": col, "metric": column_label(comp.s, col), "value": float(value), "ci": list(ci),
            "verdict": (words or {}).get(verdict, verdict),
            "detectable_80": detectable(Draws(value, d), Draws(0.0, np.zeros_like(d)))}


def effects(comp: Comparison, k: int, mu_sd: float, mu_zero: float, cols=("kid", "fd", "miou")) -> pd.DataFrame:
    """The control's effects (module docstring), the joint prior at ``mu_sd`` on the SD stack and at ``mu_zero``
    on the zero-SNR stack, in every column of ``cols`` the comparison has."""
    js, jz, n = f"sd: joint mu={mu_sd:g}", f"zero-snr: joint mu={mu_zero:g}", "normal"
    named = {
        "joint - normal, SD stack": ([js], [f"sd: {n}"]),
        "joint - normal, zero-SNR stack (do they compose?)": ([jz], [f"zero-snr: {n}"]),
        "interaction: (joint - normal on SD) - (joint - normal on zero SNR)":
            ([js, f"zero-snr: {n}"], [f"sd: {n}", jz]),
        "SD + joint - zero-SNR + normal (the training-free fix against retraining)": ([js], [f"zero-snr: {n}"]),
        "A/A, SD stack: normal on two disjoint seed sets": ([f"sd: {n}, seeds {k}-{2 * k - 1}"], [f"sd: {n}"]),
        "A/A, zero-SNR stack": ([f"zero-snr: {n}, seeds {k}-{2 * k - 1}"], [f"zero-snr: {n}"]),
    }
    have = [c for c in cols if c in comp.columns]
    return pd.DataFrame([{"effect": name, "mu_sd": mu_sd, "mu_zero_snr": mu_zero,
                          **effect(comp, c, plus, minus, INTERACTION_WORDS if name.startswith("interaction") else None)}
                         for name, (plus, minus) in named.items() for c in have])


def mu_pairs(mu: float, steps: int) -> list[tuple[float, float, str]]:
    """``(mu on SD, mu on zero SNR, what is equal)``: the paper's ``mu`` on both, then each stack's ``mu`` beside the
    other's at the same share of the prior (:func:`matched_mu`)."""
    out = [(mu, mu, "equal mu"),
           (mu, matched_mu("sd", mu, "zero-snr", steps), f"equal share of the prior (SD's at mu = {mu:g})"),
           (matched_mu("zero-snr", mu, "sd", steps), mu, f"equal share of the prior (zero SNR's at mu = {mu:g})")]
    return [p for i, p in enumerate(out) if p[:2] not in [q[:2] for q in out[:i]]]


def schedule_control(settings: dict[str, Settings], k: int = 4, mu: float = 0.8, kinds=KINDS,
                     block: int | None = None) -> dict:
    """Run the control: every arm (:func:`arms`) scored in one comparison, resampled in blocks of ``block``
    consecutive maps (``None``: :func:`frame_block` at real scale, 1 on the toy profiles, whose maps are
    independent). Returns ``{"arms", "table", "effects", "comparison", "images", "block", "real"}``."""
    s = next(iter(settings.values()))
    real_u8, labels = eval_set(s)
    info = frame_block(s) if block is None else {"block": int(block)}
    images, arm_table = arms(settings, k, mu, kinds)
    comp = Comparison(s, labels, block=info["block"])
    for name, u8 in images.items():
        comp.add(name, u8)
    n_boot = comp.n_boot or 1

    def spread(u8) -> dict:
        c = colour_spread(u8, real_u8, n_boot=n_boot, seed=s.seed)
        return {"colour_spread": c["colour"], "colour_spread_ci": c["colour_ci"],
                "brightness_spread": c["brightness"], "brightness_spread_ci": c["brightness_ci"]}
    table = pd.DataFrame([{**row, **comp.row(row["arm"]), **spread(images[row["arm"]])}
                          for row in arm_table.to_dict("records")])
    steps = next(iter(settings.values())).steps
    eff = pd.concat([effects(comp, k, m_sd, m_zero).assign(pairing=what) for m_sd, m_zero, what in mu_pairs(mu, steps)
                     if "joint" in kinds], ignore_index=True)
    return {"arms": arm_table, "table": table, "effects": eff, "comparison": comp, "images": images, "block": info,
            "real": real_u8, "labels": labels}


def partner(profile: str) -> str | None:
    """The stack trained with ``profile``'s recipe under the other schedule (:data:`STACKS`), or ``None``."""
    for pair in STACKS.values():
        if profile in pair.values():
            return next(p for p in pair.values() if p != profile)
    return None


def _stacks(profile: str) -> dict[str, str]:
    base = "toy" if profile.startswith("toy") else profile.removesuffix("-sd")
    if base not in STACKS:
        raise ValueError(f"the schedule control has stacks for {sorted(STACKS)}, not for profile {profile!r}")
    return STACKS[base]


def stack_settings(profile: str, notebook: str = "12_schedule_control", training_seed: int | dict = 0,
                   **given) -> dict[str, Settings]:
    """``{schedule: Settings}`` of the two stacks of ``profile``'s dataset (:data:`STACKS`), with the run's counts;
    ``training_seed`` >= 1: each stack's ControlNet stage from that training seed (:func:`training_seeds`), or
    ``{schedule: seed}`` per stack (0: the stack itself)."""
    from .settings import settings as settings_of  # the table's counts for the notebook

    out = {name: settings_of(p, notebook=notebook, **given) for name, p in _stacks(profile).items()}
    seeds = training_seed if isinstance(training_seed, dict) else dict.fromkeys(out, training_seed)
    return {name: replace(sp, trained=training_seed_folder(sp.profile, seeds[name])) if seeds.get(name) else sp
            for name, sp in out.items()}


# how an effect's name (:func:`effects`) names each stack
STACK_WORDS = {"sd": "SD stack", "zero-snr": "zero-SNR stack"}


def effects_within(eff: pd.DataFrame, stacks) -> pd.DataFrame:
    """The rows of :func:`effects` that involve only the stacks ``stacks`` (schedule names): a training seed one
    stack lacks is run beside the other stack's seed 0, and only its own stack's effects are read from it."""
    other = [STACK_WORDS[n] for n in STACK_WORDS if n not in stacks]
    keep = eff.effect.map(lambda e: not any(w in e for w in other) and any(STACK_WORDS[n] in e for n in stacks))
    return eff[keep] if other else eff


def training_seeds(profile: str, upto: int = 9) -> dict:
    """The ControlNet training seeds of the two stacks of ``profile``'s dataset: ``{"both": [0, ...], "partial":
    {seed: [schedules that have it]}, "missing": {seed: [(schedule, the command that trains it)]}}``; seed 0 is
    each stack itself, seed ``N`` >= 1 its ``training_seed_folder`` when that holds trained modules
    (``modules.json``)."""
    from ..pipeline_folder import MODULES_NAME  # noqa: PLC0415 (kept beside its one use)

    both, partial, missing, stacks = [0], {}, {}, _stacks(profile)
    for seed in range(1, upto + 1):
        have = {name: (repo_path(training_seed_folder(p, seed)) / MODULES_NAME).is_file()
                for name, p in stacks.items() if PROFILES[p].pipeline and not PROFILES[p].is_toy}
        if have and all(have.values()):
            both.append(seed)
        elif any(have.values()):
            partial[seed] = [name for name, ok in have.items() if ok]
            missing[seed] = [(name, f"scpdiff train --profile {stacks[name]} --seed {seed}")
                             for name, ok in have.items() if not ok]
    return {"both": both, "partial": partial, "missing": missing}
