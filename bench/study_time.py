"""The study's wall time against its goals: a batch from a cold cache, then the same batch again into the
same reports folder (every image, feature and reference latent already in its cache), in one run.

Goals (written in the issue before any measurement): the toy batch at most 25 minutes cold and 5 minutes warm,
the CamVid batch at most 15 minutes, the quick toy batch at most 4 minutes -- on an idle 2-core CPU.

Usage::

    python bench/study_time.py [--profile toy] [--quick] [--jobs 2] [--work DIR] [--cold-from REPORTS]
                               [--previous REV]

``--cold-from REPORTS`` takes the cold batch from one already rendered into ``REPORTS`` (``scpdiff reproduce``
wrote its ``runs.json`` and filled its ``cache/``): the folder is copied to the work folder and only the warm
batch runs here; the table says which batch was timed by this run. The warm batch's tables are compared with
the cold batch's cell for cell, their timing columns left out. ``--previous REV`` also holds the cold batch's
tables against those committed at git revision ``REV`` (the previous batch) by the slow re-derivation test's rule.
Writes ``reports/bench/study_time_<profile>[_quick].{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, ROOT, command_line, md_table, write_results  # noqa: E402

GOALS_S = {("toy", False): {"cold": 25 * 60, "warm": 5 * 60}, ("toy", True): {"cold": 4 * 60},
           ("camvid", False): {"cold": 15 * 60}}


def batch(profile: str, quick: bool, jobs: int, out: Path) -> dict:
    """Run ``scpdiff reproduce`` into ``out``; its wall time measured here and the runner's record."""
    cmd = [sys.executable, "-m", "scp_core.cli", "reproduce", "--profile", profile, "--jobs", str(jobs),
           "--out", str(out)] + (["--quick"] if quick else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"study_time: `{' '.join(cmd)}` failed (exit {done.returncode}); see its output above")
    return {"wall_s": round(wall, 1), "timed_here": True, **record(out)}


def record(out: Path) -> dict:
    runs = json.loads((out / "runs.json").read_text())
    return {"batch_wall_s": runs.get("batch_wall_s"), "commit": runs.get("commit"), "finished": runs.get("finished"),
            "notebooks": {n: r.get("wall_s") for n, r in runs["notebooks"].items()}}


TIMING_COLUMNS = ("seconds", "sample_s", "wall_s")  # wall-clock columns: a warm batch reads, it does not sample


def _table(path: Path):
    """A table's cells as text, its timing columns left out (what a warm batch must reproduce byte for byte)."""
    import pandas as pd

    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    return t.drop(columns=[c for c in t.columns if c in TIMING_COLUMNS])


def tables_equal(a: Path, b: Path) -> list[str]:
    """The table files of ``a/tables`` that differ from (or are missing in) ``b/tables``, cell for cell as text,
    apart from the timing columns (:data:`TIMING_COLUMNS`)."""
    names = sorted(p.name for p in (a / "tables").glob("*.csv"))
    return [n for n in names if not (b / "tables" / n).is_file()
            or not _table(a / "tables" / n).equals(_table(b / "tables" / n))]


def _numbers(cell: str) -> list[float]:
    """The numbers of a cell (a value, or an interval written ``[lo, hi]``); none for text."""
    try:
        return [float(x) for x in cell.strip("[]").split(",")] if cell else []
    except ValueError:
        return []


def largest_differences(a: Path, b: Path, names: list[str]) -> list[dict]:
    """Per differing table, per column: the largest absolute and relative difference of its numbers."""
    rows = []
    for n in names:
        if not (b / "tables" / n).is_file():
            rows.append({"table": n, "column": "(missing in the warm batch)", "largest |diff|": "-",
                         "largest relative": "-"})
            continue
        ta, tb = _table(a / "tables" / n), _table(b / "tables" / n)
        for col in ta.columns:
            if col not in tb.columns or len(ta) != len(tb):
                rows.append({"table": n, "column": col, "largest |diff|": "shape differs", "largest relative": "-"})
                continue
            pairs = [(x, y) for ca, cb in zip(ta[col], tb[col]) if ca != cb
                     for x, y in zip(_numbers(ca), _numbers(cb))]
            if pairs:
                d = max(abs(x - y) for x, y in pairs)
                r = max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in pairs)
                rows.append({"table": n, "column": col, "largest |diff|": f"{d:.2g}", "largest relative": f"{r:.2g}"})
    return rows


TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}  # the slow re-derivation test's (tests/test_reproduce.py)
RENAMED = {"03_training_seeds.csv": "11_training_seeds.csv"}  # a previous batch's table -> its name now


def previous_tables(rev: str, profile: str, dest: Path) -> Path:
    """The tables a previous batch committed at git revision ``rev`` (``reports/<profile>/tables/*.csv``), written
    into ``dest/tables``."""
    folder = f"reports/{profile}/tables/"
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, folder], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split()
    (dest / "tables").mkdir(parents=True, exist_ok=True)
    for name in (n for n in names if n.endswith(".csv")):
        data = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True).stdout
        (dest / "tables" / Path(name).name).write_bytes(data)
    return dest


