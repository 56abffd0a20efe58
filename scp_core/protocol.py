"""The primary tests of each report, fixed in ``reports/PROTOCOL.md``, corrected for multiplicity.

The metrics files hold hundreds of paired comparisons, each judged alone by :mod:`scp_core.metrics.verdict`. The
protocol names the few **primary** tests per report (a margin for each); this module reads it
(:func:`read_protocol`), finds each test's stored difference in a report's metrics files, corrects the family by
Holm's step-down (:func:`holm`) and writes the summary at the top of ``index.md`` (:func:`primary_section`), with
how many **exploratory** comparisons the report holds beside them (:func:`exploratory_count`) and how far plain
ControlNet is from real data (:func:`plain_against_real`).

The p-value of a test comes from what the metrics files keep: a difference's 95 % bootstrap interval, not its
resamples (:func:`p_from_interval`). It is a normal approximation: the centre of the interval ``(lo + hi) / 2``
(the bootstrap intervals are shifted by its bias, so the centre, not the stored point estimate, is the estimate
they rest on), the standard error ``(hi - lo) / (2 z_0.975)`` (``2 z_0.975 = 3.92``), two-sided. By construction
p < 0.05 exactly where the stored interval excludes 0, so uncorrected verdicts agree with the stored ones; a
skewed bootstrap distribution makes the p of a large effect only approximate. The 90 % interval of two one-sided
tests for equivalence is approximated the same way (:func:`interval90`: the centre +- ``z_0.95`` standard errors).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

from .io import REPO_ROOT
from .metrics.verdict import (BETTER, EQUIVALENT, TIED, WORSE, difference_format, interval_text,
                              relation_of_difference)

__all__ = ["PROTOCOL", "ALPHA", "PrimaryTest", "read_protocol", "primary_tests", "p_from_interval", "interval90",
           "holm", "corrected_verdict", "primary_results", "comparison_records", "exploratory_count",
           "plain_against_real", "primary_section", "index_lines", "p_text", "NOT_YET_RUN", "BELOW", "ABOVE"]

PROTOCOL = REPO_ROOT / "reports" / "PROTOCOL.md"
ALPHA = 0.05  # family-wise error rate of each report's primary tests
Z95, Z90 = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.95)
NOT_YET_RUN = "not yet run"
BELOW, ABOVE = "below 0", "above 0"  # a contrast with no better side that differs from 0
COLUMNS = ["report", "id", "file", "where", "compared", "column", "better", "margin", "why this margin"]
FILES = ("prior_comparison", "12_schedule_control")
SOURCES = {"prior_comparison": "Table 1", "12_schedule_control": "Schedule control"}
SAME_DIGITS = 6  # significant digits to which a record restating a primary test matches it
LABELS = {"fd": "distance", "kid": "KID", "fid": "FID (Inception)", "miou": "mIoU", "acc": "accuracy"}


@dataclass(frozen=True)
class PrimaryTest:
    """One row of the protocol's table: ``compared`` in ``column`` of metrics file ``file`` at ``where``."""

    report: str
    id: str
    file: str
    where: str
    compared: str
    column: str
    better: str | None  # "lower", "higher", or None: a contrast with no better side
    margin: float
    why: str

    @property
    def lower_is_better(self) -> bool:
        return self.better != "higher"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def read_protocol(path: Path | str = PROTOCOL) -> list[PrimaryTest]:
    """The table under ``## Primary tests`` of the protocol file; ``ValueError`` naming the line of any row that
    does not parse (a cell missing, a margin that is not a positive number, an unknown file or side, an id twice)."""
    lines = Path(path).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Primary tests"), None)
    if start is None:
        raise ValueError(f"{path}: no '## Primary tests' section")
    head = next((i for i in range(start, len(lines)) if lines[i].startswith("| report |")), None)
    if head is None or _cells(lines[head]) != COLUMNS:
        raise ValueError(f"{path}: the primary tests' table must have the columns {COLUMNS}")
    tests = []
    for i in range(head + 2, len(lines)):
        if not lines[i].startswith("|"):
            break
        cells = _cells(lines[i])
        where = f"{path}, line {i + 1}"
        if len(cells) != len(COLUMNS):
            raise ValueError(f"{where}: {len(cells)} cells, the table has {len(COLUMNS)}")
        report, id_, file, place, compared, column, better, margin, why = cells
        try:
            margin_value = float(margin)
        except ValueError:
            raise ValueError(f"{where}: the margin {margin!r} is not a number") from None
        if not margin_value > 0 or not math.isfinite(margin_value):
            raise ValueError(f"{where}: a margin must be a positive number, got {margin!r}")
        if file not in FILES:
            raise ValueError(f"{where}: unknown metrics file {file!r}; the protocol reads {list(FILES)}")
        if better not in ("lower", "higher", "-"):
            raise ValueError(f"{where}: 'better' must be lower, higher or -, got {better!r}")
        if file == "prior_comparison" and (better == "-" or len(compared.split(" - ")) != 2):
            raise ValueError(f"{where}: a Table 1 test compares 'a - b' and has a better side, got {compared!r}")
        if not all((report, id_, place, compared, column, why)):
            raise ValueError(f"{where}: an empty cell")
        tests.append(PrimaryTest(report, id_, file, place, compared, column, None if better == "-" else better,
                                 margin_value, why))
    ids = [t.id for t in tests]
    if not tests or len(set(ids)) != len(ids):
        raise ValueError(f"{path}: the table needs at least one test and unique ids, got {ids}")
    return tests


