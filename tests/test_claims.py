"""Result sentences are generated from the metrics files: the committed blocks equal what the committed metrics give."""
import json

import pytest

from scp_core.claims import BEGIN, block, claims, committed_block, rewrite_block
from scp_core.io import REPO_ROOT

PROFILES = [p.name for p in sorted((REPO_ROOT / "reports").iterdir()) if (p / "metrics").is_dir()]


@pytest.mark.parametrize("profile", PROFILES)
def test_committed_blocks_equal_what_the_committed_metrics_give(profile):
    out = REPO_ROOT / "reports" / profile
    expected = block(out, profile)
    readme = committed_block(REPO_ROOT / "README.md", profile)
    assert readme is not None, f"README.md has no generated block for {profile} ({BEGIN.format(profile=profile)})"
    assert readme == expected, f"README.md's {profile} block differs from its metrics: run scpdiff reproduce"
    assert committed_block(out / "index.md", profile) == expected, f"reports/{profile}/index.md is stale"


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
