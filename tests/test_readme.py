"""The README a newcomer reads in five minutes, and the pages it sends them to.

README.md stays short and opens with the two commands; CI runs its test command; no page names an issue of this
project's tracker; every relative link resolves; the timings page quotes only numbers its benchmark files hold.
"""
import re
from pathlib import Path

import pytest

from scp_core.io import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "reports" / "bench" / "README.md",
         REPO_ROOT / "zoo" / "camvid" / "HISTORY.md"]
ISSUE = re.compile(r"\bissues?[ -]?#?\d+|(?<![\w&])#\d+\b", re.I)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _commands() -> list[str]:
    """The README's first two non-empty lines after the title, their comments left off."""
    lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line.split("#")[0].strip() for line in lines[1:3]]


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= 10_000, f"README.md has {len(text)} characters; move detail to docs/"
    assert text.startswith("# ")
    assert _commands() == ["python3 bootstrap.py study", "python3 bootstrap.py test"]


def test_ci_runs_the_readme_test_command():
    test = _commands()[1]
    run = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.fullmatch(rf"(\w+=\S+ )*{re.escape(test)}", line) for line in run), (
        f".ci/run does not run {test!r}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_page_names_an_issue(page):
    found = ISSUE.findall(page.read_text(encoding="utf-8"))
    assert not found, f"{page.relative_to(REPO_ROOT)} names issues {found}: state what is true now instead"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves_to_a_file_of_the_repository(page):
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        target = link.split("#")[0]
        if not target or re.match(r"\w+:", target):  # an anchor on the page, or a URL
            continue
        path = (page.parent / target).resolve()
        assert path.is_relative_to(REPO_ROOT) and path.exists(), f"{page.relative_to(REPO_ROOT)} links to {link}"


def test_no_page_holds_a_template_mangled_as_a_path():
    """A path-like template rewritten by the path scrubber reads ``reports/<profile>.../metrics<name>.json``."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r">\.\.\./", text), f"{page.relative_to(REPO_ROOT)} holds a mangled template"


def _numbers(text: str) -> set[str]:
    """The quoted measurements of a passage, outside code and link targets: decimals, numbers of four or more
    digits and percentages (``58 %``), as the benchmark files write them (no thousands separators)."""
    text = re.sub(r"`[^`]*`|\]\([^)]*\)", " ", text)
    found = re.findall(r"(?<![\w.])(\d+(?:,\d{3})*(?:\.\d+)?)( ?%)?", text)
    return {n.replace(",", "") + pct for n, pct in found if "." in n or len(n.replace(",", "")) >= 4 or pct}


def test_the_timings_page_quotes_only_numbers_of_the_files_it_links():
    page = REPO_ROOT / "reports" / "bench" / "README.md"
    for item in re.split(r"\n(?=\* )", page.read_text(encoding="utf-8")):
        if not item.startswith("* "):
            continue
        sources = [(page.parent / t).resolve() for t in LINK.findall(item) if t.endswith((".md", ".json"))]
        text = " ".join(Path(s).read_text(encoding="utf-8") for s in sources)
        missing = [n for n in _numbers(item) if n not in text]
        assert not missing, f"numbers not in {[s.name for s in sources]}: {missing}\n{item}"
