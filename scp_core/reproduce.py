"""``scpdiff reproduce``: run the study notebooks with papermill and render ``reports/<profile>/``.

For each notebook: execute it (papermill, parameters ``profile``, ``smoke``, ``out_dir`` and the
profile's counts of :data:`scp_core.study.settings.PROFILE_PARAMS`; every other count comes from
the same table, which the notebook reads itself)
into ``notebooks/<name>.ipynb`` and ``html/<name>.html`` under the report folder; the
notebook itself writes tables, figures and ``metrics/<name>.json``. Every file is written
to a temporary name and renamed, so a killed run leaves no half-written report; a failing
notebook is recorded (with its error) and the batch goes on. Last, ``index.md`` lists every
table and figure, the paper's numbers beside ours, and the run's metadata.
"""
from __future__ import annotations

import json
import os
import platform
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from . import _tv_compat  # noqa: F401
from .io import REPO_ROOT, atomic_path, portable, write_text

NOTEBOOKS = ["00_quickstart", "01_mismatch_study", "02_noise_priors", "03_prior_comparison", "04_mu_sweep",
             "05_diversity", "06_comparison_table", "07_training", "08_global_factors", "09_zero_snr"]
DEFAULT_BATCH = [n for n in NOTEBOOKS if n != "07_training"]  # 07_training is optional (--with-training)
LONGEST = ["03_prior_comparison", "08_global_factors", "04_mu_sweep", "09_zero_snr", "01_mismatch_study"]
TOY_ONLY = {"09_zero_snr"}  # experiments on the toy stacks (their retrained models exist for toy-city only)
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
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
}


def profile_params(profile: str) -> dict:
    """The counts where ``profile`` departs from the notebooks' (the study's table), by notebook."""
    from .study.settings import PROFILE_PARAMS  # the study package loads the models

    return PROFILE_PARAMS.get(profile, {})


def notebook_params(profile: str, name: str, smoke: bool, out: Path, eval_splits: list[str] | None = None) -> dict:
    """The papermill parameters of one notebook in a batch: the common ones, the profile's counts and,
    where given, the evaluation splits (a list: papermill writes tuples as text)."""
    return {"profile": profile, "smoke": bool(smoke), "out_dir": str(out), **profile_params(profile).get(name, {}),
            **({"eval_splits": list(eval_splits)} if eval_splits else {})}


def report_dir(profile: str, smoke: bool, out: str | Path | None = None) -> Path:
    if out:  # absolute: the notebooks run in notebooks/, a relative path would land there
        return Path(out).expanduser().absolute()
    return REPO_ROOT / "reports" / ("_smoke" if smoke else "") / profile


def run_notebook(name: str, out: Path, params: dict, timeout: int = 6 * 3600) -> dict:
    """Execute one notebook with papermill and render HTML; never raises for notebook errors."""
    import papermill as pm  # papermill and its kernels: loaded when a notebook runs

    src = NOTEBOOK_DIR / f"{name}.ipynb"
    t = time.time()
    rec = {"name": name, "status": "ok", "error": None}
    executed = None  # the executed notebook's text, once papermill has written any
    try:
        if not src.is_file():
            raise FileNotFoundError(f"no notebook {src}")
        with atomic_path(out / "notebooks" / f"{name}.ipynb") as tmp:
            try:
                pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                                    cwd=str(NOTEBOOK_DIR), progress_bar=False, execution_timeout=timeout)
            finally:
                executed = slim_notebook(tmp.read_text()) if tmp.exists() and tmp.stat().st_size else None
            tmp.write_text(executed)
        _html(out / "notebooks" / f"{name}.ipynb", out / "html" / f"{name}.html")
    except Exception as e:  # noqa: BLE001 - a failing notebook is recorded, the batch goes on
        rec["status"] = "failed"
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:500]
        rec["traceback"] = traceback.format_exc()[-4000:]
        if executed:  # keep the executed notebook of a failure for reading; it is complete as far as it ran
            write_text(out / "notebooks" / f"{name}.failed.ipynb", executed)
    rec["wall_s"] = round(time.time() - t, 1)
    return rec


