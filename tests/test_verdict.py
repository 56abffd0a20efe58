"""The one rule for verdicts: only disjoint 95 % intervals make "better" or "worse"."""
import pytest

from scp_core.metrics.verdict import best_set, best_text, compare, relation


def test_disjoint_intervals_make_a_verdict_on_the_right_side():
    assert relation((0.065, 0.081), (0.192, 0.233)) == "better"                 # a distance: lower is better
    assert relation((0.192, 0.233), (0.065, 0.081)) == "worse"
    assert relation((58.99, 60.39), (49.84, 51.60), lower_is_better=False) == "better"   # mIoU: higher is better
    assert relation((49.84, 51.60), (58.99, 60.39), lower_is_better=False) == "worse"


@pytest.mark.parametrize("a, b", [((0.083, 0.116), (0.113, 0.149)),      # overlap (Fig. 8, mu 0.8 against 0.5)
                                  ((0.178, 0.212), (0.212, 0.258)),      # touching ends
                                  ((0.1, 0.2), (0.12, 0.15))])           # one inside the other
def test_overlapping_or_touching_intervals_are_not_distinguishable(a, b):
    assert relation(a, b) == relation(b, a) == "not distinguishable"
    assert relation(a, b, lower_is_better=False) == "not distinguishable"


def test_compare_quotes_both_intervals_and_n():
    text = compare("joint", 48.8, (48.3, 49.2), "normal", 47.5, (47.0, 48.1), n=300, lower_is_better=False, digits=1)
    assert text == ("joint 48.8 [48.3, 49.2] is better than normal 47.5 [47.0, 48.1] "
                    "(disjoint 95 % intervals, n = 300)")
    tied = compare("mu = 0.8", 0.095, (0.083, 0.116), "mu = 1", 0.118, (0.101, 0.138), n=120)
    assert "not distinguishable from mu = 1 0.118 [0.101, 0.138]" in tied and "n = 120" in tied
    assert "better" not in tied


def test_best_is_reported_with_the_entries_not_distinguishable_from_it():
    # the toy joint prior's mu sweep: 0.8 has the lowest point estimate, 0.5 and 1.0 overlap it
    mus = ["mu = 0.5", "mu = 0.7", "mu = 0.8", "mu = 0.9", "mu = 1"]
    fd = [0.128, 0.102, 0.095, 0.096, 0.118]
    ci = [(0.113, 0.149), (0.090, 0.117), (0.083, 0.116), (0.084, 0.110), (0.101, 0.138)]
    best, ties = best_set(fd, ci)
    assert best == 2 and ties == [0, 1, 2, 3, 4]
    text = best_text(mus, fd, ci, n=120, metric="FD-toy")
    assert text.startswith("lowest FD-toy: mu = 0.8 (0.095 [0.083, 0.116]); not distinguishable from it at n = 120")
    assert "mu = 0.5" in text and "mu = 1" in text
    best, ties = best_set([0.5, 0.1, 0.9], [(0.4, 0.6), (0.05, 0.15), (0.8, 1.0)])
    assert (best, ties) == (1, [1])
    assert "every other entry is distinguishable" in best_text(["a", "b", "c"], [0.5, 0.1, 0.9],
                                                              [(0.4, 0.6), (0.05, 0.15), (0.8, 1.0)], n=10, metric="d")
    assert best_set([50, 60], [(49, 51), (59, 61)], lower_is_better=False) == (1, [1])


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        relation((0.2, 0.1), (0.0, 0.3))
    with pytest.raises(ValueError, match="as many intervals"):
        best_set([0.1, 0.2], [(0.0, 0.2)])
