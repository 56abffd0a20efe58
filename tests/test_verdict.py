"""The one rule for verdicts: "better" or "worse" only where the 95 % interval of the paired difference excludes 0;
the same start, or an interval of width 0, is no test; with a margin, "equivalent within the margin"."""
import numpy as np
import pytest

from scp_core.metrics.verdict import (CONSTANT, EQUIVALENT, SAME, best_set, best_text, compare, degenerate_claims,
                                      non_inferiority, relation_of_difference, relation_with_margin, difference_format)


def test_an_interval_of_the_difference_that_excludes_zero_makes_a_verdict_on_the_right_side():
    assert relation_of_difference((-0.16, -0.12)) == "better"                  # a distance: lower is better
    assert relation_of_difference((0.12, 0.16)) == "worse"
    assert relation_of_difference((0.5, 1.8), lower_is_better=False) == "better"   # mIoU: higher is better
    assert relation_of_difference((-1.8, -0.5), lower_is_better=False) == "worse"


@pytest.mark.parametrize("ci", [(-0.02, 0.03), (0.0, 0.05), (-0.05, 0.0)])
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


# issue 47: degenerate and tiny verdicts

# notebook 01 on CamVid: N(0, I) against N_x0 at mu = 1, where the schedule's signal is 0: the same start
FID = dict(a="N(0, I)", value_a=189.14725672311198, ci_a=(182.58434396293526, 196.41763733352047),
           b="N_x0 at mu = 1", value_b=189.14502029306715, ci_b=(182.5802540914217, 196.41519199840968),
           diff_ci=(0.00011086212612079283, 0.006553035887916336), n=50, digits=1)


def test_two_arms_that_are_the_same_start_are_no_test():
    assert relation_of_difference((0.0, 0.0)) == relation_of_difference((0.0, 0.0), lower_is_better=False) == SAME
    assert relation_of_difference((0.2, 0.2)) == CONSTANT  # one value on every resample: nothing was resampled
    assert relation_of_difference((0.1, 0.3), same=True) == SAME  # the caller knows: rounding is not an effect
    text = compare(**FID, same=True)
    assert text == ("N(0, I) 189.1 [182.6, 196.4] against N_x0 at mu = 1 189.1 [182.6, 196.4]: the same start: not a "
                    "test (difference +0.0022, 95 % interval [0.0001, 0.0066]; paired resampling of maps and "
                    "reference images, n = 50)")
    zero = compare("a", 44.7, (40.1, 49.0), "b", 44.7, (40.1, 49.0), diff_ci=(0.0, 0.0), n=50, digits=1)
    assert "a 44.7 [40.1, 49.0] against b 44.7 [40.1, 49.0]: the same start: not a test" in zero
    constant = compare("a", 1.2, (1.0, 1.4), "b", 1.0, (0.8, 1.2), diff_ci=(0.2, 0.2), n=1, digits=1)
    assert ": a constant difference: not a test (difference +0.2, 95 % interval [0.2, 0.2] on every resample" \
        in constant
    for t in (text, zero, constant):
        assert not {"better", "worse", "excludes", "includes", "distinguishable"} & set(t.replace(",", " ").split())


def test_a_tiny_difference_is_printed_with_the_decimals_that_show_its_interval():
    """The committed sentences said "+0.0, 95 % interval [0.0, 0.0], excludes 0" about [0.0001, 0.0066]."""
    text = compare(**FID)
    assert "is worse than" in text and "difference +0.0022, 95 % interval [0.0001, 0.0066], excludes 0" in text
    assert text.startswith("N(0, I) 189.1 [182.6, 196.4]"), "the arms keep their own decimals"
    kid = compare("N(0, I)", 0.2237, (0.2092, 0.2397), "N_x0", 0.2237, (0.2092, 0.2397), n=50, digits=4,
                  diff_ci=(2.7638518032002306e-08, 1.1935247810559433e-05))
    assert "95 % interval [0.00000003, 0.00001194], excludes 0" in kid
    acc = compare("joint", 91.253, (90.99, 91.52), "categorical", 91.059, (90.80, 91.33), lower_is_better=False,
                  diff_ci=(0.15361336263023181, 0.2310924072265815), n=300, digits=1)
    assert "difference +0.19, 95 % interval [0.15, 0.23], excludes 0" in acc
    worse = compare("joint mu = 0.7", 84.8, (84.2, 85.3), "normal mu = 1", 85.2, (84.7, 85.8), lower_is_better=False,
                    diff_ci=(-0.96, -0.03), n=50, digits=1)  # committed as "[-1.0, -0.0], excludes 0"
    assert "difference -0.40, 95 % interval [-0.96, -0.03], excludes 0" in worse
    assert difference_format((-0.16, -0.12), 3) == ".3f" and difference_format((-0.00001, 0.00002), 3) == ".5f"
    assert difference_format((0.0, 0.0), 2) == ".2f"
    assert difference_format((2.37e-10, 2.37e-10 + 2e-13), 3) == ".3e", "too narrow for 12 decimals: scientific"