def slim_notebook(text: str) -> str:
    """An executed notebook made fit to commit and read: what a reader needs, nothing of this machine.

    Keeps every cell's results (tables, figures, printed lines); drops progress bars and warnings
    (stderr streams), widget state, per-cell timing metadata and papermill's record of paths and
    environment, and makes any remaining absolute path portable (:func:`scp_core.io.portable`).
    """
    import nbformat  # the notebook tools are loaded for a batch only

    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                continue
            if "data" in o:
                o["data"].pop("application/vnd.jupyter.widget-view+json", None)
                if not o["data"]:
                    continue
            kept.append(o)
        cell.outputs = kept
    pm_meta = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {k: pm_meta[k] for k in ("parameters", "duration") if k in pm_meta}
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.source = portable(cell.source)
        for o in cell.get("outputs", []):
            _portable_output(o)
    nb.metadata = _portable_value(nb.metadata)
    return nbformat.writes(nb)


def _portable_value(value):
    """Strings inside nested dicts / lists made portable (:func:`scp_core.io.portable`)."""
    if isinstance(value, str):
        return portable(value)
    if isinstance(value, list):
        return [_portable_value(v) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _portable_value(v) for k, v in value.items()})
    return value


def _portable_output(o) -> None:
    """Paths scrubbed where text can name one (streams, text/* and JSON data, tracebacks), never in
    binary payloads such as ``image/png``, whose base64 holds runs of ``/`` that look like paths."""
    if "text" in o:
        o["text"] = portable(o["text"])
    for key in ("traceback", "evalue"):
        if key in o:
            o[key] = _portable_value(o[key])
    for mime, value in o.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            o["data"][mime] = _portable_value(value)


def _html(nb_path: Path, html_path: Path) -> None:
    import nbformat  # the notebook tools are loaded for a batch only
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
    write_text(html_path, body)


def reproduce(profile: str = "toy", only: list[str] | None = None, smoke: bool = False,
              with_training: bool = False, out: str | Path | None = None, jobs: int = 2,
              eval_splits: list[str] | None = None) -> dict:
    """Run the notebooks and write ``index.md``; returns the run record.

    Args:
        eval_splits: the evaluation splits of every notebook (default: each notebook's in the study's table).
        jobs: notebooks run at once. With ``jobs > 1`` each kernel uses one thread
            (``SCP_THREADS=1``): on a 2-core CPU two single-threaded kernels beat one
            two-threaded kernel for these small models. ``06_comparison_table`` runs last
            (it reads ``03_prior_comparison``'s numbers).
    """
    names = list(only) if only else (NOTEBOOKS if with_training else DEFAULT_BATCH)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    if profile != "toy":
        if only and TOY_ONLY & set(names):
            raise ValueError(f"{sorted(TOY_ONLY & set(names))} run on the toy profile only (--profile toy)")
        names = [n for n in names if n not in TOY_ONLY]
    out = report_dir(profile, smoke, out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs_path = out / "runs.json"
    records = {}

    def one(name):
        print(f"[scpdiff] running {name} ...", flush=True)
        rec = run_notebook(name, out, notebook_params(profile, name, smoke, out, eval_splits))
        records[name] = rec
        print(f"[scpdiff] {name}: {rec['status']} in {rec['wall_s']} s"
              + (f" ({rec['error']})" if rec["error"] else ""), flush=True)

    last = [n for n in names if n == "06_comparison_table"]
    # longest first (by the toy batch's wall times, reports/toy/runs.json), so the two lanes end together
    first = sorted((n for n in names if n not in last),
                   key=lambda n: LONGEST.index(n) if n in LONGEST else len(LONGEST))
    if jobs > 1 and len(first) > 1:
        os.environ["SCP_THREADS"] = "1"  # inherited by the kernels
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, first))
    else:
        for name in first:
            one(name)
    for name in last:
        one(name)
    from .study import git_commit  # the study package loads the models

    # merge with the records on disk at write time: earlier (or concurrent) batches keep theirs
    previous = json.loads(runs_path.read_text()) if runs_path.is_file() else {}
    finished, wall, commit = time.strftime("%Y-%m-%d %H:%M:%S %Z"), round(time.time() - t0, 1), git_commit()
    run = {"profile": profile, "smoke": smoke, "commit": commit, "python": platform.python_version(),
           "finished": finished, "batch_wall_s": wall, "profile_params": profile_params(profile),
           **({"eval_splits": list(eval_splits)} if eval_splits else {}),
           "notebooks": {**previous.get("notebooks", {}), **{n: {**r, "commit": commit} for n, r in records.items()}}}
    if only and set(names) != set(DEFAULT_BATCH) and "batch_wall_s" in previous:
        # a partial run (--only) keeps the last whole batch's time and says what it re-ran
        run.update({k: previous[k] for k in ("commit", "finished", "batch_wall_s") if k in previous})
        run["partial_runs"] = previous.get("partial_runs", []) + [
            {"notebooks": names, "commit": commit, "finished": finished, "wall_s": wall}]
    write_text(runs_path, json.dumps(run, indent=2, default=str) + "\n")
    write_index(out, run)
    return run


