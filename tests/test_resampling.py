"""The paired, two-sided resampling (scp_core.metrics.resampling): exact against the direct formulas on
resampled sets, and calibrated on synthetic features whose truth is known."""
import numpy as np
import pytest
import torch
from scipy import stats

from scp_core.metrics import SegmentationMeter
from scp_core.metrics.frechet import feature_statistics, frechet_distance
from scp_core.metrics.kid import kid_from_features
from scp_core.metrics.resampling import (Draws, FrechetGram, block_indices, block_length, block_scale, difference,
                                         draw_indices, frechet_batched, frechet_draws, interval, multiplicities,
                                         reference_weights, segmentation_draws, widened)
from scp_core.metrics.verdict import relation_of_difference


@pytest.mark.parametrize("dim, n, m", [(6, 40, 50), (256, 120, 100), (600, 30, 31)])  # fewer images than dims too
def test_gram_form_is_the_frechet_distance_and_kid_of_the_resampled_sets(dim, n, m):
    rng = np.random.default_rng(dim)
    x, y = rng.normal(size=(n, dim)), rng.normal(size=(m, dim)) * 1.1 + 0.1
    g = FrechetGram(x, y)
    ref = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert g.distance() == pytest.approx(ref, rel=1e-6)
    i, j = rng.integers(0, n, n), rng.integers(0, m, m)
    w, v = multiplicities(i[None], n)[0], multiplicities(j[None], m)[0]
    direct = frechet_distance(*feature_statistics(x[i]), *feature_statistics(y[j]))
    assert g.distance(w, v) == pytest.approx(direct, rel=1e-6)
    assert g.kid() == pytest.approx(kid_from_features(x, y, n_subsets=1, subset_size=n)["kid_full"], rel=1e-9)
    if dim <= 64:  # the batched covariance form gives the same values
        assert frechet_batched(x, y, w[None], v[None])[0] == pytest.approx(direct, rel=1e-6)


def test_segmentation_draws_are_the_meter_on_the_resampled_images():
    rng = np.random.default_rng(0)
    target = torch.as_tensor(rng.integers(0, 4, size=(12, 8, 8)))
    noise = torch.as_tensor(rng.integers(0, 4, (12, 8, 8)))
    pred = torch.where(torch.as_tensor(rng.random((12, 8, 8)) < 0.7), target, noise)
    meter = SegmentationMeter(4, ignore_index=None, keep_per_sample=True)
    meter.update(pred, target)
    cms = torch.stack(meter._per_sample).numpy()
    index = draw_indices(12, 5, seed=3)
    d = segmentation_draws({"a": cms}, index)["a"]
    assert d["miou"].value == pytest.approx(100 * meter.compute()["miou"])
    again = SegmentationMeter(4, ignore_index=None)
    again.update(pred[index[2]], target[index[2]])
    assert d["miou"].draws[2] == pytest.approx(100 * again.compute()["miou"])
    assert d["acc"].draws[2] == pytest.approx(100 * again.compute()["acc"])


def test_paired_draws_share_the_map_indices_and_the_reference_moves_with_its_maps():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    index = draw_indices(20, 50, seed=0)
    a = frechet_draws({"a": x, "b": x}, y, index, ref_maps=20)
    assert np.array_equal(a["a"].draws, a["b"].draws)  # one setting twice: a difference of exactly 0
    assert difference(a["a"], a["b"]) == (0.0, (0.0, 0.0))
    # the reference is resampled: its draws vary even for a fixed generated set
    w = multiplicities(index[:3], 20)
    fixed = frechet_batched(x, y, np.ones((3, 20)), w)
    assert np.ptp(fixed) > 0
    with pytest.raises(ValueError, match="real images"):
        frechet_draws({"a": x}, y[:10], index, ref_maps=20)
    # a larger reference: its first 20 images move with the maps, the other 10 are drawn on their own
    v = reference_weights(index, 30, 20, seed=0)
    assert np.array_equal(v[:, :20], multiplicities(index, 20)) and (v[:, 20:].sum(1) == 10).all()


def test_interval_is_shifted_by_the_bootstrap_bias():
    d = Draws(1.0, np.linspace(1.0, 3.0, 1001))  # the draws sit above the estimate by 1.0 on average
    lo, hi = interval(d)
    assert lo == pytest.approx(1.05 - 1.0, abs=1e-9) and hi == pytest.approx(2.95 - 1.0, abs=1e-9)