def against_previous(prev: Path, new: Path) -> list[dict]:
    """Each table of the previous batch against this one by the slow re-derivation test's rule: the numeric columns
    (not the ``*_s`` timings; tables 00 and 07 hold timings only) equal within :data:`TOLERANCE`."""
    import pandas as pd

    rows = []
    for ref in sorted((prev / "tables").glob("*.csv")):
        if ref.stem.startswith(("00_", "07_")):
            continue
        now = new / "tables" / RENAMED.get(ref.name, ref.name)
        row = {"previous table": ref.name, "this batch": now.name}
        if not now.is_file():
            rows.append({**row, "within tolerance": "missing"})
            continue
        a, b = pd.read_csv(ref), pd.read_csv(now)
        num = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c]) and not c.endswith("_s")]
        try:
            pd.testing.assert_frame_equal(a[num], b[num], **TOLERANCE)
            rows.append({**row, "within tolerance": "yes"})
        except (AssertionError, KeyError) as e:
            rows.append({**row, "within tolerance": "NO: " + " ".join(str(e).split())[:160]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--quick", action="store_true", help="the quick counts (reports/_quick), as a student runs them")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", help="the scratch reports folder (default: a temporary one, removed at the end)")
    ap.add_argument("--cold-from", help="a reports folder whose batch ran from a cold cache: time only the warm one")
    ap.add_argument("--previous", help="a git revision whose committed tables (the previous batch's) the cold batch "
                                       "must equal within the slow re-derivation test's tolerance")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="study_time_")).resolve()
    cold_dir = work / "cold"
    try:
        if args.cold_from:
            src = Path(args.cold_from).resolve()
            if not (src / "runs.json").is_file() or not (src / "cache").is_dir():
                print(f"study_time: {src} has no runs.json and cache/ of a batch: run `scpdiff reproduce` into "
                      "it first", file=sys.stderr)
                return 2
            shutil.copytree(src, cold_dir)
            cold = {"wall_s": record(src)["batch_wall_s"], "timed_here": False, "from": src.name, **record(src)}
        else:
            cold = batch(args.profile, args.quick, args.jobs, cold_dir)
        snapshot = work / "cold-tables"
        shutil.copytree(cold_dir / "tables", snapshot / "tables")
        warm = batch(args.profile, args.quick, args.jobs, cold_dir)
        differ = tables_equal(snapshot, cold_dir)
        largest = largest_differences(snapshot, cold_dir, differ)
        previous = against_previous(previous_tables(args.previous, args.profile, work / "previous"),
                                    snapshot) if args.previous else []
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    goals = GOALS_S.get((args.profile, args.quick), {})
    rows = []
    for name, run in (("cold cache", cold), ("warm cache", warm)):
        goal = goals.get(name.split()[0])
        timed_by = "this run" if run["timed_here"] else f"the batch's runs.json ({run['from']})"
        rows.append({"batch": name, "timed by": timed_by,
                     "wall s": run["wall_s"], "goal s": goal or "-",
                     "measured / goal": round(run["wall_s"] / goal, 2) if goal else "-",
                     "met": ("yes" if run["wall_s"] <= goal else "no") if goal else "-"})
    per = [{"notebook": n, "cold s": cold["notebooks"].get(n), "warm s": w,
            "warm / cold": round(w / cold["notebooks"][n], 3) if cold["notebooks"].get(n) else "-"}
           for n, w in sorted(warm["notebooks"].items())]
    label = f"{args.profile}{' --quick' if args.quick else ''}"
    sections = [("The batch against its goals", md_table(rows) + "\n\n" + (
                    "The warm batch's tables are those of the cold batch, cell for cell as text, apart from "
                    f"their timing columns ({', '.join(TIMING_COLUMNS)})." if not differ else
                    "Tables that differ between the cold and the warm batch (timing columns left out): "
                    + ", ".join(differ) + ". Their largest differences:\n\n" + md_table(largest))),
                ("Per notebook (the runner's wall time)", md_table(per))]
    if previous:
        bad = [r for r in previous if r["within tolerance"] != "yes"]
        sections.append((f"The cold batch against the previous batch (tables committed at {args.previous})",
                         f"Rule of the slow re-derivation test: numeric columns equal within relative "
                         f"{TOLERANCE['rtol']:g} + absolute {TOLERANCE['atol']:g}. "
                         + (f"All {len(previous)} tables within it." if not bad else
                            f"{len(bad)} of {len(previous)} tables outside it.") + "\n\n" + md_table(previous)))
    data = {"command": command_line(), "profile": args.profile, "quick": args.quick, "jobs": args.jobs,
            "cold": cold, "warm": warm, "goals_s": goals, "rows": rows, "tables_differ": differ,
            "largest_differences": largest, "previous": {"rev": args.previous, "tables": previous}}
    name = f"study_time_{args.profile.replace('-', '_')}{'_quick' if args.quick else ''}"
    write_results(name, f"The study's wall time, `{label}`: cold cache, then warm", sections, data, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