# ----------------------------------------------------------------------------- index.md
def _load(out: Path, name: str) -> dict | None:
    p = out / "metrics" / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


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
    """KID times 10^3 with its jackknife standard error."""
    return f"{1e3 * r['kid']:.2f} +- {1e3 * r['kid_se']:.2f}"


def _table1(m: dict) -> str:
    paper = {r["prior"]: r for r in m["paper_table1"]}
    metric = _metric(m)
    lines = []
    for setting, rows in m["tables"].items():
        n, seed = rows[0]["n"], m["settings"]["seed"]
        lines.append(f"\n**{setting}** ({n} validation maps, seeds {seed}..{seed + n - 1}, "
                     f"{m['settings']['steps']} DDIM steps; verdict: {m['verdict'][setting]})\n")
        kid = "kid" in rows[0]
        lines.append(f"| prior | mu | mIoU (ours) | Acc (ours) | {metric} (ours) [95% CI] |"
                     + (" KID x1e3 (ours) +- SE |" if kid else "")
                     + " paper Cityscapes mIoU / Acc / FID | paper ADE20K mIoU / Acc / FID |")
        lines.append("|---|---|---|---|---|---|---|" + ("---|" if kid else ""))
        for r in rows:
            p = paper[r["prior"]]
            lines.append(f"| {r['prior']} | {r['mu']:g} | {r['miou']:.2f} {_fmt_ci(r.get('miou_ci'))} | "
                         f"{r['acc']:.2f} | {r['fd']:.3f} {_fmt_ci(r.get('fd_ci'), 3)} |"
                         + (f" {_kid(r)} |" if kid else "")
                         + f" {p['cityscapes_miou']} / {p['cityscapes_acc']} / "
                         f"{p['cityscapes_fid']} | {p['ade20k_miou']} / {p['ade20k_acc']} / {p['ade20k_fid']} |")
        c = m["real_ceiling"][setting]
        lines.append(f"\nReal validation images: mIoU {c['miou']:.2f}, Acc {c['acc']:.2f}, {metric} {c['fd']:.3f}"
                     + (f", KID x1e3 {_kid(c)}" if "kid" in c else "") + ".")
    return "\n".join(lines)


def _wall(w) -> str:
    """A batch's wall time: seconds, or the note of a run that was not one batch."""
    return f"{w} s" if isinstance(w, (int, float)) else str(w)


