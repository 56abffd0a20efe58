"""Samplers and pipeline on tiny random components (saved and reloaded, HF_HUB_OFFLINE=1)."""
import os

import numpy as np
import pytest
import torch

from scp_core.models import TOY_CONTROLNET_EMBEDDING, make_scheduler, toy_text_conditioning, toy_unet, toy_vae
from scp_core.pipeline import SCPDiffPipeline
from scp_core.priors import NormalPrior, PriorAccumulator
from scp_core.sampling import ddim_timesteps

os.environ["HF_HUB_OFFLINE"] = "1"
K = 3
SIZE = (32, 64)  # tiny images: latents 8 x 16
PALETTE = np.array([[70, 130, 180], [128, 64, 128], [0, 0, 142]], dtype=np.uint8)


def _tiny_pipeline(ignore_index=None):
    from diffusers import ControlNetModel

    # SD's 4 latent channels (the toy zoo has 8): diffusers' img2img pipeline, the reference
    # below, takes a 4-channel `image` as latents
    vae = toy_vae(0, latent_channels=4)
    unet = toy_unet(0, block_out_channels=(32, 64), layers_per_block=1, sample_size=(8, 16),
                    in_channels=4, out_channels=4)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=TOY_CONTROLNET_EMBEDDING)
    # ControlNet's zero convolutions make a fresh one inert; perturb them so the control matters
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    cond, uncond = toy_text_conditioning(0)
    return SCPDiffPipeline(vae.eval(), unet.eval(), cn.eval(), make_scheduler(), cond, uncond,
                           num_classes=K, palette=PALETTE, image_size=SIZE, ignore_index=ignore_index)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """Tiny components, written with save_pretrained and read back with from_pretrained."""
    path = tmp_path_factory.mktemp("pipe") / "tiny"
    _tiny_pipeline().save_pretrained(path)
    return SCPDiffPipeline.from_pretrained(path, device="cpu")


def _labels(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(n, *SIZE, dtype=torch.long)
    lab[:, SIZE[0] // 2:] = 1
    for i in range(n):
        x = int(torch.randint(0, SIZE[1] - 16, (1,), generator=g))
        lab[i, 20:28, x:x + 16] = 2
    return lab


def _joint(pipe, n=8):
    lab = _labels(n, seed=3)
    x0 = torch.randn(n, *pipe.latent_shape, generator=torch.Generator().manual_seed(2))
    acc = PriorAccumulator(pipe.prior_num_classes, pipe.latent_shape).update(x0, pipe.prior_labels(lab))
    return acc.joint(min_count=2)


# ------------------------------------------------------------------ zero terminal SNR (issue 13)
def test_zero_snr_schedule_ends_in_pure_noise_and_starts_ddim_there():
    z, sd = make_scheduler("ddim", "zero-snr"), make_scheduler("ddim")
    assert float(z.alphas_cumprod[-1]) == 0.0 and float(sd.alphas_cumprod[-1]) ** 0.5 == pytest.approx(0.068, abs=1e-3)
    assert int(ddim_timesteps(z, 20, 1.0)[0]) == 999 and int(ddim_timesteps(sd, 20, 1.0)[0]) == 951
    from scp_core.study.schedules import leak_table

    leak = leak_table().set_index("schedule")["sqrt(alpha_bar) there"]
    assert leak["sd"] == pytest.approx(0.090, abs=1e-3) and leak["zero-snr"] == 0.0
    assert (z.config.prediction_type == "v_prediction"
            and make_scheduler("ddpm", "zero-snr").config.rescale_betas_zero_snr)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler("ddim", "cosine")


def test_with_the_exact_network_zero_snr_keeps_more_of_a_wide_spread_than_sds_schedule():
    """The mechanism behind plain ControlNet's dim brightness spread on toy-city-gv.

    A per-image global factor is, for the spatial mean of the latent, a coordinate whose data
    std is large next to the noise that averaging leaves. SD's schedule trains that coordinate
    with sqrt(alpha_bar) = 0.09 of the image still present at t = 951, but the sampler starts it
    from N(0, I) with none: even the exact network then returns a narrower spread. Under zero
    terminal SNR the training input at T is pure noise, like the start (measured: 0.79 against
    0.89 of the data's std at std 8; DDIM's 20 steps alone cost some 6-11 %).
    """
    from scp_core.study.schedules import oracle_spread

    sd, zero = oracle_spread("sd", 8.0), oracle_spread("zero-snr", 8.0)
    assert zero > sd + 0.05, (sd, zero)
    assert zero > 0.85


# ------------------------------------------------------------------ which steps run
@pytest.mark.parametrize("steps,mu,n,t0", [(20, 1.0, 20, 951), (20, 0.9, 18, 851), (20, 0.8, 16, 751),
                                           (20, 0.5, 10, 451), (10, 0.8, 8, 701), (50, 0.8, 40, 781)])
def test_ddim_timesteps_table(steps, mu, n, t0):
    ts = ddim_timesteps(make_scheduler(), steps, mu)
    assert len(ts) == n and int(ts[0]) == t0 and int(ts[-1]) == 1


@pytest.mark.parametrize("steps,mu", [(20, 0.8), (20, 0.55), (100, 0.29), (50, 0.7), (7, 0.3), (30, 0.1),
                                      (20, 1.0), (1000, 0.999)])
def test_step_count_is_diffusers_img2img_rule(steps, mu):
    """The same (N, mu) runs the same timesteps as diffusers' img2img ``strength`` (``int``, not ``round``)."""
    from types import SimpleNamespace

    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    ours = ddim_timesteps(make_scheduler(), steps, mu)
    sched = make_scheduler()
    sched.set_timesteps(steps)
    theirs, n = StableDiffusionControlNetImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=sched), steps, mu,
                                                                       "cpu")
    assert len(ours) == n and torch.equal(ours, theirs)


