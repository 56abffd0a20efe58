"""The study's profile: where each notebook of a batch spent its seconds ("measure first").

Reads a batch's records, computes nothing again: ``runs.json`` (each notebook's wall time under ``scpdiff
reproduce``) and each metrics file's ``timing_s`` (:mod:`scp_core.timing`: exclusive seconds by stage -- sampling,
decoding, encoding, priors, segmenter, features, inception, resampling, plotting -- tallied in the notebook's
kernel up to the moment it wrote its metrics). Per notebook: the stages, ``rest`` (the kernel's own wall time, its
metrics' ``wall_s``, less the stages: pandas, numpy, the rest of the notebook's code) and ``start + end`` (the
runner's wall time less the kernel's: kernel start, imports, writing the notebook and its HTML).

Usage: ``python bench/study_profile.py [--reports reports/toy] [--out reports/bench] [--name study_profile]``.
Run it after a batch (``scpdiff reproduce --profile toy``); notebooks whose metrics predate the tally (no
``timing_s``) are listed with their wall time only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, ROOT, command_line, md_table  # noqa: E402

from scp_core.io import write_json, write_text  # noqa: E402
from scp_core.timing import STAGES  # noqa: E402

METRICS_OF = {"03_prior_comparison": "prior_comparison"}  # notebooks whose metrics file has another name


def profile(reports: Path) -> list[dict]:
    """One row per notebook of ``reports/runs.json``: wall time, kernel time, seconds by stage."""
    runs = json.loads((reports / "runs.json").read_text())
    rows = []
    for name, run in sorted(runs["notebooks"].items()):
        metrics = reports / "metrics" / f"{METRICS_OF.get(name, name)}.json"
        m = json.loads(metrics.read_text()) if metrics.is_file() else {}
        row = {"notebook": name, "status": run.get("status"), "wall_s": run.get("wall_s"),
               "commit": run.get("commit"), "kernel_s": m.get("wall_s")}
        timing = m.get("timing_s")
        if timing and row["kernel_s"] is not None:
            row.update({k: float(timing.get(k, 0.0)) for k in STAGES})
            row["rest"] = round(row["kernel_s"] - sum(timing.get(k, 0.0) for k in STAGES), 1)
        if row["kernel_s"] is not None and row["wall_s"] is not None:
            row["start + end"] = round(row["wall_s"] - row["kernel_s"], 1)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", default=str(ROOT / "reports" / "toy"), help="a batch's reports folder")
    ap.add_argument("--out", default=str(OUT), help="where <name>.{json,md} go")
    ap.add_argument("--name", default="study_profile",
                    help="the files' name (e.g. study_profile_toy_quick for a quick batch's profile)")
    args = ap.parse_args(argv)
    reports = Path(args.reports).resolve()
    if not (reports / "runs.json").is_file():
        print(f"study_profile: no runs.json in {reports}: run `scpdiff reproduce --profile ...` first "
              "(or pass --reports)", file=sys.stderr)
        return 2
    rows = profile(reports)
    runs = json.loads((reports / "runs.json").read_text())
    cols = ["notebook", "wall_s", "kernel_s", *STAGES, "rest", "start + end"]
    profiled = [r for r in rows if "rest" in r]
    total = {c: round(sum(r.get(c) or 0.0 for r in profiled), 1) for c in cols[1:]}
    share = {c: (f"{100 * total[c] / total['kernel_s']:.0f} %" if total["kernel_s"] else "") for c in [*STAGES, "rest"]}
    where = reports.relative_to(ROOT) if reports.resolve().is_relative_to(ROOT) else reports.name
    lines = [f"# Where the study's seconds go: `{where}`",
             "", f"Batch {runs.get('batch_wall_s')} s wall ({runs.get('finished')}, commit {runs.get('commit')}). "
             "Seconds per notebook: `wall_s` the runner's, `kernel_s` the notebook's own, the stages exclusive "
             "(`scp_core.timing`), `rest` the kernel's other work, `start + end` kernel start and writing. The "
             "times are those the runs recorded: a run that shared the CPU with another batch (`runs.json` says "
             "which ran together) is slower than on an idle machine, but its split by stage is still its own.", "",
             md_table([{c: r.get(c, "") for c in cols} for r in profiled]
                      + [{"notebook": "**total**", **total}, {"notebook": "share of kernel time", **share}]), ""]
    missing = [r for r in rows if "rest" not in r]
    if missing:
        lines += ["Not profiled (metrics from before the tally, or none): "
                  + ", ".join(f"{r['notebook']} ({r['wall_s']} s, commit {r['commit']})" for r in missing), ""]
    lines += [f"Command: `{command_line()}`"]
    # the batch's own records are the measurement: no environment of this reading is added
    out = Path(args.out)
    write_json(out / f"{args.name}.json", {"reports": str(where), "command": command_line(), "rows": rows,
                                            "total": total, "batch": {k: runs.get(k) for k in
                                                                      ("batch_wall_s", "finished", "commit")}})
    write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
