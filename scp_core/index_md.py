"""``index.md`` of a report folder: every notebook's status and time, its tables and figures, the key numbers.

Written by :func:`scp_core.reproduce.reproduce` after a batch, from the metrics files the notebooks
wrote (nothing is measured here). Every verdict it prints is the notebook's own, made by
:mod:`scp_core.metrics.verdict`, or quotes the intervals it rests on.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .data.profiles import PROFILES, REPO_ROOT
from .io import write_text
from .claims import block
from .metrics.verdict import interval_text
from .protocol import index_lines

TITLES = {
    "00_quickstart": "Quickstart: one label map, four priors",
    "01_mismatch_study": "Fig. 3: the mismatch of N(0, I)",
    "02_noise_priors": "Prior construction (Eqs. 5, 7, 8)",
    "03_prior_comparison": "Table 1 and Fig. 7: the four priors",
    "04_mu_sweep": "Fig. 8: the mu sweep",
    "05_diversity": "Table 3: diversity",
    "06_comparison_table": "Table 2: the paper's rows and ours",
    "07_training": "Training the toy stack (small)",
    "08_global_factors": "Beyond the paper: priors that keep global factors",
    "09_zero_snr": "Is the schedule the bottleneck? Zero terminal SNR",
    "10_prior_transfer": "Prior transfer and a locked UNet",
    "11_training_seeds": "Table 1 on three training seeds",
    "12_schedule_control": "The schedule control: SD's schedule against zero terminal SNR",
}
NOTEBOOKS = list(TITLES)  # in the study's order


def _load(out: Path, name: str) -> dict | None:
    p = out / "metrics" / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _ci_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Every ``*_ci`` column of a results table as ``[lo, hi]`` text (3 decimals; mIoU 2)."""
    df = df.copy()
    for col in [c for c in df if c.endswith("_ci")]:
        digits = 2 if col.startswith(("miou", "acc")) else 3
        df[col] = df[col].map(lambda c, d=digits: interval_text(c, d) if isinstance(c, (list, tuple)) else "")
    return df


def _md(df: pd.DataFrame, columns) -> str:
    """The columns of ``df`` that exist, as a markdown table (3 decimals)."""
    return df[[c for c in columns if c in df]].to_markdown(index=False, floatfmt=".3f")


def _fmt_ci(ci, digits: int = 2) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""


def _spread_table(df: pd.DataFrame) -> pd.DataFrame:
    """A notebook 08 / 09 table with its distance and brightness-spread intervals as ``[lo, hi]`` text."""
    return df.assign(fd_ci=df["fd_ci"].map(lambda c: _fmt_ci(c, 3)),
                     spread_ratio_ci=df["spread_ratio_ci"].map(lambda c: _fmt_ci(c, 2)))


def _metric(m: dict) -> str:
    """The distance a metrics file was measured with: FD-toy on the toy profiles, FID at real scale."""
    return m.get("settings", {}).get("metric", "FD-toy")


def _kid(r: dict) -> str:
    """KID times 10^3 with its 95 % interval (metrics from before the paired rule: +- its standard error)."""
    if "kid_ci" in r:
        return f"{1e3 * r['kid']:.2f} {_fmt_ci([1e3 * v for v in r['kid_ci']])}"
    return f"{1e3 * r['kid']:.2f} +- {1e3 * r['kid_se']:.2f}"


def _real(m: dict, setting: str) -> dict:
    """The real-image row of Table 1: ``real_reference`` (``real_ceiling`` in older metrics files)."""
    return (m.get("real_reference") or m["real_ceiling"])[setting]


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test", "holdout": "held-out"}


def _eval_splits(m: dict) -> tuple[str, str]:
    """The evaluation splits a metrics file was measured on, in words (``validation + held-out``) and by name
    (``val + holdout``), read from its settings."""
    splits = m.get("settings", {}).get("eval_splits") or ["val"]
    return " + ".join(SPLIT_WORDS.get(s, s) for s in splits), " + ".join(splits)