def primary_tests(report: str, path: Path | str = PROTOCOL) -> list[PrimaryTest]:
    """The primary tests of report folder ``report`` (``toy``, ``camvid``): its family."""
    return [t for t in read_protocol(path) if t.report == report]


def p_from_interval(ci, level: float = 0.95) -> float:
    """The two-sided p-value of ``difference = 0`` from the difference's ``level`` interval, by the normal
    approximation of the module docstring (centre and width of the interval); 1 for an interval of width 0 (no
    test: :func:`corrected_verdict` says so)."""
    lo, hi = (float(v) for v in ci)
    if hi <= lo:
        return 1.0
    se = (hi - lo) / (2 * NormalDist().inv_cdf(0.5 + level / 2))
    return math.erfc(abs((lo + hi) / 2) / se / math.sqrt(2))


def interval90(ci) -> tuple[float, float]:
    """The approximate 90 % interval (two one-sided tests at 5 %) from the stored 95 % interval ``ci``: its centre
    +- ``z_0.95`` standard errors, the standard error ``(hi - lo) / (2 z_0.975)``."""
    lo, hi = (float(v) for v in ci)
    half = (hi - lo) / 2 * Z90 / Z95
    return (lo + hi) / 2 - half, (lo + hi) / 2 + half


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the ``j``-th smallest (from 0) of ``m`` is
    ``max_{k <= j} min(1, (m - k) p_(k))``. A test is rejected at family-wise level ``alpha`` where its adjusted p
    is below ``alpha``."""
    p = [float(v) for v in pvalues]
    if any(not 0 <= v <= 1 for v in p):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(sorted(range(len(p)), key=lambda k: p[k])):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def corrected_verdict(ci, p_holm: float, margin: float, better: str | None = "lower",
                      alpha: float = ALPHA) -> str:
    """The verdict of one primary test: no test where the interval has width 0 (:data:`NOT_A_TEST`); else
    :data:`EQUIVALENT` where the approximate 90 % interval (:func:`interval90`) lies inside ``+-margin``; else
    better / worse (a contrast, ``better=None``: :data:`BELOW` / :data:`ABOVE`) where ``p_holm < alpha``; else
    :data:`TIED`. Never "better" for a difference inside its margin."""
    lo, hi = (float(v) for v in ci)
    if lo == hi:
        return relation_of_difference(ci)
    lo90, hi90 = interval90(ci)
    if -margin < lo90 and hi90 < margin:
        return EQUIVALENT
    if not p_holm < alpha:
        return TIED
    below = lo + hi < 0
    if better is None:
        return BELOW if below else ABOVE
    return BETTER if below == (better == "lower") else WORSE


def _load(out: Path, name: str) -> dict | None:
    p = Path(out) / "metrics" / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _record(test: PrimaryTest, m: dict | None) -> dict | None:
    """``{"value", "ci", "verdict", "metric"}`` of ``test`` in its metrics file ``m``, or None (not there)."""
    if m is None:
        return None
    if test.file == "prior_comparison":
        a, b = test.compared.split(" - ")
        rows = [r for r in m.get("comparisons", {}).get(test.where, [])
                if (r["a"], r["b"], r["column"]) == (a, b, test.column)]
        return {"value": rows[0]["diff"], "ci": rows[0]["diff_ci"], "verdict": rows[0]["verdict"],
                "metric": rows[0].get("metric", test.column)} if rows else None
    rows = [r for r in m.get("effects", []) if (r["effect"], r["column"], r.get("pairing")) == (
        test.compared, test.column, test.where)]
    return {"value": rows[0]["value"], "ci": rows[0]["ci"], "verdict": rows[0]["verdict"],
            "metric": rows[0].get("metric", test.column)} if rows else None


def primary_results(out: Path | str, report: str, path: Path | str = PROTOCOL) -> list[dict]:
    """Every primary test of ``report`` measured in report folder ``out``: the stored estimate and 95 % interval,
    the p-value (:func:`p_from_interval`), Holm's adjusted p across the family (a test not yet run counts with
    p = 1), the stored (uncorrected) verdict and the corrected one (:func:`corrected_verdict`)."""
    tests = primary_tests(report, path)
    found = [_record(t, _load(Path(out), t.file)) for t in tests]
    p = [p_from_interval(r["ci"]) if r else 1.0 for r in found]
    adjusted = holm(p)
    return [{"id": t.id, "test": t, "metric": r["metric"] if r else LABELS.get(t.column, t.column),
             "value": r["value"] if r else None, "ci": r["ci"] if r else None, "p": p_i if r else None,
             "p_holm": q if r else None, "stored_verdict": r["verdict"] if r else None,
             "verdict": corrected_verdict(r["ci"], q, t.margin, t.better) if r else NOT_YET_RUN}
            for t, r, p_i, q in zip(tests, found, p, adjusted)]


CI_SUFFIX = " 95% CI"  # notebook 11's gaps: "a - b" and "a - b 95% CI"


def _difference_keys(obj: dict) -> tuple[str, str] | None:
    """The keys of a difference and its 95 % interval in a JSON object with a verdict, or None (not a record)."""
    if obj.get("verdict") is None:
        return None
    if obj.get("diff_ci") is not None:
        return "diff", "diff_ci"
    if "effect" in obj and obj.get("ci") is not None:
        return "value", "ci"
    return next(((k[:-len(CI_SUFFIX)], k) for k in obj
                 if k.endswith(CI_SUFFIX) and " - " in k and k[:-len(CI_SUFFIX)] in obj), None)


def _walk(obj, found: list) -> None:
    if isinstance(obj, dict):
        keys = _difference_keys(obj)
        if keys and obj.get(keys[0]) is not None:
            found.append({"diff": obj[keys[0]], "ci": obj[keys[1]]})
        for v in obj.values():
            _walk(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, found)


def comparison_records(out: Path | str) -> list[dict]:
    """Every paired comparison the report's metrics files hold, as ``{"file", "diff", "ci"}``: a JSON object with
    a verdict and the interval of a difference: ``diff`` / ``diff_ci`` (:meth:`~.study.evaluation.Comparison.record`,
    Table 2's rows), notebook 12's ``effects`` (``value`` / ``ci``), or notebook 11's ``"a - b"`` /
    ``"a - b 95% CI"``."""
    records = []
    for f in sorted((Path(out) / "metrics").glob("*.json")):
        found: list = []
        _walk(json.loads(f.read_text()), found)
        records += [{"file": f.stem, **r} for r in found]
    return records


def _key(diff, ci) -> tuple:
    return tuple(float(f"{float(v):.{SAME_DIGITS}g}") for v in (diff, *ci))


def exploratory_count(out: Path | str, report: str, path: Path | str = PROTOCOL) -> dict:
    """``{"records", "primary", "exploratory"}``: the report's comparison records (:func:`comparison_records`),
    those that state a primary test (its own record and any that restate it, the same images scored again: Table
    2's row, notebook 10's rows of a stack in its own regime, notebook 11's training seed 0; matched by the same
    difference and interval to :data:`SAME_DIGITS` significant digits) and the rest, all exploratory."""
    records = comparison_records(out)
    primary = {_key(r["value"], r["ci"]) for r in primary_results(out, report, path) if r["ci"] is not None}
    stating = sum(_key(r["diff"], r["ci"]) in primary for r in records)
    return {"records": len(records), "primary": stating, "exploratory": len(records) - stating}


def _distance(value: float, ci, digits: int) -> str:
    return f"{value:.{digits}f} {interval_text(ci, digits)}" if ci else f"{value:.{digits}f}"


def plain_against_real(out: Path | str) -> list[str]:
    """One line per Table 1 setting: plain ControlNet's (normal, mu = 1) distances from the real images beside the
    real-versus-real line (two independent real sets of the same size), with their 95 % intervals."""
    m = _load(Path(out), "prior_comparison")
    if not m:
        return []
    real = m.get("real_reference") or m.get("real_ceiling") or {}
    metric = m.get("settings", {}).get("metric", "FD-toy")
    lines = []
    for setting, rows in m["tables"].items():
        plain, r = next((x for x in rows if x["prior"] == "normal"), None), real.get(setting)
        if not plain or not r:
            continue
        parts = []
        for col, label, scale, digits in (("fd", metric, 1, 3 if metric == "FD-toy" else 1),
                                          ("fid", "FID (Inception)", 1, 1), ("kid", "KID x1e3", 1e3, 1)):
            if col in plain and col in r:
                ci_p, ci_r = ([scale * v for v in x[col + "_ci"]] if x.get(col + "_ci") else None for x in (plain, r))
                ratio = (f" ({plain[col] / r[col]:.1f} times)" if col != "kid" and r[col] > 0 else "")
                parts.append(f"{label} {_distance(scale * plain[col], ci_p, digits)} against "
                             f"{_distance(scale * r[col], ci_r, digits)}{ratio}")
        lines.append(f"- **{setting}** (n = {plain['n']}): " + "; ".join(parts) + ".")
    return lines


def index_lines(out: Path | str, run: dict, path: Path | str = PROTOCOL) -> list[str]:
    """:func:`primary_section` for ``index.md`` of a batch ``run`` (its ``runs.json`` record), followed by a blank
    line; nothing for a smoke or quick run (the protocol's tests are the reference run's) or where none of the
    report's primary tests has been run."""
    if run.get("smoke") or run.get("quick"):
        return []
    if not any(r["ci"] is not None for r in primary_results(out, run["profile"], path)):
        return []
    return primary_section(out, run["profile"], path)


def p_text(p: float | None) -> str:
    """A p-value as the tables print it (``< 0.0001`` below that; empty where there is none)."""
    return "" if p is None else "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def primary_section(out: Path | str, report: str, path: Path | str = PROTOCOL) -> list[str]:
    """Markdown lines for the top of ``index.md``: the primary tests of ``report`` (test, estimate, interval, p,
    Holm-adjusted p, corrected verdict, margin), the count of exploratory comparisons and plain ControlNet against
    the real-versus-real line. Empty where the protocol names no test for ``report``."""
    results = primary_results(out, report, path)
    if not results:
        return []
    rows = []
    for r in results:
        t = r["test"]
        name = f"{SOURCES[t.file]} ({t.where}): {t.compared}, {r['metric']}"
        if r["ci"] is None:
            rows.append(f"| `{t.id}` {name} |  |  |  |  | {NOT_YET_RUN} | {t.margin:g} |")
            continue
        spec = difference_format(r["ci"], 3)
        rows.append(f"| `{t.id}` {name} | {r['value']:+{spec}} | {interval_text(r['ci'], spec)} | {p_text(r['p'])} "
                    f"| {p_text(r['p_holm'])} | {r['verdict']} | {t.margin:g} |")
    count = exploratory_count(out, report, path)
    restated = count["primary"] - sum(r["ci"] is not None for r in results)
    restated = f" ({restated} restating one elsewhere in the report)" if restated else ""
    plain = plain_against_real(out)
    return ["## Primary tests (fixed in the protocol, Holm-corrected)", "",
            f"The primary tests of this report, named with their margins in [reports/PROTOCOL.md](../PROTOCOL.md) "
            f"(which says when it was written and how the p-values come from the stored intervals); Holm's "
            f"correction across these {len(results)} at a family-wise 5 %; a difference whose approximate 90 % "
            "interval lies inside +-margin reads \"equivalent within the margin\", never \"better\".", "",
            "| test | estimate | 95 % interval | p | Holm-adjusted p | verdict (corrected) | margin |",
            "|---|---|---|---|---|---|---|", *rows, "",
            f"**Everything else is exploratory**: this report's metrics files hold {count['records']} paired "
            f"comparisons; {count['primary']} of them state a primary test above{restated}, the other "
            f"**{count['exploratory']}** are exploratory, each judged alone with no correction for the others: "
            "read them as descriptions to follow up, not findings.", ""] + (
        ["How far plain ControlNet (normal prior, mu = 1) is from real data, against the real-versus-real line (two "
         "independent real sets of the same size; 95 % intervals):", "", *plain, ""] if plain else [])