def test_mu_defaults_normal_prior_runs_at_one_and_refuses_less(pipe):
    """``pipe(labels, seed=0)`` is plain ControlNet; an SCP prior without mu runs at 0.8."""
    lab = _labels(1)
    plain = pipe(lab, num_inference_steps=4, seed=0, output_type="latent")
    assert plain.timesteps == [751, 501, 251, 1]
    assert torch.equal(plain.start_latents,
                       torch.randn(1, *pipe.latent_shape, generator=torch.Generator().manual_seed(0)))
    joint = pipe(lab, prior=_joint(pipe), num_inference_steps=20, seed=0, output_type="latent")
    assert len(joint.timesteps) == 16 and joint.timesteps[0] == 751
    with pytest.raises(ValueError, match="normal prior runs at mu = 1"):
        pipe(lab, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=0.8, num_inference_steps=4, seed=0)


@pytest.mark.parametrize("steps,mu,cfg", [(4, 1.0, 1.0), (10, 0.8, 1.0), (10, 0.5, 3.0), (20, 0.9, 1.0)])
def test_unet_and_controlnet_call_counts(pipe, steps, mu, cfg):
    calls = {"unet": 0, "controlnet": 0}
    hooks = [pipe.unet.register_forward_hook(lambda *a: calls.__setitem__("unet", calls["unet"] + 1)),
             pipe.controlnet.register_forward_hook(lambda *a: calls.__setitem__("controlnet", calls["controlnet"] + 1))]
    try:
        out = pipe(_labels(2), prior=_joint(pipe), mu=mu, num_inference_steps=steps, guidance_scale=cfg,
                   seed=0, output_type="latent")
    finally:
        for h in hooks:
            h.remove()
    expected = min(int(steps * mu), steps)
    # one call per step; with CFG both branches go through the same batched call
    assert calls == {"unet": expected, "controlnet": expected}
    assert len(out.timesteps) == expected