def _table1(m: dict) -> str:
    paper = {r["prior"]: r for r in m["paper_table1"]}
    metric = _metric(m)
    words, names = _eval_splits(m)
    lines = []
    for setting, rows in m["tables"].items():
        n, seed = rows[0]["n"], m["settings"]["seed"]
        lines.append(f"\n**{setting}** ({n} {words} maps, seeds {seed}..{seed + n - 1}, "
                     f"{m['settings']['steps']} DDIM steps; verdict: {m['verdict'][setting]})\n")
        kid, judge_b = "kid" in rows[0], "fid" in rows[0]
        lines.append(f"| prior | mu | mIoU (ours) | Acc (ours) | {metric} (ours) [95% CI] |"
                     + (" KID x1e3 (ours) |" if kid else "")
                     + (" judge 2: FID (Inception) | judge 2: mIoU (segmenter B) |" if judge_b else "")
                     + " paper Cityscapes mIoU / Acc / FID | paper ADE20K mIoU / Acc / FID |")
        lines.append("|---|---|---|---|---|---|---|" + ("---|" if kid else "") + ("---|---|" if judge_b else ""))
        for r in rows:
            p = paper[r["prior"]]
            lines.append(f"| {r['prior']} | {r['mu']:g} | {r['miou']:.2f} {_fmt_ci(r.get('miou_ci'))} | "
                         f"{r['acc']:.2f} | {r['fd']:.3f} {_fmt_ci(r.get('fd_ci'), 3)} |"
                         + (f" {_kid(r)} |" if kid else "")
                         + (f" {r['fid']:.2f} {_fmt_ci(r['fid_ci'])} | {r['miou_b']:.2f} {_fmt_ci(r['miou_b_ci'])} |"
                            if judge_b else "")
                         + f" {p['cityscapes_miou']} / {p['cityscapes_acc']} / "
                         f"{p['cityscapes_fid']} | {p['ade20k_miou']} / {p['ade20k_acc']} / {p['ade20k_fid']} |")
        c = _real(m, setting)
        lines.append(f"\nReal images: the segmenter on the real {words} images, mIoU {c['miou']:.2f}, "
                     f"Acc {c['acc']:.2f} (the ceiling). Real versus real: {n} real training images against the "
                     f"{words} reference (train against {names}), {metric} {c['fd']:.3f} {_fmt_ci(c.get('fd_ci'), 3)}"
                     + (f", KID x1e3 {_kid(c)}" if "kid" in c else "")
                     + (f", FID (Inception) {c['fid']:.2f} {_fmt_ci(c['fid_ci'])}" if "fid" in c else "")
                     + ": what two independent real sets of this size score.")
    return "\n".join(lines)


def _seeds_section(out: Path) -> list[str]:
    """Notebook 11: Table 1 (daylight) on the three training seeds."""
    m = _load(out, "11_training_seeds")
    if not m:
        return []
    seeds = m["training_seeds"]
    df = _ci_columns(pd.DataFrame(seeds["table"]))
    return ["", "## Table 1 on three training seeds", "",
            "Daylight; the ControlNet stage retrained from seeds 1 and 2 (notebook 11):", "",
            _md(df, ["training_seed", "prior", "mu", "fd", "fd_ci", "miou", "miou_ci", "fid", "fid_ci"]), "",
            pd.DataFrame(seeds["gaps"]).drop(columns=["text"]).to_markdown(index=False, floatfmt=".3f"), "",
            "![Table 1 on three training seeds](figures/11_training_seeds.png)"]


def _rule(m: dict) -> str:
    """A note under a section whose metrics predate the paired-interval rule (their verdicts read the older one)."""
    if "protocol" in m:
        return ""
    return ("\n*Written before the paired-interval rule: the verdicts in this section read disjoint marginal 95 % "
            "intervals of the generated images alone (the reference set's variation left out), and are not restated "
            "among the results in sentences.*\n")


def _wall(w) -> str:
    """A batch's wall time: seconds, or the note of a run that was not one batch."""
    return f"{w} s" if isinstance(w, (int, float)) else str(w)