def _replication(seed: int, shift: float, n: int = 100, dim: int = 8, n_boot: int = 1000) -> str:
    """One synthetic study: maps z, their real images' features y, two settings generated on the same maps
    (the same distribution, b's mean moved by ``shift``), the reference = the maps' real images."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, dim))
    y = z + 0.5 * rng.normal(size=(n, dim))
    a = 0.2 * z + 0.8 * rng.normal(size=(n, dim)) + 0.5
    b = 0.2 * z + 0.8 * rng.normal(size=(n, dim)) + 0.5 + shift
    r = frechet_draws({"a": a, "b": b}, y, draw_indices(n, n_boot, seed), ref_maps=n)
    return relation_of_difference(difference(r["b"], r["a"])[1])


def test_calibration_same_distribution_is_not_distinguishable_in_about_95_percent():
    """Issue 31: two arms from one distribution are called "not distinguishable" in 93-97 % of 200
    replications (1,000 resamples each). Measured: 95.0 %. (Near the floor, where the generated sets are
    about as close to the reference as real images are, the interval is conservative: 99-100 %.)"""
    calls = [_replication(seed, 0.0) for seed in range(200)]
    share = calls.count("not distinguishable") / len(calls)
    assert 0.93 <= share <= 0.97, share


def test_calibration_planted_difference_is_found():
    """The power the study claims (docs/method.md, "the resampled interval"): a planted difference of about 3.8
    standard errors of the paired difference (a mean shift of 0.15 in 8 dimensions: 8 (2 * 0.5 * 0.15 +
    0.15^2) = 1.38 in expectation; the difference's standard deviation across the null replications is 0.36)
    is called "worse" in at least 85 % of 100 replications (measured: 90 %; a z-test would reach 97 %: the
    bias-shifted percentile interval is a little wide). At 3.0 standard errors (shift 0.12) it was 73 %."""
    calls = [_replication(1000 + seed, 0.15, n_boot=500) for seed in range(100)]
    assert calls.count("worse") / len(calls) >= 0.85, calls.count("worse")


def _real_regime(seed: int, n: int, rho: float = 0.0, dim: int = 2048, latent: int = 16, n_boot: int = 500,
                 block: int | None = None, drift: bool = False) -> tuple[str, int]:
    """One synthetic study at the real regime: ``n`` maps whose content ``z`` (``latent`` dimensions, an AR(1) series
    in map order with coefficient ``rho``: consecutive frames of a drive) is seen through a random projection in
    ``dim`` Inception-sized features; the real images ``y`` and two settings ``a``, ``b`` of one distribution on the
    same maps (``drift``: each setting's own noise an AR(1) series too). The maps are resampled in moving blocks of
    ``block`` (default: Politis-White on ``z``, 1 where the maps are independent), the draws widened by
    :func:`block_scale`. Returns the verdict on ``b - a`` and the block length."""
    rng = np.random.default_rng(seed)

    def ar1() -> np.ndarray:  # [n, latent], coefficient rho in map order, unit variance
        e = rng.normal(size=(n, latent))
        out = np.empty_like(e)
        out[0] = e[0]
        for i in range(1, n):
            out[i] = rho * out[i - 1] + np.sqrt(1 - rho ** 2) * e[i]
        return out
    z = ar1()
    proj = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    y = z @ proj + 0.5 * rng.normal(size=(n, dim))
    if drift:  # each arm's own noise drifts along the drive as well
        a, b = (0.2 * z @ proj + 0.4 * ar1() @ proj + 0.7 * rng.normal(size=(n, dim)) + 0.5 for _ in range(2))
    else:
        a, b = (0.2 * z @ proj + 0.8 * rng.normal(size=(n, dim)) + 0.5 for _ in range(2))
    blk = block if block is not None else (block_length(z[:, :3])["block"] if rho > 0 else 1)
    r = frechet_draws({"a": a, "b": b}, y, block_indices(n, n_boot, seed, blk), ref_maps=n)
    scale = block_scale(n, blk)  # as study.Comparison widens a moving-block bootstrap's draws
    return relation_of_difference(difference(widened(r["b"], scale), widened(r["a"], scale))[1]), blk


@pytest.mark.slow  # about 20 min on 2 cores
@pytest.mark.parametrize("n", [50, 101])
def test_calibration_at_inception_dimension_and_camvid_counts(n):
    """2048-d features at n = 50 and 101 (CamVid's counts), independent maps: two equal arms are "not
    distinguishable" in 93-97 % of 100 replications (500 resamples each). Measured: 95.0 % (n = 50), 97.0 % (101)."""
    calls = [_real_regime(seed, n)[0] for seed in range(100)]
    assert 0.93 <= calls.count("not distinguishable") / len(calls) <= 0.97


DRIFT_XFAIL = pytest.mark.xfail(strict=True, reason="measured 90 % (78 % unwidened): where the paired differences "
                                "themselves drift as slowly as AR(1) 0.95 (about 39 frames), Politis-White's blocks of "
                                "about 19 are too short to hold their dependence")


@pytest.mark.slow  # about 2 min on 2 cores
@pytest.mark.parametrize("drift", [False, pytest.param(True, marks=DRIFT_XFAIL)],
                         ids=["arms-independent-per-map", "arms-drifting"])
def test_calibration_of_the_moving_block_interval_on_a_drive(drift):
    """Maps that are consecutive frames (AR(1) content, coefficient 0.95; Politis-White picks blocks of 11 to 26 of
    101, as CamVid's val drive gives 24): two equal arms are "not distinguishable" in 93-97 % of 100 replications
    with the draws widened by :func:`block_scale`. Measured (2048-d, 100 replications): 97 % (90 % unwidened: a
    resample of four to nine blocks varies too little). Where each arm's own noise drifts along the drive too, so that
    neighbouring maps' paired differences are alike, 90 % (78 % unwidened): the remaining shortfall is the block
    length's, not the number of blocks' (docs/method.md says which verdicts it weakens)."""
    calls = [_real_regime(seed, 101, rho=0.95, drift=drift)[0] for seed in range(100)]
    assert 0.93 <= calls.count("not distinguishable") / len(calls) <= 0.97


def test_block_scale_restores_the_variance_of_a_mean_and_reads_t_with_k_minus_1_df():
    """The moving-block bootstrap's variance of a mean is about (1 - b/n) of the truth (independent values, n = 101,
    blocks of 24: 0.76); times n / (n - b) it is within 6 % of sigma^2 / n, averaged over 400 series (measured: 0.78
    and 1.03). The scale adds the t interval's width with k - 1 degrees of freedom, k = n / b blocks; blocks of 1 are
    left alone."""
    rng, n, b = np.random.default_rng(7), 101, 24
    idx = block_indices(n, 400, 3, b)
    raw = np.mean([rng.normal(size=n)[idx].mean(1).var() for _ in range(400)]) * n  # sigma = 1
    assert 0.70 <= raw <= 0.83, raw
    assert n / (n - b) * raw == pytest.approx(1.0, abs=0.06)
    t_over_z = stats.t.ppf(0.975, n / b - 1) / stats.norm.ppf(0.975)
    assert block_scale(n, b) == pytest.approx(np.sqrt(n / (n - b)) * t_over_z)
    assert 1.4 < block_scale(n, 20) < 1.7 and block_scale(1000, 20) < 1.05  # few blocks: wide; many: about 1
    assert block_scale(n, 1) == 1.0
    with pytest.raises(ValueError, match="block length"):
        block_scale(n, n)


def test_widened_draws_keep_their_mean_and_pair_linearly():
    rng = np.random.default_rng(0)
    a, b = Draws(1.0, rng.normal(1.2, 0.3, 500)), Draws(0.5, rng.normal(0.4, 0.2, 500))
    wa, wb = widened(a, 1.5), widened(b, 1.5)
    assert wa.value == 1.0 and wa.draws.mean() == pytest.approx(a.draws.mean())
    assert wa.draws.std() == pytest.approx(1.5 * a.draws.std())
    d, ci = difference(a, b)
    wd, wci = difference(wa, wb)
    assert wd == d and (wci[1] - wci[0]) == pytest.approx(1.5 * (ci[1] - ci[0]))
    assert widened(a, 1.0) is a


def test_a_comparison_scores_both_judges_on_the_same_resampled_maps(tmp_path):
    """study.Comparison on real toy-city images (no sampling): judge 1 (FD-toy, toy segmenter) and judge 2
    (Inception FID / KID, segmenter B) share one draw of maps; a darkened copy is worse on every distance."""
    from dataclasses import replace as dc_replace

    from scp_core import study
    from scp_core.metrics import MissingWeightsError

    s = dc_replace(study.settings("toy", smoke=True, notebook="03_prior_comparison", out_dir=str(tmp_path)), n_eval=12)
    real, labels = study.eval_set(s)
    comp = study.Comparison(s, labels, n_boot=40, judge_b=True)
    try:
        comp.add("real", real)
    except MissingWeightsError as e:
        pytest.skip(f"FID's Inception weights are not installed here: {e}")
    comp.add("dark", (real.float() * 0.5).to(torch.uint8))
    assert comp.columns == ["fd", "miou", "acc", "fid", "kid", "miou_b", "acc_b"]
    row = comp.row("real")
    assert row["fd"] == pytest.approx(0, abs=1e-6) and row["fid"] == pytest.approx(0, abs=1e-4)  # the reference
    assert row["miou_b"] > 50 and len(row["fid_ci"]) == 2
    for col in ("fd", "fid", "kid"):
        rec = comp.record("dark", "real", col)
        assert rec["verdict"] == "worse" and rec["diff_ci"][0] > 0 and rec["n_boot"] == 40, rec
    # the same draws for both settings: the difference's draws are the settings' draws subtracted
    d = comp._all_draws()["fd"]
    assert comp.diff("dark", "real")[0] == pytest.approx(d["dark"].value - d["real"].value)
