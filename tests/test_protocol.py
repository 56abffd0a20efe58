"""Issue 47: the primary tests of reports/PROTOCOL.md, Holm's correction and the count of exploratory comparisons."""
import json
import shutil

import pytest

from scp_core import protocol as P
from scp_core.io import REPO_ROOT
from scp_core.metrics.verdict import BETTER, EQUIVALENT, SAME, TIED, WORSE
from scp_core.study.schedule_control import INTERACTION_WORDS

REPORTS = {"toy": REPO_ROOT / "reports" / "toy", "camvid": REPO_ROOT / "reports" / "camvid"}


def test_the_protocol_file_parses_into_each_reports_family():
    tests = P.read_protocol()
    assert {t.report for t in tests} == set(REPORTS)
    assert [t.id for t in P.primary_tests("toy")] == ["toy-fd", "toy-miou", "toy-gv-fd", "toy-gv-miou"]
    assert [t.id for t in P.primary_tests("camvid")] == ["camvid-kid", "camvid-miou", "control-sd",
                                                         "control-interaction", "control-fix"]
    assert all(t.margin > 0 and t.why for t in tests)
    source = (REPO_ROOT / "scp_core" / "study" / "schedule_control.py").read_text()
    for t in tests:
        if t.file == "12_schedule_control":  # the effect names notebook 12 writes, and a pairing it has
            assert f'"{t.compared}"' in source and t.where == "equal mu", t
    assert P.primary_tests("camvid")[3].better is None and P.primary_tests("toy")[1].better == "higher"


@pytest.mark.parametrize("row, match", [
    ("| toy | x | prior_comparison | toy | joint - normal | fd | lower | none | why |", "not a number"),
    ("| toy | x | prior_comparison | toy | joint - normal | fd | lower | -1 | why |", "positive"),
    ("| toy | x | 04_mu_sweep | toy | joint - normal | fd | lower | 1 | why |", "unknown metrics file"),
    ("| toy | x | prior_comparison | toy | joint | fd | lower | 1 | why |", "'a - b'"),
    ("| toy | x | prior_comparison | toy | joint - normal | fd | lower | 1 |", "cells"),
])
def test_a_row_that_does_not_parse_names_its_line(tmp_path, row, match):
    text = P.PROTOCOL.read_text()
    head = "|---|---|---|---|---|---|---|---|---|\n"
    bad = tmp_path / "PROTOCOL.md"
    bad.write_text(text.replace(head, head + row + "\n", 1))
    with pytest.raises(ValueError, match=match):
        P.read_protocol(bad)


def test_holm_against_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, then max(0.06, 0.04) = 0.06
    assert P.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert P.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, and never below an earlier step
    assert P.holm([0.04]) == [0.04] and P.holm([]) == []
    with pytest.raises(ValueError):
        P.holm([1.2])


def test_the_p_value_and_90_interval_come_from_the_stored_95_interval():
    assert P.p_from_interval((0.0, 2 * P.Z95)) == pytest.approx(0.05, abs=1e-12)  # excludes 0 by a hair: p = 0.05
    assert P.p_from_interval((-1.0, 1.0)) == 1.0 and P.p_from_interval((2.0, 2.0)) == 1.0
    assert P.interval90((-P.Z95, P.Z95)) == pytest.approx((-P.Z90, P.Z90))
    assert P.interval90((1.0, 3.0)) == pytest.approx((2 - P.Z90 / P.Z95, 2 + P.Z90 / P.Z95))


def test_the_corrected_verdict():
    assert P.corrected_verdict((0.1, 0.3), 0.001, margin=0.5) == EQUIVALENT, "inside the margin: never better"
    assert P.corrected_verdict((-0.9, -0.5), 0.001, margin=0.1) == BETTER
    assert P.corrected_verdict((-0.9, -0.5), 0.001, margin=0.1, better="higher") == WORSE
    assert P.corrected_verdict((-0.9, -0.5), 0.06, margin=0.1) == TIED, "significant alone, not after Holm"
    assert P.corrected_verdict((0.5, 0.9), 0.001, margin=0.1, better=None) == P.ABOVE
    assert P.corrected_verdict((0.0, 0.0), 1.0, margin=0.1) == SAME