def _index_header(run: dict) -> list[str]:
    """The title, the run's metadata and the head of the notebook table."""
    lines = [f"# SCP-Diff study: profile `{run['profile']}`" + (" (smoke run)" if run["smoke"] else "")
             + (" (student quick run)" if run.get("quick") else ""), "",
             "All numbers below were measured by this project's code on this profile; the paper's "
             "numbers stand beside them for reference. On the toy profiles the distance is **FD-toy** "
             "(Frechet distance on the toy segmenter's features), not FID; on real images it is **FID** "
             "(the standard TF-Inception network) with **KID** beside it (unbiased, the fair comparison at a "
             "hundred images, where FID is biased upwards).", "",
             f"Run: commit `{run['commit']}`, finished {run['finished']}, Python {run['python']}, "
             f"batch wall time {_wall(run['batch_wall_s'])}."
             + "".join(f" Later re-run alone: {', '.join(p['notebooks'])} (commit `{p['commit']}`, "
                       f"{p['finished']}, {p['wall_s']} s)." for p in run.get("partial_runs", [])), "",
             "Each notebook's executed copy (outputs included) is under `notebooks/`: read it on any "
             "notebook viewer without running anything.", "",
             "| notebook | what | status | wall time (s) | tables | figures |", "|---|---|---|---|---|---|"]
    if run.get("quick"):
        counts = "; ".join(f"{n}: " + ", ".join(f"{k}={v}" for k, v in c.items()) for n, c in run["quick"].items())
        lines[2:2] = [f"**A student quick run (`scpdiff reproduce --quick`), NOT the reference results: small counts "
                      f"({counts}; every other count, DDIM steps included, as the reference's): noisy numbers that "
                      f"may not show the reference's ordering. The reference is `reports/{run['profile']}/`.**", ""]
    if run.get("profile_params"):
        counts = "; ".join(f"`{n}`: " + ", ".join(f"{k}={v}" for k, v in p.items())
                           for n, p in run["profile_params"].items())
        lines[-2:-2] = [f"Counts this profile passes to the notebooks (fixed before the run): {counts}.", ""]
    if run.get("eval_splits"):
        splits = ", ".join(run["eval_splits"])
        lines[-2:-2] = [f"Evaluation splits of every notebook (given for this run): {splits}.", ""]
    return lines


def _notebook_rows(out: Path, run: dict) -> list[str]:
    """One table row per notebook: its status, wall time, tables and figures."""
    rows = []
    for name in NOTEBOOKS:
        rec = run["notebooks"].get(name)
        prefix = name.split("_")[0]
        tables = sorted(p.name for p in (out / "tables").glob(f"{prefix}_*.md")) if (out / "tables").is_dir() else []
        figs = sorted(p.name for p in (out / "figures").glob(f"{prefix}_*.png")) if (out / "figures").is_dir() else []
        status = ("not run" if rec is None else
                  rec["status"] if rec["status"] == "ok" else f"**FAILED**: {rec['error']}")
        executed = (out / "notebooks" / f"{name}.ipynb").is_file()
        shown = f"[`{name}`](notebooks/{name}.ipynb)" if executed else f"`{name}`"
        rows.append(f"| {shown} | {TITLES[name]} | {status} | {rec['wall_s'] if rec else ''} | "
                    + ", ".join(f"[{t}](tables/{t})" for t in tables) + " | "
                    + ", ".join(f"[{f}](figures/{f})" for f in figs) + " |")
    return rows


def _table1_section(out: Path) -> list[str]:
    m = _load(out, "prior_comparison")
    if not m:
        return []
    lines = ["", "## Table 1: the priors", _rule(m), _table1(m), "", "![Table 1](figures/03_prior_comparison.png)"]
    bright = out / "tables" / "03_global_brightness.csv"
    if bright.is_file():
        lines += ["", "### Global factors: the spread of per-image mean brightness", "",
                  "Independent token draws *could* average per-image lighting away; measured, real against generated "
                  "images of the same maps and seeds (`spread ratio`: generated over real, 1 is right, with its 95 % "
                  "interval where the run recorded one):", "",
                  pd.read_csv(bright).to_markdown(index=False, floatfmt=".3f")]
    return lines


