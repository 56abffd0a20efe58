"""The one rule for verdicts: "better" or "worse" only where the 95 % interval of the paired difference excludes 0."""
import pytest

from scp_core.metrics.verdict import best_set, best_text, compare, non_inferiority, relation_of_difference


def test_an_interval_of_the_difference_that_excludes_zero_makes_a_verdict_on_the_right_side():
    assert relation_of_difference((-0.16, -0.12)) == "better"                  # a distance: lower is better
    assert relation_of_difference((0.12, 0.16)) == "worse"
    assert relation_of_difference((0.5, 1.8), lower_is_better=False) == "better"   # mIoU: higher is better
    assert relation_of_difference((-1.8, -0.5), lower_is_better=False) == "worse"


@pytest.mark.parametrize("ci", [(-0.02, 0.03), (0.0, 0.05), (-0.05, 0.0), (0.0, 0.0)])
def test_an_interval_that_includes_or_touches_zero_is_not_distinguishable(ci):
    assert relation_of_difference(ci) == relation_of_difference(ci, lower_is_better=False) == "not distinguishable"


def test_marginal_overlap_is_not_the_rule():
    """Paired data: two settings whose marginal intervals overlap can still differ (their difference is tight)."""
    text = compare("joint", 0.192, (0.178, 0.212), "categorical", 0.232, (0.212, 0.258), diff_ci=(-0.05, -0.03),
                   n=300)
    assert text.startswith("joint 0.192 [0.178, 0.212] is better than categorical 0.232 [0.212, 0.258]")
    assert "difference -0.040, 95 % interval [-0.050, -0.030], excludes 0" in text
    assert "paired resampling of maps and reference images, n = 300" in text


def test_compare_quotes_both_intervals_the_difference_and_n():
    text = compare("joint", 48.8, (48.3, 49.2), "normal", 47.5, (47.0, 48.1), diff_ci=(0.6, 2.0), n=300,
                   lower_is_better=False, digits=1)
    assert text == ("joint 48.8 [48.3, 49.2] is better than normal 47.5 [47.0, 48.1] (difference +1.3, 95 % interval "
                    "[0.6, 2.0], excludes 0; paired resampling of maps and reference images, n = 300)")
    tied = compare("mu = 0.8", 0.095, (0.083, 0.116), "mu = 1", 0.118, (0.101, 0.138), diff_ci=(-0.05, 0.004), n=120)
    assert "not distinguishable from mu = 1 0.118 [0.101, 0.138]" in tied and "includes 0" in tied
    assert "better" not in tied


def test_non_inferiority_needs_the_whole_interval_inside_the_margin():
    met, text = non_inferiority("mixture", "joint", 0.002, (-0.004, 0.006), margin=0.0071, n=300, metric="FD-toy")
    assert met and "met" in text and "below +0.0071" in text
    met, text = non_inferiority("mixture", "joint", 0.002, (-0.004, 0.009), margin=0.0071, n=300, metric="FD-toy")
    assert not met and text.endswith("not met")
    met, _ = non_inferiority("a", "b", -0.1, (-0.4, 0.3), margin=0.5, n=10, metric="mIoU", lower_is_better=False)
    assert met
    with pytest.raises(ValueError, match="positive"):
        non_inferiority("a", "b", 0.0, (-1, 1), margin=0, n=10, metric="d")


def test_best_is_reported_with_the_entries_whose_difference_from_it_includes_zero():
    mus = ["mu = 0.5", "mu = 0.7", "mu = 0.8", "mu = 0.9", "mu = 1"]
    fd = [0.128, 0.102, 0.095, 0.096, 0.118]
    ci = [(0.113, 0.149), (0.090, 0.117), (0.083, 0.116), (0.084, 0.110), (0.101, 0.138)]
    # differences to mu = 0.8 (the best): 0.5 and 1 differ, 0.7 and 0.9 do not
    to_best = [(0.02, 0.05), (-0.001, 0.015), (0.0, 0.0), (-0.01, 0.012), (0.005, 0.04)]
    best, ties = best_set(fd, lambda b: to_best)
    assert best == 2 and ties == [1, 2, 3]
    text = best_text(mus, fd, ci, lambda b: to_best, n=120, metric="FD-toy")
    assert text.startswith("lowest FD-toy: mu = 0.8 (0.095 [0.083, 0.116]); not distinguishable from it")
    assert text.endswith("n = 120): mu = 0.7, mu = 0.9")
    alone = best_text(["a", "b"], [0.1, 0.5], [(0.05, 0.15), (0.4, 0.6)], lambda b: [(0.0, 0.0), (0.3, 0.5)], n=10,
                      metric="d")
    assert "every other entry differs from it" in alone
    assert best_set([50, 60], lambda b: [(-12, -8), (0, 0)], lower_is_better=False) == (1, [1])


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        relation_of_difference((0.2, 0.1))
    with pytest.raises(ValueError, match="as many difference intervals"):
        best_set([0.1, 0.2], lambda b: [(0.0, 0.2)])
