"""The study's wall time against issue 34's goals: a batch from a cold cache, then the same batch again into the
same reports folder (every image, feature and reference latent already in its cache), in one run.

Goals (written in the issue before any measurement): the toy batch at most 25 minutes cold and 5 minutes warm,
the CamVid batch at most 15 minutes, the quick toy batch at most 4 minutes -- on an idle 2-core CPU.

Usage::

    python bench/study_time.py [--profile toy] [--quick] [--jobs 2] [--work DIR] [--cold-from REPORTS]

``--cold-from REPORTS`` takes the cold batch from one already rendered into ``REPORTS`` (``scpdiff reproduce``
wrote its ``runs.json`` and filled its ``cache/``): the folder is copied to the work folder and only the warm
batch runs here; the table says which batch was timed by this run. The warm batch's tables are compared with
the cold batch's byte for byte. Writes ``reports/bench/study_time_<profile>[_quick].{json,md}``.
"""
from __future__ import annotations

import argparse
import filecmp
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


def tables_equal(a: Path, b: Path) -> list[str]:
    """The table files of ``a/tables`` that differ from (or are missing in) ``b/tables``."""
    names = sorted(p.name for p in (a / "tables").glob("*.csv"))
    return [n for n in names if not (b / "tables" / n).is_file()
            or not filecmp.cmp(a / "tables" / n, b / "tables" / n, shallow=False)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="toy")
    ap.add_argument("--quick", action="store_true", help="the quick counts (reports/_quick), as a student runs them")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", help="the scratch reports folder (default: a temporary one, removed at the end)")
    ap.add_argument("--cold-from", help="a reports folder whose batch ran from a cold cache: time only the warm one")
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
                    "The warm batch's tables are byte for byte those of the cold batch." if not differ else
                    "Tables that differ between the cold and the warm batch: " + ", ".join(differ))),
                ("Per notebook (the runner's wall time)", md_table(per))]
    data = {"command": command_line(), "profile": args.profile, "quick": args.quick, "jobs": args.jobs,
            "cold": cold, "warm": warm, "goals_s": goals, "rows": rows, "tables_differ": differ}
    name = f"study_time_{args.profile.replace('-', '_')}{'_quick' if args.quick else ''}"
    write_results(name, f"The study's wall time, `{label}`: cold cache, then warm", sections, data, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
