"""The paired, two-sided resampling (scp_core.metrics.resampling): exact against the direct formulas on
resampled sets, and calibrated on synthetic features whose truth is known."""
import numpy as np
import pytest
import torch

from scp_core.metrics import SegmentationMeter
from scp_core.metrics.frechet import feature_statistics, frechet_distance
from scp_core.metrics.kid import kid_from_features
from scp_core.metrics.resampling import (Draws, FrechetGram, block_indices, block_length, difference, draw_indices,
                                         frechet_batched, frechet_draws, interval, multiplicities, reference_weights,
                                         segmentation_draws)
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
                 block: int | None = None) -> tuple[str, int]:
    """One synthetic study at the real regime: ``n`` maps whose content ``z`` (``latent`` dimensions, an AR(1) series
    in map order with coefficient ``rho``: consecutive frames of a drive) is seen through a random projection in
    ``dim`` Inception-sized features; the real images ``y`` and two settings ``a``, ``b`` of one distribution on the
    same maps. The maps are resampled in moving blocks of ``block`` (default: Politis-White on ``z``, 1 where the maps
    are independent). Returns the verdict on ``b - a`` and the block length."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, latent))
    z = np.empty_like(e)
    z[0] = e[0]
    for i in range(1, n):
        z[i] = rho * z[i - 1] + np.sqrt(1 - rho ** 2) * e[i]
    proj = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    y = z @ proj + 0.5 * rng.normal(size=(n, dim))
    a, b = (0.2 * z @ proj + 0.8 * rng.normal(size=(n, dim)) + 0.5 for _ in range(2))
    blk = block if block is not None else (block_length(z[:, :3])["block"] if rho > 0 else 1)
    r = frechet_draws({"a": a, "b": b}, y, block_indices(n, n_boot, seed, blk), ref_maps=n)
    return relation_of_difference(difference(r["b"], r["a"])[1]), blk


@pytest.mark.slow  # about 20 min on 2 cores
@pytest.mark.parametrize("n", [50, 101])
def test_calibration_at_inception_dimension_and_camvid_counts(n):
    """2048-d features at n = 50 and 101 (CamVid's counts), independent maps: two equal arms are "not
    distinguishable" in 93-97 % of 100 replications (500 resamples each). Measured: 95.0 % (n = 50), 97.0 % (101)."""
    calls = [_real_regime(seed, n)[0] for seed in range(100)]
    assert 0.93 <= calls.count("not distinguishable") / len(calls) <= 0.97


@pytest.mark.slow  # about 20 min on 2 cores
@pytest.mark.xfail(strict=True, reason="measured 90 % (blocks of 19 of 101 maps, AR(1) 0.95): with five blocks a "
                                       "resample the moving-block interval is too narrow; the interval needs a "
                                       "small-number-of-blocks correction")
def test_calibration_of_the_moving_block_interval_on_a_drive():
    """Maps that are consecutive frames (AR(1) content, coefficient 0.95; Politis-White picks blocks of about 19 of
    101, as CamVid's val drive gives 24): two equal arms should be "not distinguishable" in 93-97 % of replications.
    Measured 90 % (and 98 % with the maps resampled one by one, whose paired differences here are independent)."""
    calls = [_real_regime(seed, 101, rho=0.95)[0] for seed in range(100)]
    assert 0.93 <= calls.count("not distinguishable") / len(calls) <= 0.97


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