def _index_header(run: dict) -> list[str]:
    """The title, the run's metadata and the head of the notebook table."""
    lines = [f"# SCP-Diff study: profile `{run['profile']}`" + (" (smoke run)" if run["smoke"] else ""), "",
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
    lines = ["", "## Table 1: the priors", _table1(m), "", "![Table 1](figures/03_prior_comparison.png)"]
    bright = out / "tables" / "03_global_brightness.csv"
    if bright.is_file():
        lines += ["", "### Global factors: the spread of per-image mean brightness", "",
                  "Prior draws treat latent tokens as independent, so they average per-image lighting away. "
                  "Real images against generated ones, same maps and seeds:", "",
                  pd.read_csv(bright).to_markdown(index=False, floatfmt=".3f")]
    return lines


def _mismatch_section(out: Path) -> list[str]:
    m = _load(out, "01_mismatch_study")
    if not m:
        return []
    df = pd.DataFrame(m["table"])
    return ["", "## Fig. 3: the mismatch", f"\n{m['n_eval']} validation maps. {_metric(m)} starting from "
            "N(sqrt(a) x0, (1-a) I) by mu, and from N(0, I) (paper: the real-latent start is clearly better "
            f"at every mu). Gap at the largest mu: **{m['gap_at_max_mu']:.3f}**.\n",
            df[["start", "mu", "fd", "miou", "acc", "n"]].to_markdown(index=False, floatfmt=".3f"),
            "", "![Fig. 3](figures/01_mismatch_study.png)"]


def _mu_sweep_section(out: Path) -> list[str]:
    m = _load(out, "04_mu_sweep")
    if not m:
        return []
    df = pd.DataFrame(m["table"])
    return ["", "## Fig. 8: mu sweep", f"\nBest {_metric(m)}: {m['best']['prior']} at mu = {m['best']['mu']:g} "
            f"({m['best']['fd']:.3f}); plain ControlNet {m['normal_mu1_fd']:.3f}. Paper: best mu in [0.8, 0.9].\n",
            df[["prior", "mu", "fd", "miou", "acc", "n"]].to_markdown(index=False, floatfmt=".3f"),
            "", "![Fig. 8](figures/04_mu_sweep.png)"]


def _diversity_section(out: Path) -> list[str]:
    m = _load(out, "05_diversity")
    if not m:
        return []
    df = pd.DataFrame(m["table"])
    paper = "; ".join(f"{r['method']} {r['lpips']} / {r['ms_ssim']}" for r in m["paper_table3"])
    cols = [c for c in ("prior", "mu", "lpips", "ms_ssim", "maps", "k", "lpips_note") if c in df]
    return ["", "## Table 3: diversity",
            f"\n{m['n_maps']} maps x {m['k']} samples. Paper (ADE20K, LPIPS / MS-SSIM): {paper}.\n",
            df[cols].to_markdown(index=False, floatfmt=".3f"), "", "![diversity](figures/05_diversity.png)"]


def _global_factors_section(out: Path) -> list[str]:
    m = _load(out, "08_global_factors")
    if not m:
        return []
    lines = ["", "## Beyond the paper: priors that keep each image's global factors", "",
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
    return ["", "## Is the schedule the bottleneck? Zero terminal SNR", "",
            f"toy-city-gv, {m['n_eval']} validation maps: the committed stack (SD's schedule) against the same "
            f"stack retrained under zero terminal SNR. {m['check']}. {m['priors']}.", "",
            df[cols].to_markdown(index=False, floatfmt=".3f"), "", "![zero-SNR samples](figures/09_samples.png)"]


def _table2_section(out: Path) -> list[str]:
    m = _load(out, "06_comparison_table")
    if not m:
        return []
    return ["", "## Table 2: the paper's rows and ours", "",
            pd.DataFrame(m["table"]).to_markdown(index=False, floatfmt=".3f")]


def write_index(out: Path, run: dict) -> Path:
    """``index.md``: every notebook's status and time, its tables and figures, key numbers."""
    lines = _index_header(run) + _notebook_rows(out, run)
    for section in (_table1_section, _mismatch_section, _mu_sweep_section, _diversity_section,
                    _global_factors_section, _zero_snr_section, _table2_section):
        lines += section(out)
    files = sorted(p.relative_to(out).as_posix() for d in ("tables", "figures") if (out / d).is_dir()
                   for p in (out / d).iterdir() if p.suffix in (".md", ".png", ".csv"))
    lines += ["", "## Every table and figure", ""] + [f"- [{f}]({f})" for f in files]
    return write_text(out / "index.md", "\n".join(lines) + "\n")