def test_no_sentence_says_excludes_0_about_an_interval_that_reads_with_width_0():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        scale = 10.0 ** rng.integers(-9, 3)
        lo = float(rng.normal() * scale)
        hi = lo + float(abs(rng.normal()) * scale * rng.choice([0, 1e-3, 1]))
        for digits in (1, 3, 4):
            for kwargs in ({}, {"margin": 0.01}, {"margin": 0.01, "diff_ci90": (lo, hi)}):
                text = compare("a", 1.0, (0.5, 1.5), "b", 1.0, (0.5, 1.5), diff_ci=(lo, hi), n=10, digits=digits,
                               **kwargs)
                assert not degenerate_claims(text), text
    assert degenerate_claims("x (difference +0.0, 95 % interval [0.0, 0.0], excludes 0; ...)") == \
        ["[0.0, 0.0], excludes 0"]
    assert degenerate_claims("[-0.00, 0.0], excludes 0 and [0.1, 0.2], excludes 0") == ["[-0.00, 0.0], excludes 0"]
    assert degenerate_claims("[-1.0, -0.0], excludes 0; [0.0, 0.3], excludes 0; [0.0, 0.3], includes 0") == \
        ["[-1.0, -0.0], excludes 0", "[0.0, 0.3], excludes 0"]
    assert degenerate_claims("[2.4e-10, 2.40e-10], excludes 0; [2.4e-10, 2.5e-10], excludes 0") == \
        ["[2.4e-10, 2.40e-10], excludes 0"]


def test_a_margin_gives_equivalence_by_two_one_sided_tests():
    # FD-toy, margin 0.01 fixed before the run
    assert relation_with_margin((-0.004, 0.006), 0.01, diff_ci90=(-0.003, 0.005)) == EQUIVALENT
    assert relation_with_margin((0.001, 0.006), 0.01) == EQUIVALENT, "a real difference smaller than the margin"
    assert relation_with_margin((-0.004, 0.012), 0.01, diff_ci90=(-0.003, 0.0099)) == EQUIVALENT
    assert relation_with_margin((-0.004, 0.012), 0.01) == "not distinguishable", "the 95 % interval stands in"
    assert relation_with_margin((-0.03, 0.02), 0.01) == "not distinguishable"
    assert relation_with_margin((0.004, 0.03), 0.01) == "worse"
    assert relation_with_margin((0.004, 0.03), 0.01, lower_is_better=False) == "better"
    assert relation_with_margin((-0.02, -0.011), 0.01, diff_ci90=(-0.019, -0.012)) == "better"
    assert relation_with_margin((0.0, 0.0), 0.01) == SAME and relation_with_margin((0.1, 0.3), 1, same=True) == SAME
    with pytest.raises(ValueError, match="positive"):
        relation_with_margin((0.0, 0.1), 0)
    text = compare("mixture", 0.101, (0.09, 0.11), "joint", 0.099, (0.09, 0.11), diff_ci=(0.001, 0.006), n=300,
                   margin=0.01, diff_ci90=(0.0015, 0.0055))
    assert text == ("mixture 0.101 [0.090, 0.110] is equivalent to joint 0.099 [0.090, 0.110] within the margin 0.01 "
                    "(difference +0.002, 95 % interval [0.001, 0.006], excludes 0; 90 % interval [0.002, 0.005] "
                    "inside [-0.01, 0.01]; paired resampling of maps and reference images, n = 300)")
    wide = compare("a", 0.12, (0.1, 0.14), "b", 0.1, (0.08, 0.12), diff_ci=(0.004, 0.03), n=300, margin=0.01)
    assert "a 0.120 [0.100, 0.140] is worse than b" in wide
    assert "excludes 0; 95 % interval (for want of the 90 %) [0.004, 0.030] not inside [-0.01, 0.01]" in wide
    assert compare(**FID, margin=1.0, same=True).endswith("the same start: not a test (difference +0.0022, 95 % "
                                                          "interval [0.0001, 0.0066]; paired resampling of maps and "
                                                          "reference images, n = 50)")


def test_an_entry_the_same_as_the_best_is_listed_as_no_test():
    to_best = [(0.02, 0.05), (0.0, 0.0), (0.0, 0.0), (-0.01, 0.012)]
    best, ties = best_set([0.2, 0.1, 0.1, 0.11], lambda b: to_best)
    assert best == 1 and ties == [1, 2, 3]
    text = best_text(["w", "x", "y", "z"], [0.2, 0.1, 0.1, 0.11], [(0.1, 0.3)] * 4, lambda b: to_best, n=9,
                     metric="d")
    assert text == ("lowest d: x (0.100 [0.100, 0.300]); not distinguishable from it (95 % interval of the "
                    "difference includes 0; paired resampling of maps and reference images, n = 9): z; not a test "
                    "against it (the difference's interval has width 0: the same start, or one value on every "
                    "resample): y")


def test_a_comparison_record_of_the_same_start_draws_no_verdict(tmp_path):
    """Notebook 01's N(0, I) against N_x0 at a mu whose signal is 0: the caller knows they are the same start."""
    import torch

    from scp_core import study
    from scp_core.metrics.resampling import Draws
    from scp_core.study.evaluation import Comparison

    comp = Comparison(study.settings("toy", smoke=True, out_dir=str(tmp_path)), torch.zeros(3, 4, 4), n_boot=4,
                      judge_b=False)
    up = np.array([0.0015, 0.002, 0.0025, 0.002])
    comp._draws = {col: {"a": Draws(1.002, 1.0 + up), "b": Draws(1.0, np.ones(4))} for col in ("fd", "miou", "acc")}
    comp.items = {k: {"cms": {"miou": np.zeros((3, 2, 3))}} for k in "ab"}  # scored: three maps, one image each
    assert comp.record("a", "b")["verdict"] == "worse"
    rec = comp.record("a", "b", same=True)
    assert rec["verdict"] == SAME and ": the same start: not a test (difference +0.002" in rec["text"]