def _mismatch_section(out: Path) -> list[str]:
    m = _load(out, "01_mismatch_study")
    if not m:
        return []
    df = _ci_columns(pd.DataFrame(m["table"]))
    seed = m["settings"]["seed"]
    verdict = f" {m['verdict']}." if m.get("verdict") else ""
    return ["", "## Fig. 3: the mismatch", _rule(m),
            f"\n{m['n_eval']} validation maps, seeds {seed}..{seed + m['n_eval'] - 1} "
            f"(the same for every start). {_metric(m)} starting from N(sqrt(a) x0, (1-a) I) by mu, and from N(0, I) "
            f"(paper: the real-latent start is clearly better at every mu). Every N_x0 start holds the reference "
            f"image of its map: those rows are reconstructions, not generation. Gap at the largest mu: "
            f"**{m['gap_at_max_mu']:.3f}**.{verdict}\n",
            _md(df, ["start", "kind", "mu", "fd", "fd_ci", "miou", "miou_ci", "acc", "n"]),
            "", "![Fig. 3](figures/01_mismatch_study.png)"] + _mismatch_sweep(m)


def _mismatch_sweep(m: dict) -> list[str]:
    """Fig. 3's approach to the round trip, and the same sweep on the stack of the other schedule, where run."""
    if "sweep" not in m:
        return []
    lines = ["", f"Towards the autoencoder's round trip: {m['sweep']['text']}"]
    other = m.get("other_schedule")
    if other:
        df = _ci_columns(pd.DataFrame(other["table"]))
        lines += ["", f"The same sweep on `{other['profile']}`, the recipe under the other noise schedule: "
                      f"{other['sweep']['text']}", "", _md(df, ["start", "kind", "mu", "fd", "fd_ci", "miou", "miou_ci",
                                                               "n"]),
                  "", "![Fig. 3, the other schedule](figures/01_mismatch_study_other_schedule.png)"]
    return lines


def _mu_sweep_section(out: Path) -> list[str]:
    m = _load(out, "04_mu_sweep")
    if not m:
        return []
    df = pd.DataFrame(m["table"])
    n, seed = int(df.n.iloc[0]), m["settings"]["seed"]
    best = m.get("best_by_prior", {})
    normal = df[df.prior == "normal"].iloc[0]
    return ["", "## Fig. 8: mu sweep", _rule(m),
            f"\n{n} validation maps, seeds {seed}..{seed + n - 1} (the same for every "
            "mu). The best mu of each prior, with the mu not distinguishable from it:\n",
            *[f"* **{kind}**: {text}" for kind, text in best.items()],
            f"\nPlain ControlNet (normal, mu = 1): {normal.fd:.3f} {interval_text(normal.fd_ci)}. "
            "Paper: best mu in [0.8, 0.9].\n",
            _md(_ci_columns(df), ["prior", "mu", "fd", "fd_ci", "miou", "miou_ci", "acc", "n"]),
            "", "![Fig. 8](figures/04_mu_sweep.png)"]


def _diversity_section(out: Path) -> list[str]:
    m = _load(out, "05_diversity")
    if not m:
        return []
    df = pd.DataFrame(m["table"])
    paper = "; ".join(f"{r['method']} {r['lpips']} / {r['ms_ssim']}" for r in m["paper_table3"])
    cols = ["prior", "mu", "lpips", "lpips_ci", "ms_ssim", "ms_ssim_ci", "maps", "k", "lpips_note"]
    verdict = f" {m['verdict']}." if m.get("verdict") else ""
    return ["", "## Table 3: diversity", _rule(m),
            f"\n{m['n_maps']} maps x {m['k']} samples (the paper: 20 per map), 95 % bootstrap intervals over the "
            f"maps.{verdict} Paper (ADE20K, LPIPS / MS-SSIM): {paper}.\n",
            _md(_ci_columns(df), cols), "", "![diversity](figures/05_diversity.png)"]


