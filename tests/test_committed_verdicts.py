"""Issue 47: no generated sentence says "excludes 0" about an interval that reads with width 0 or an end at 0.

The committed reports were written before :mod:`scp_core.metrics.verdict` printed a difference with the decimals its
interval needs, and regenerating them takes hours of CPU. So the generator is checked on the committed metrics (each
stored comparison's sentence written again from its numbers), and the committed files that still hold an older
sentence are named in :data:`STALE`: a new report with one fails, and so does a listed file once it is rewritten
(take it off the list then)."""
import json

import pytest

from scp_core.io import REPO_ROOT
from scp_core.metrics.verdict import SAME, TIED, compare, degenerate_claims, relation_of_difference
from scp_core.study.evaluation import COLUMNS

STALE = {  # committed before issue 47; each holds "[0.0, 0.0], excludes 0" or an end that reads 0
    "reports/toy/metrics/08_global_factors.json", "reports/toy/metrics/prior_comparison.json"}
METRICS = sorted((REPO_ROOT / "reports").glob("*/metrics/*.json"))


def _records(obj):
    """Every stored comparison (a dict with a difference's interval and its sentence) in a metrics file."""
    if isinstance(obj, dict):
        if "diff_ci" in obj and "text" in obj:
            yield obj
        for v in obj.values():
            yield from _records(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _records(v)


def _sentence(rec: dict) -> str:
    """The sentence :func:`compare` writes now from a record of :meth:`scp_core.study.evaluation.Comparison.record`,
    with the decimals that method gives its column (FID in the distance column: 1)."""
    _, lower, digits = COLUMNS[rec["column"]]
    digits = 1 if rec["column"] == "fd" and rec["metric"] == "FID" else digits
    return f"{rec['metric']}: " + compare(rec["a"], rec["value_a"], rec["ci_a"], rec["b"], rec["value_b"], rec["ci_b"],
                                         diff_ci=rec["diff_ci"], n=rec["n"], lower_is_better=lower, digits=digits)


@pytest.mark.parametrize("path", METRICS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_the_generator_writes_no_degenerate_sentence_from_the_committed_metrics(path):
    for rec in _records(json.loads(path.read_text())):
        lower = COLUMNS[rec["column"]][1] if "column" in rec else "lower" in rec["metric"]
        now = relation_of_difference(rec["diff_ci"], lower)
        zero = rec["diff_ci"][0] == rec["diff_ci"][1] == 0
        assert now == rec["verdict"] or (zero and rec["verdict"] == TIED and now == SAME), rec
        if "value_a" in rec:
            text = _sentence(rec)
            assert not degenerate_claims(text), text
            if not degenerate_claims(rec["text"]) and not zero:
                assert text == rec["text"], "a sentence that was sound is written as before"


def test_the_committed_files_with_older_sentences_are_exactly_the_known_ones():
    files = ["README.md", *(str(p.relative_to(REPO_ROOT)) for p in METRICS)] + [
        str(p.relative_to(REPO_ROOT)) for pattern in ("*/index.md", "*/notebooks/*.ipynb")
        for p in sorted((REPO_ROOT / "reports").glob(pattern))]
    holding = {f for f in files if degenerate_claims((REPO_ROOT / f).read_text(encoding="utf-8"))}
    assert not holding - STALE, f"new sentences that say 'excludes 0' about a zero-width interval: {holding - STALE}"
    assert not STALE - holding, f"rewritten since: take them off STALE: {STALE - holding}"
