"""The schedule control's parts: block resampling in frame order, several samples per map, colour casts, the
equal-share mu, and the control itself on the toy stacks (smoke counts)."""
import numpy as np
import pytest
import torch

from scp_core.metrics.colour import colour_spread
from scp_core.metrics.resampling import (FrechetGram, block_indices, block_length, detectable, draw_indices,
                                         frechet_draws, image_weights, Draws)
from scp_core.study import schedule_control as sc


def test_block_indices_are_runs_of_consecutive_maps():
    assert (block_indices(30, 7, 3, block=1) == draw_indices(30, 7, 3)).all()
    rows = block_indices(101, 50, 0, block=5)
    assert rows.shape == (50, 101) and rows.min() >= 0 and rows.max() <= 100
    runs = rows[:, :100].reshape(50, 20, 5)
    assert (np.diff(runs, axis=2) == 1).all()  # each block: five consecutive maps
    with pytest.raises(ValueError, match="block length"):
        block_indices(10, 2, 0, block=11)


def test_block_length_grows_with_dependence():
    rng = np.random.default_rng(0)
    e = rng.standard_normal(2000)
    ar = np.zeros(2000)
    for i in range(1, 2000):
        ar[i] = 0.9 * ar[i - 1] + e[i]
    iid = block_length(rng.standard_normal((400, 2)))
    dep = block_length(ar[:400])
    assert iid["block"] <= 4 and dep["block"] >= 8, (iid, dep)
    assert dep["acf1"][0] > 0.8
    with pytest.raises(ValueError, match="at least 8"):
        block_length(np.arange(5.0))


def test_samples_per_map_weigh_as_their_map():
    # two samples of each of 6 maps (seed-major): the weighted distance equals the distance of the resampled set
    rng = np.random.default_rng(1)
    n, k, d = 6, 2, 3
    x, y = rng.normal(size=(k * n, d)), rng.normal(size=(n, d)) + 0.3
    index = np.array([[0, 0, 2, 3, 5, 5]])
    w = image_weights(index, k * n)
    assert w.tolist() == [[2, 0, 1, 1, 0, 2] * 2]
    drawn = np.concatenate([x[index[0] + r * n] for r in range(k)])
    explicit = FrechetGram(drawn, y[index[0]]).distance()  # all items once: the plain Frechet distance
    fd = frechet_draws({"a": x}, y, index, ref_maps=n)["a"].draws[0]
    assert fd == pytest.approx(explicit, rel=1e-9)
    assert FrechetGram(drawn, y[index[0]]).kid() == pytest.approx(
        frechet_draws({"a": x}, y, index, ref_maps=n, kid=True)[1]["a"].draws[0], rel=1e-9)
    with pytest.raises(ValueError, match="whole number"):
        frechet_draws({"a": x[:7]}, y, index, ref_maps=n)


def test_detectable_is_the_paired_spread():
    a = Draws(1.0, np.array([1.0, 2.0, 3.0]))
    b = Draws(0.5, np.array([0.0, 0.0, 0.0]))
    assert detectable(a, b) == pytest.approx(2.8016 * 1.0)


def test_colour_spread_sees_a_random_cast():
    rng = np.random.default_rng(0)
    real = rng.integers(80, 170, size=(40, 8, 8, 3)).astype(np.uint8)
    same = colour_spread(real, real, n_boot=200)
    assert same["colour"] == pytest.approx(1.0) and same["colour_ci"] == pytest.approx([1.0, 1.0])
    other = colour_spread(rng.integers(80, 170, size=(80, 8, 8, 3)).astype(np.uint8), real, n_boot=200)
    assert other["colour_ci"][0] <= 1 <= other["colour_ci"][1]  # two samples per map of the same distribution
    cast = np.clip(real.astype(int) + rng.integers(-60, 60, size=(40, 1, 1, 3)), 0, 255).astype(np.uint8)
    out = colour_spread(cast, real, n_boot=200)
    assert out["colour"] > 3 and out["colour_ci"][0] > 1


def test_equal_share_mu():
    # SD's schedule at mu = 0.8 starts at t = 751 and keeps 0.236 of the draw; zero SNR keeps that at mu = 0.7
    t, share = sc.prior_share("sd", 0.8)
    assert t == 751 and share == pytest.approx(0.236, abs=1e-3)
    assert sc.matched_mu("sd", 0.8, "zero-snr") == 0.7
    assert sc.prior_share("zero-snr", 1.0) == (999, 0.0)
    pairs = sc.mu_pairs(0.8, 20)
    assert [p[:2] for p in pairs] == [(0.8, 0.8), (0.8, 0.7), (0.95, 0.8)]