def _reading_section(out: Path) -> list[str]:
    """How to read the distances (they depend on n), and what this study does not reproduce."""
    fds = []
    for name, label in (("prior_comparison", "Table 1"), ("01_mismatch_study", "Fig. 3"), ("04_mu_sweep", "Fig. 8")):
        m = _load(out, name)
        rows = (next(iter(m["tables"].values())) if name == "prior_comparison" else m["table"]) if m else []
        normal = [r for r in rows if r.get("prior") == "normal" or r.get("start") == "N(0, I)"]
        if normal:
            fds.append(f"{normal[0]['fd']:.3f} at n = {normal[0]['n']} ({label})")
    if not fds:
        return []
    metric = _metric(_load(out, "prior_comparison") or _load(out, "04_mu_sweep") or {})
    return ["", "## Reading the numbers", "",
            f"**{metric} depends on n and on the maps.** A Frechet distance estimated from n images is biased "
            "upwards, more so at small n, and the tables evaluate different numbers of maps (plain ControlNet: "
            f"{', '.join(fds)}): compare distances only within one table, where the maps and seeds are shared. "
            "KID, where shown, is unbiased.", "",
            "**Not reproduced here**, and why: the paper's Figs. 5-6 and Table 4 rest on SD-scale models, the real "
            "datasets and GPU time that this CPU study does not have (the real-scale path of `scpdiff` runs such "
            "experiments where the weights and data exist); Table 3's 20 samples per map (the 2-core CPU budget "
            "allows 8 on toy and 4 on CamVid); FID on 50,000 samples (Table 2; our rows use the counts stated "
            "with them)."]


def _global_factors_section(out: Path) -> list[str]:
    m = _load(out, "08_global_factors")
    if not m:
        return []
    lines = ["", "## Beyond the paper: priors that keep each image's global factors", _rule(m), "",
             f"Harness settings, fixed before the run: {m['harness']}. `spread_ratio`: std of per-image "
             "brightness, generated over real (1 is right).", ""]
    for setting, rows in m["tables"].items():
        df = _spread_table(pd.DataFrame(rows))
        cols = [c for c in ("prior", "mu", "fd", "fd_ci", "kid", "miou", "spread_ratio", "spread_ratio_ci", "n")
                if c in df]
        lines += [f"**{setting}** ({_metric(m)}; verdict: {m['verdict'][setting]})", "",
                  df[cols].to_markdown(index=False, floatfmt=".3f"), ""]
    return lines + ["![global factors](figures/08_global_factors.png)"]


def _zero_snr_section(out: Path) -> list[str]:
    m = _load(out, "09_zero_snr")
    if not m:
        return []
    df = _spread_table(pd.DataFrame(m["table"]))
    cols = ["schedule", "prior", "mu", "fd", "fd_ci", "miou", "spread_ratio", "spread_ratio_ci", "n"]
    return ["", "## Is the schedule the bottleneck? Zero terminal SNR", _rule(m), "",
            f"toy-city-gv, {m['n_eval']} validation maps: the committed stack (SD's schedule) against the same "
            f"stack retrained under zero terminal SNR. {m['check']}. {m['priors']}.", "",
            df[cols].to_markdown(index=False, floatfmt=".3f"), "", "![zero-SNR samples](figures/09_samples.png)"]


def _transfer_section(out: Path) -> list[str]:
    m = _load(out, "10_prior_transfer")
    if not m:
        return []
    df = _ci_columns(pd.DataFrame(m["table"]))
    cols = ["model", "start", "mu", "fd_daylight", "fd_daylight_ci", "fd_toy-gv", "fd_toy-gv_ci", "miou", "miou_ci",
            "brightness_mean", "n"]
    answers = [f"- Training-free: {m['answers']['training_free']}."]
    answers += [f"- Transfer: {text}." for text in m["answers"]["transfer"].values()]
    return ["", "## Prior transfer and a locked UNet", _rule(m), "",
            f"Three toy stacks, {m['n_eval']} validation maps each, every start scored against both regimes' real "
            f"images ({_metric(m)}). Rules fixed before the run: {m['goals']}", "",
            _md(df, cols), "", *answers, "", "![prior transfer](figures/10_prior_transfer.png)"]


def _table2_section(out: Path) -> list[str]:
    m = _load(out, "06_comparison_table")
    if not m:
        return []
    return ["", "## Table 2: the paper's rows and ours", "",
            pd.DataFrame(m["table"]).to_markdown(index=False, floatfmt=".3f")]