# ------------------------------------------------------------------ determinism and batching
def test_determinism_for_a_seed(pipe):
    prior = _joint(pipe)
    a = pipe(_labels(2), prior=prior, mu=0.8, num_inference_steps=5, seed=7, output_type="pt")
    b = pipe(_labels(2), prior=prior, mu=0.8, num_inference_steps=5, seed=7, output_type="pt")
    c = pipe(_labels(2), prior=prior, mu=0.8, num_inference_steps=5, seed=8, output_type="pt")
    assert torch.equal(a.images, b.images) and torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.latents, c.latents)
    assert a.images.shape == (2, 3, *SIZE) and 0 <= a.images.min() and a.images.max() <= 1


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_batch_of_one_equals_the_same_sample_inside_a_batch(pipe, eta):
    prior = _joint(pipe)
    lab = _labels(4)
    full = pipe(lab, prior=prior, mu=0.8, num_inference_steps=5, eta=eta, seed=100, batch_size=4,
                output_type="latent")
    one = pipe(lab[2:3], prior=prior, mu=0.8, num_inference_steps=5, eta=eta, seed=[102], output_type="latent")
    split = pipe(lab, prior=prior, mu=0.8, num_inference_steps=5, eta=eta, seed=100, batch_size=3,
                 output_type="latent")
    assert torch.equal(full.start_latents, split.start_latents)  # the random draws: bitwise (README, Determinism)
    assert torch.allclose(full.latents[2:3], one.latents, atol=1e-5)  # the networks: float32 rounding only
    assert torch.allclose(full.latents, split.latents, atol=1e-5)


def test_start_latents_follow_eq6(pipe):
    """The start is sqrt(a) x + sqrt(1 - a) eps with x the prior draw, both from the sample's generator."""
    prior = _joint(pipe)
    lab = _labels(1)
    out = pipe(lab, prior=prior, mu=0.5, num_inference_steps=10, seed=5, output_type="latent")
    g = torch.Generator().manual_seed(5)
    x = prior.sample(pipe.prior_labels(lab), generator=g)
    eps = torch.randn(x.shape, generator=g)
    assert out.timesteps[0] == 401
    a = float(pipe.scheduler.alphas_cumprod[401])
    assert torch.allclose(out.start_latents, a ** 0.5 * x + (1 - a) ** 0.5 * eps, atol=1e-6)


def test_mismatch_sampler_starts_from_noised_x0(pipe):
    lab = _labels(2)
    x0 = torch.randn(2, *pipe.latent_shape, generator=torch.Generator().manual_seed(9))
    out = pipe(lab, x0=x0, mu=0.8, num_inference_steps=10, seed=3, output_type="latent")
    a = float(pipe.scheduler.alphas_cumprod[701])
    for i in range(2):
        eps = torch.randn(1, *pipe.latent_shape, generator=torch.Generator().manual_seed(3 + i))
        assert torch.allclose(out.start_latents[i:i + 1], a ** 0.5 * x0[i:i + 1] + (1 - a) ** 0.5 * eps, atol=1e-6)