@pytest.mark.parametrize("report", sorted(REPORTS))
def test_the_committed_primary_tests_read_their_stored_intervals(report):
    results = P.primary_results(REPORTS[report], report)
    p = [r["p"] if r["p"] is not None else 1.0 for r in results]
    assert [r["p_holm"] for r in results if r["ci"]] == [q for q, r in zip(P.holm(p), results) if r["ci"]]
    for r in results:
        t = r["test"]
        if r["ci"] is None:
            assert r["verdict"] == P.NOT_YET_RUN and t.file == "12_schedule_control"
            continue
        lo, hi = r["ci"]
        excludes = lo > 0 or hi < 0
        # the interaction's stored verdict names which schedule gains more (schedule_control.INTERACTION_WORDS)
        assert (r["p"] < 0.05) == excludes == (r["stored_verdict"] in (BETTER, WORSE, *INTERACTION_WORDS.values())), r
        assert r["p_holm"] >= r["p"]
        inside = -t.margin < P.interval90(r["ci"])[0] and P.interval90(r["ci"])[1] < t.margin
        if r["verdict"] in (BETTER, WORSE):  # only where the stored verdict says so too, and outside the margin
            assert r["verdict"] == r["stored_verdict"] and r["p_holm"] < 0.05 and not inside
        elif r["verdict"] in (P.ABOVE, P.BELOW):  # a contrast with no better side (the interaction)
            assert t.better is None and r["p_holm"] < 0.05 and not inside
            assert (r["verdict"] == P.BELOW) == (hi < 0)
        else:
            assert r["verdict"] == (EQUIVALENT if inside else TIED), r
    if report == "toy":
        assert [r["verdict"] for r in results] == [BETTER] * 4
    elif not any(r["ci"] for r in results if r["test"].file == "12_schedule_control"):
        # three control tests not yet run count with p = 1: Holm multiplies the smallest p by 5
        assert results[0]["p_holm"] == pytest.approx(min(1.0, 5 * min(p)))


def _independent_records(obj, out):
    """Every dict with a verdict and a difference's interval, found without scp_core.protocol."""
    if isinstance(obj, dict):
        if obj.get("verdict") is not None:
            if obj.get("diff_ci") is not None:
                out.append((obj["diff"], *obj["diff_ci"]))
            elif "effect" in obj and obj.get("ci") is not None:
                out.append((obj["value"], *obj["ci"]))
            elif "joint - normal 95% CI" in obj:
                out.append((obj["joint - normal"], *obj["joint - normal 95% CI"]))
        for v in obj.values():
            _independent_records(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _independent_records(v, out)


def test_the_exploratory_count_is_every_record_but_the_primary_ones():
    total = 0
    for report, folder in REPORTS.items():
        found = []
        for f in sorted((folder / "metrics").glob("*.json")):
            _independent_records(json.loads(f.read_text()), found)
        primary = [(r["value"], *r["ci"]) for r in P.primary_results(folder, report) if r["ci"]]
        stating = [x for x in found if any(x == pytest.approx(q, rel=1e-6) for q in primary)]
        count = P.exploratory_count(folder, report)
        assert count == {"records": len(found), "primary": len(stating), "exploratory": len(found) - len(stating)}
        assert len(stating) >= len(primary)  # each primary test's own record at least
        total += count["records"]
    assert total > 450, "about 500 paired comparisons in the committed metrics"


def test_a_schedule_control_run_joins_the_family(tmp_path):
    """Notebook 12's effects, found by name, column and pairing; an effect at another pairing stays exploratory."""
    (tmp_path / "metrics").mkdir()
    shutil.copy(REPORTS["camvid"] / "metrics" / "prior_comparison.json", tmp_path / "metrics")
    tests = [t for t in P.primary_tests("camvid") if t.file == "12_schedule_control"]
    cis = [[-0.05, -0.03], [-0.004, 0.004], [0.001, 0.03]]
    effects = [{"effect": t.compared, "column": "kid", "value": sum(ci) / 2, "ci": ci, "verdict": "x", "mu_sd": 0.8,
                "mu_zero_snr": mu, "pairing": pairing}
               for t, ci0 in zip(tests, cis) for mu, pairing, ci in ((0.8, "equal mu", ci0),
                                                                     (0.55, "equal share", [c + 0.002 for c in ci0]))]
    (tmp_path / "metrics" / "12_schedule_control.json").write_text(json.dumps({"effects": effects}))
    results = {r["id"]: r for r in P.primary_results(tmp_path, "camvid")}
    assert results["control-sd"]["verdict"] == BETTER
    assert results["control-interaction"]["verdict"] == EQUIVALENT
    assert results["control-fix"]["verdict"] == TIED  # excludes 0 alone (p = 0.036), not after Holm over 5
    assert results["control-fix"]["p"] < 0.05 < results["control-fix"]["p_holm"]
    count = P.exploratory_count(tmp_path, "camvid")
    assert count["records"] == 24 + 6 and count["primary"] == 2 + 3


def test_the_summary_stands_at_the_top_of_each_committed_index():
    for report, folder in REPORTS.items():
        section = P.primary_section(folder, report)
        index = (folder / "index.md").read_text().splitlines()
        assert index[2:2 + len(section)] == section, report
        assert index[2].startswith("## Primary tests")
        assert f"**{P.exploratory_count(folder, report)['exploratory']}** are exploratory" in "\n".join(section)
    assert P.index_lines(REPORTS["toy"], {"profile": "toy", "smoke": True}) == []


def test_plain_controlnet_against_the_real_versus_real_line_reads_the_metrics():
    m = json.loads((REPORTS["toy"] / "metrics" / "prior_comparison.json").read_text())
    plain = next(r for r in m["tables"]["toy"] if r["prior"] == "normal")
    line = P.plain_against_real(REPORTS["toy"])[0]
    assert line.startswith("- **toy** (n = 300)")
    assert f"FID (Inception) {plain['fid']:.1f}" in line and f"against {m['real_reference']['toy']['fid']:.1f}" in line
