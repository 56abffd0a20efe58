"""Result sentences are generated from the metrics files: the committed blocks equal what the committed metrics give."""
import json

import pytest

from scp_core.claims import (BEGIN, SETTINGS, SUMMARY, SUMMARY_BEGIN, SUMMARY_END, block, bottom_line, claims,
                              committed_block, committed_summary, rewrite_block, summary_block, PAGES)
from scp_core.io import REPO_ROOT

PROFILES = [p.name for p in sorted((REPO_ROOT / "reports").iterdir()) if (p / "metrics").is_dir()]


@pytest.mark.parametrize("profile", PROFILES)
def test_committed_blocks_equal_what_the_committed_metrics_give(profile):
    out = REPO_ROOT / "reports" / profile
    assert committed_block(out / "index.md", profile) == block(out, profile), f"reports/{profile}/index.md is stale"


@pytest.mark.parametrize("name", list(SUMMARY))
def test_the_readme_summary_equals_what_the_committed_metrics_and_benchmarks_give(name):
    readme = committed_summary(REPO_ROOT / "README.md", name)
    assert readme is not None, f"README.md has no generated block {name!r}"
    assert readme == summary_block(name, REPO_ROOT / "reports"), (
        f"README.md's {name} block differs from the committed files: run python -m scp_core.claims")
    for page in PAGES[1:]:  # the other pages hold some of the blocks, each as generated
        held = committed_summary(REPO_ROOT / page, name)
        assert held in (None, readme), f"{page}'s {name} block differs: run python -m scp_core.claims"


def bullets_of(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("- ")]


def test_the_bottom_line_leads_with_every_primary_test_then_the_seeds_and_the_distance_from_real():
    from scp_core.protocol import read_protocol

    lines = bottom_line(REPO_ROOT / "reports")
    table = [line for line in lines if line.startswith("| ") and "`" in line]
    assert [line.split("`")[1] for line in table] == [t.id for t in read_protocol()], "every primary test, in order"
    assert all(line.rstrip(" |").split("| ")[-1] for line in table), "each with its corrected verdict"
    bullets = bullets_of(lines)
    assert len(bullets) == 2 and "t interval" in bullets[0] and "from real data" in bullets[1], bullets
    assert all(any(label.split(" (")[0].lower() in bullets[1].lower() for _, _, label in SETTINGS) for _ in [0])


def test_rewriting_the_summary_keeps_the_page_around_it_as_written(tmp_path):
    page = tmp_path / "README.md"
    template = "Each notebook writes `reports/<profile>/metrics/<name>.json` and `<out>/priors/<setting>`."
    page.write_text(f"{template}\n{SUMMARY_BEGIN.format(name='bottom-line')}\nold\n"
                    f"{SUMMARY_END.format(name='bottom-line')}\nrest\n")
    assert rewrite_block(page, REPO_ROOT / "reports" / "toy", "toy")
    text = page.read_text()
    assert text.startswith(template + "\n") and text.endswith("rest\n") and "\nold\n" not in text
    assert summary_block("bottom-line", REPO_ROOT / "reports") in text


def test_every_sentence_comes_from_a_verdict_of_the_metrics(tmp_path):
    out = tmp_path / "reports" / "toy"
    (out / "metrics").mkdir(parents=True)
    rec = {"a": "joint", "b": "normal", "column": "fd", "text": "FD-toy: joint 0.1 [0.09, 0.11] is better than ..."}
    metrics = {"protocol": {"decision_rule": "paired"}, "metric": "FD-toy",
               "tables": {"toy": [{"prior": "normal", "n": 300}]}, "comparisons": {"toy": [rec]},
               "ordering": {"toy": "joint < normal"}, "real_reference": {"toy": {"fd": 0.02, "fd_ci": [0.01, 0.03]}}}
    (out / "metrics" / "prior_comparison.json").write_text(json.dumps(metrics))
    (out / "metrics" / "04_mu_sweep.json").write_text(json.dumps({"best_by_prior": {"joint": "lowest ..."}}))
    lines = claims(out, "toy")
    assert lines[1] == f"  - {rec['text']}"  # the notebook's sentence, unchanged
    assert "paired-interval rule" in lines[-1]  # a file from before the rule is not restated
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN.format(profile='toy')}\nold\n<!-- claims:toy:end -->\nrest\n")
    assert rewrite_block(readme, out, "toy")
    text = readme.read_text()
    assert "old" not in text and rec["text"] in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert not rewrite_block(readme, out, "camvid")  # no block for that profile: nothing changes


def test_fig8_says_whether_the_two_judges_put_the_best_mu_at_the_same_place():
    from scp_core.claims import _fig8_judges

    def rows(kind, fds, fids):
        return [{"prior": kind, "mu": mu, "fd": fd, "fid": fid, "metric": "FD-toy"}
                for mu, fd, fid in zip((0.7, 0.8, 0.9), fds, fids)]
    same = {"table": rows("joint", (3, 1, 2), (30, 10, 20)) + rows("spatial", (1, 2, 3), (10, 20, 30))}
    assert "joint 0.8 against 0.8, spatial 0.7 against 0.7: they agree for every prior" in _fig8_judges(same)
    mixed = {"table": rows("joint", (3, 1, 2), (10, 30, 20)) + rows("spatial", (1, 2, 3), (10, 20, 30))}
    assert "joint 0.8 against 0.7" in _fig8_judges(mixed) and "they agree for spatial only" in _fig8_judges(mixed)