def test_normal_prior_at_mu_one_is_plain_controlnet_sampling(pipe):
    lab = _labels(1)
    out = pipe(lab, prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=4, seed=11,
               output_type="latent")
    z = torch.randn(1, *pipe.latent_shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(out.start_latents, z)  # x_T ~ N(0, I), as ControlNet starts
    assert out.timesteps == [751, 501, 251, 1]


# ------------------------------------------------------------------ equivalence with diffusers
@pytest.mark.parametrize("mu,cfg", [(0.8, 1.0), (0.6, 2.5)])
def test_matches_diffusers_controlnet_img2img(pipe, mu, cfg):
    """Same start latents: our DDIM loop equals diffusers' ControlNet img2img path.

    diffusers takes a 4-channel ``image`` as latents, noises it with ``add_noise`` using
    one draw from the generator, and runs the last ``int(N * strength)`` steps: exactly
    ``x0=`` in our pipeline with the same seed (our Fig. 3 sampler).
    """
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    ref = StableDiffusionControlNetImg2ImgPipeline(
        vae=pipe.vae, text_encoder=None, tokenizer=None, unet=pipe.unet, controlnet=pipe.controlnet,
        scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    lab = _labels(1)
    x0 = torch.randn(1, *pipe.latent_shape, generator=torch.Generator().manual_seed(4))
    theirs = ref(prompt_embeds=pipe.prompt_embeds, negative_prompt_embeds=pipe.negative_prompt_embeds,
                 image=x0, control_image=pipe.control(lab), strength=mu, num_inference_steps=10,
                 guidance_scale=cfg, controlnet_conditioning_scale=1.0, height=SIZE[0], width=SIZE[1],
                 generator=torch.Generator().manual_seed(21), output_type="latent").images
    ours = pipe(lab, x0=x0, mu=mu, num_inference_steps=10, guidance_scale=cfg, seed=21,
                output_type="latent").latents
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


# ------------------------------------------------------------------ files and bad input
def test_save_load_round_trip_with_prior(pipe, tmp_path):
    prior = _joint(pipe)
    pipe.prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p")
    finally:
        pipe.prior = None
    again = SCPDiffPipeline.from_pretrained(tmp_path / "p", device="cpu")
    assert again.prior is not None and again.prior.kind == "joint"
    a = pipe(_labels(1), prior=prior, num_inference_steps=3, seed=0, output_type="latent").latents
    b = again(_labels(1), num_inference_steps=3, seed=0, output_type="latent").latents
    assert torch.equal(a, b)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"


def test_bad_inputs(pipe, tmp_path):
    lab = _labels(1)
    with pytest.raises(ValueError, match=r"mu must lie in \(0, 1\]"):
        pipe(lab, mu=0.0, seed=0)
    with pytest.raises(ValueError, match=r"mu must lie in \(0, 1\]"):
        pipe(lab, mu=1.5, seed=0)
    with pytest.raises(ValueError, match="multiples of the VAE factor"):
        pipe(torch.zeros(1, 30, 62, dtype=torch.long), seed=0)
    with pytest.raises(ValueError, match="this model samples 32 x 64"):
        pipe(torch.zeros(1, 64, 128, dtype=torch.long), seed=0)
    other = PriorAccumulator(K + 2, pipe.latent_shape).update(
        torch.randn(2, *pipe.latent_shape), torch.zeros(2, *pipe.latent_shape[1:], dtype=torch.long)).joint()
    with pytest.raises(ValueError, match="num_classes: prior has 5, requested 3"):
        pipe(lab, prior=other, seed=0)
    small = PriorAccumulator(K, (4, 4, 8)).update(torch.randn(2, 4, 4, 8),
                                                  torch.zeros(2, 4, 8, dtype=torch.long)).spatial()
    with pytest.raises(ValueError, match="latent_shape"):
        pipe(lab, prior=small, seed=0)
    with pytest.raises(ValueError, match="seed"):
        pipe(lab)
    with pytest.raises(FileNotFoundError, match="not an SCP-Diff pipeline folder"):
        SCPDiffPipeline.from_pretrained(tmp_path)


def test_ignore_index_is_a_class_of_its_own():
    pipe = _tiny_pipeline(ignore_index=255)
    assert pipe.prior_num_classes == K + 1
    lab = _labels(1)
    lab[:, :4] = 255
    assert pipe.prior_labels(lab).max() == K
    assert torch.all(pipe.control(lab)[:, :, :4] == 0)  # ignore drawn black


def test_missing_sd_folder_offline_says_what_to_download(monkeypatch):
    from scp_core.models import load_sd_components

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="huggingface-cli download stabilityai/stable-diffusion-2-1-base"):
        load_sd_components("stabilityai/stable-diffusion-2-1-base")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_sd_components("/nonexistent/sd21")


def test_a_save_killed_between_its_renames_still_loads_the_previous_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    (tmp_path / "p").rename(tmp_path / ".p.old")  # the state after the first rename of a re-save
    with pytest.warns(UserWarning, match="previous complete pipeline"):
        again = SCPDiffPipeline.from_pretrained(tmp_path / "p", device="cpu")
    assert again.latent_shape == pipe.latent_shape
    pipe.save_pretrained(tmp_path / "p")  # the next save completes normally
    assert (tmp_path / "p" / "scp_pipeline.json").is_file()