def _protocol_section(out: Path) -> list[str]:
    """Every change made to a notebook's protocol after results were seen, beside the rule it affects."""
    lines = []
    for name in ("01_mismatch_study", "prior_comparison", "04_mu_sweep", "05_diversity", "08_global_factors",
                 "09_zero_snr", "10_prior_transfer", "11_training_seeds"):
        m = _load(out, name)
        protocol = (m or {}).get("protocol")
        if protocol:
            lines += [f"- `{name}` (rule: {protocol['decision_rule']}; margin: {protocol.get('margin')}): "
                      + "; ".join(protocol.get("changes_after_results") or ["none"])]
    return ["", "## Protocol changes made after seeing results", ""] + lines if lines else []


def _model_section(out: Path, run: dict) -> list[str]:
    """What the profile's trained stack can do on its own (its report's checks, ``training_facts.json``): whether
    plain ControlNet paints and whether it copies, so every gain below is read against it."""
    zoo = PROFILES[run["profile"]].zoo if run["profile"] in PROFILES else None
    facts = zoo / "training_facts.json" if zoo else None
    trained = json.loads(facts.read_text()) if facts and facts.is_file() else {}
    c = trained.get("checks")
    if not c:
        return []
    ratio = "undefined" if c["kid_ratio"] is None else f"{c['kid_ratio']:.2f}x"
    paints = ("it paints by that measure, so the priors' gains below are measured on a model that paints on its own"
              if c["kid_goal_met"] else "it falls **short** of that goal (by this measure not yet a competent "
              "model: its report shows what it paints), so the priors' gains below are measured on this model, "
              "not on a competent one")
    schedule = ("It was trained under zero terminal SNR (v-prediction, DDIM steps from t = 999), the retraining fix "
                "(Lin et al. 2024) the paper offers its priors as the alternative to: at mu = 1 every prior's start "
                "is pure noise, the same as N(0, I), a prior acts only through mu < 1, and there is no schedule "
                "mismatch left for it to fix (notebook 12 trains the same recipe under SD's schedule to separate "
                "the two). "
                if trained.get("noise_schedule") == "zero-snr" else "")
    rel = Path("..", "..", zoo.relative_to(REPO_ROOT), "REPORT.md").as_posix()
    return ["", "## The model these numbers stand on", "",
            f"{schedule}Plain ControlNet (normal prior, mu = 1) on the {c['n_generated']} validation maps scores KID "
            f"x1e3 {c['kid_plain_vs_val_x1e3']:.1f} against the real validation frames, where the real training frames "
            f"score {c['kid_train_vs_val_x1e3']:.1f} ({ratio} that floor; the goal is at most {c['kid_goal']:g}x): "
            f"{paints}. "
            f"{100 * c['share_below_closest_val']:.1f} % of its samples lie nearer to a training frame than the "
            f"closest validation frame does (goal at most {100 * c['share_goal']:g} %: "
            f"{'met' if c['share_goal_met'] else 'NOT met'}). Both checks: [{zoo.name} report]({rel})."]


def _claims_section(out: Path, run: dict) -> list[str]:
    return ["", "## Results in sentences", "", "Generated from the metrics files by the rule of "
            "`scp_core.metrics.verdict` (the README carries the same block):", "", block(out, run["profile"])]


def write_index(out: Path, run: dict) -> Path:
    """``index.md``: every notebook's status and time, its tables and figures, key numbers."""
    header = _index_header(run)  # the title, then the primary tests of reports/PROTOCOL.md
    lines = (header[:2] + index_lines(out, run) + header[2:] + _notebook_rows(out, run) + _model_section(out, run)
             + _claims_section(out, run) + _protocol_section(out))
    for section in (_table1_section, _seeds_section, _mismatch_section, _mu_sweep_section, _diversity_section,
                    _reading_section, _global_factors_section, _zero_snr_section, _transfer_section, _table2_section):
        lines += section(out)
    files = sorted(p.relative_to(out).as_posix() for d in ("tables", "figures") if (out / d).is_dir()
                   for p in (out / d).iterdir() if p.suffix in (".md", ".png", ".csv"))
    lines += ["", "## Every table and figure", ""] + [f"- [{f}]({f})" for f in files]
    return write_text(out / "index.md", "\n".join(lines) + "\n")