@pytest.mark.filterwarnings("ignore")
def test_schedule_control_on_the_toy_stacks(tmp_path):
    given = dict(smoke=True, out_dir=str(tmp_path), n_eval=8)
    settings = sc.stack_settings("toy", **given)
    assert {k: v.profile for k, v in settings.items()} == {"sd": "toy-gv", "zero-snr": "toy-gv-zero-snr"}
    out = sc.schedule_control(settings, k=2, kinds=("joint",))
    arms = out["arms"].set_index("arm")
    assert len(out["images"]["sd: normal"]) == 16 and out["block"]["block"] == 1
    assert set(arms.index) >= {"sd: normal", "sd: normal, seeds 2-3", "zero-snr: joint mu=0.8", "sd: joint mu=0.8"}
    assert (arms.loc[[a for a in arms.index if "normal" in a], "prior_share"] == 0).all()
    # the two plain-ControlNet arms of one stack are other seeds: other images
    assert not torch.equal(out["images"]["sd: normal"], out["images"]["sd: normal, seeds 2-3"])
    eff = out["effects"].set_index(["effect", "column", "mu_sd", "mu_zero_snr"])
    comp = out["comparison"]
    fd = {name: d.value for name, d in comp.draws("fd").items()}
    m_sd, m_z = out["effects"].mu_sd.iloc[0], out["effects"].mu_zero_snr.iloc[0]
    inter = eff.loc[("interaction: (joint - normal on SD) - (joint - normal on zero SNR)", "fd", m_sd, m_z)]
    expect = (fd[f"sd: joint mu={m_sd:g}"] - fd["sd: normal"]) - (fd[f"zero-snr: joint mu={m_z:g}"]
                                                                 - fd["zero-snr: normal"])
    assert inter.value == pytest.approx(expect)
    assert inter.ci[0] <= inter.ci[1] and inter.detectable_80 > 0
    table = out["table"]
    assert {"colour_spread", "brightness_spread", "fd", "miou"} <= set(table.columns)


@pytest.mark.parametrize("schedule", ["sd", "zero-snr"])
def test_intermediate_starts_lose_the_image_monotonically(schedule):
    """Fig. 3's starts on each schedule, with the exact network for Gaussian data (no trained model): a start at
    mu keeps sqrt(alpha_bar(t_start)) of x0, and DDIM from it must end nearer x0 the lower mu is, keeping the data's
    spread. A start noised to another level than the one DDIM's first step assumes breaks the order."""
    from scp_core.models import make_scheduler
    from scp_core.sampling import ddim_denoise, ddim_timesteps, noise_to_step
    from scp_core.study.schedules import GaussianOracle, _NoControl

    sched, std, n = make_scheduler("ddim", schedule), 2.0, 4000
    x0 = std * torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    corr = []
    for mu in (0.2, 0.4, 0.6, 0.8, 1.0):
        ts = ddim_timesteps(sched, 20, mu)
        xt = noise_to_step(x0, sched.alphas_cumprod[int(ts[0])], generator=torch.Generator().manual_seed(1))
        out = ddim_denoise(xt, ts, unet=GaussianOracle(sched, std), controlnet=_NoControl(), scheduler=sched,
                           control=torch.zeros(n, 3, 1, 1), prompt_embeds=torch.zeros(1, 1, 1))
        corr.append(float(torch.corrcoef(torch.stack([out.flatten(), x0.flatten()]))[0, 1]))
        assert 0.93 < float(out.std() / std) < 1.01, (mu, float(out.std() / std))
    assert all(a > b + 0.05 for a, b in zip(corr, corr[1:])), corr
    assert corr[0] > 0.95 and abs(corr[-1] - (0.18 if schedule == "sd" else 0.0)) < 0.05, corr


def test_training_seeds_are_those_both_stacks_have(tmp_path, monkeypatch):
    # seed 1 trained for both CamVid stacks, seed 2 for the SD-schedule one only
    for folder in ("camvid/seeds/seed1", "camvid-sd/seeds/seed1", "camvid-sd/seeds/seed2"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "modules.json").write_text("{}")
    monkeypatch.setattr(sc, "training_seed_folder", lambda p, t: f"{tmp_path}/{p}/seeds/seed{t}")
    seeds = sc.training_seeds("camvid")
    assert seeds["both"] == [0, 1] and seeds["partial"] == {2: ["sd"]}
    assert seeds["missing"] == {2: [("zero-snr", "scpdiff train --profile camvid --seed 2")]}
    assert sc.training_seeds("toy") == {"both": [0], "partial": {}, "missing": {}}  # no training seeds on the toy pair
    stacks = sc.stack_settings("camvid-sd", training_seed=1, smoke=True)
    assert {n: s.trained for n, s in stacks.items()} == {"sd": f"{tmp_path}/camvid-sd/seeds/seed1",
                                                         "zero-snr": f"{tmp_path}/camvid/seeds/seed1"}
    assert all(s.trained is None for s in sc.stack_settings("camvid", smoke=True).values())
    mixed = sc.stack_settings("camvid", training_seed={"sd": 2, "zero-snr": 0}, smoke=True)
    assert mixed["sd"].trained == f"{tmp_path}/camvid-sd/seeds/seed2" and mixed["zero-snr"].trained is None
    import pandas as pd
    eff = pd.DataFrame({"effect": ["joint - normal, SD stack", "joint - normal, zero-SNR stack (do they compose?)",
                                   "interaction: (joint - normal on SD) - (joint - normal on zero SNR)",
                                   "A/A, SD stack: normal on two disjoint seed sets", "A/A, zero-SNR stack"]})
    assert list(sc.effects_within(eff, ["sd"]).effect) == [eff.effect[0], eff.effect[3]]
    assert sc.effects_within(eff, ["sd", "zero-snr"]).equals(eff)


def test_brightness_spread_ratio_is_colour_spreads_brightness_column():
    from scp_core.study.experiments import spread_ratio

    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (20, 6, 8, 3), dtype=np.uint8)
    gen = np.clip(real.astype(int) + rng.integers(-60, 60, (20, 1, 1, 1)), 0, 255).astype(np.uint8)
    value, ci = spread_ratio(gen, real, n_boot=200, seed=0)
    b = lambda u8: u8.astype(np.float64).mean(axis=(1, 2, 3))  # noqa: E731
    assert value == pytest.approx(b(gen).std() / b(real).std(), rel=1e-6)
    assert ci[0] < value < ci[1] and value > 1  # a per-image brightness shift widens the spread
