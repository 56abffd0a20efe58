"""Notebooks that teach: each opens with a markdown title, and none names an issue of this project's tracker.

A notebook's text is read by a student, not by the people who did the work: "issue 31", "issue-13" or "#12" in a
markdown cell, a printed sentence or a metrics string is history of the work, not an explanation.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Notebooks whose text another change is still rewriting: they fail the issue check today. Remove a name once its
# notebook passes (a passing pending notebook shows as XPASS).
PENDING: set[str] = set()

# "issue 12", "Issue-31", "issues 5", "issue #5" and a bare "#12" used as a reference. Not matched: markdown
# headings ("## 1."), colours ("#1f77b4"), anchors ("method.md#glossary").
ISSUE = re.compile(r"\bissues?[\s-]*#?\d+|(?<![\w&#/.])#\d+\b", re.IGNORECASE)


def issue_mentions(nb) -> list[str]:
    """Every issue reference in the notebook's cells (markdown and code, strings and comments alike)."""
    hits = []
    for i, cell in enumerate(nb.cells):
        for m in ISSUE.finditer(cell.source):
            line = cell.source[:m.start()].count("\n") + 1
            hits.append(f"cell {i} ({cell.cell_type}), line {line}: {m.group(0)!r}")
    return hits


def test_the_pattern_finds_issue_references_and_nothing_else():
    for text in ("until the issue-31 revision", "(issue 13)", "toolkit issue #5", "Issue 7", "see #12", "issues 4"):
        assert ISSUE.search(text), text
    for text in ("## 1. Build", 'color="#1f77b4"', "(../docs/method.md#glossary)", "C0", "x#1", "tissue 3"):
        assert not ISSUE.search(text), text


def _params(names):
    return [pytest.param(p, id=p.stem, marks=pytest.mark.xfail(reason="its text is being rewritten by another change",
                                                                strict=False) if p.stem in names else ())
            for p in NOTEBOOKS]


@pytest.mark.parametrize("path", _params(PENDING))
def test_no_notebook_names_an_issue(path):
    hits = issue_mentions(nbformat.read(path, as_version=4))
    assert not hits, f"{path.name} names issues of the tracker: {hits}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_opens_with_a_markdown_title(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown", f"{path.name}: the first cell is {first.cell_type}, not a title"
    assert re.match(r"# \S", first.source.lstrip()), f"{path.name}: the first cell does not start with a '# ' title"
