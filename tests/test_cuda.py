"""On a GPU: the pipeline, the priors and one fine-tuning step on CUDA (skipped where torch sees no GPU).

Device-dependent by design. Each test says what it compares: CUDA results against the same
computation on the CPU (float32, tolerance for different kernels), or a CPU-loaded pipeline
trained where accelerate puts it (the bug this file was written for: the frozen VAE stayed on
the CPU while the ControlNet trained on CUDA).
"""
import numpy as np
import pytest
import torch

from scp_core.priors import NormalPrior, PriorAccumulator
from scp_core.sampling import ddim_denoise, ddim_timesteps
from scp_core.training.finetune import finetune_controlnet
from scp_core.training.loop import TrainConfig
from test_sampling import _joint, _labels, _tiny_pipeline
from test_train import TinySet, tiny_pipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")


def test_denoising_on_cuda_matches_the_cpu():
    """The same start latents through the same DDIM loop: CUDA float32 equals the CPU to kernel tolerance."""
    cpu = _tiny_pipeline()
    gpu = _tiny_pipeline().to("cuda")
    lab = _labels(2)
    x = torch.randn(2, *cpu.latent_shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, p in (("cpu", cpu), ("cuda", gpu)):
        ts = ddim_timesteps(p.scheduler, 10, 0.8)
        out[name] = ddim_denoise(x.to(p.device), ts, unet=p.unet, controlnet=p.controlnet, scheduler=p.scheduler,
                                 control=p.control(lab), prompt_embeds=p.prompt_embeds,
                                 negative_prompt_embeds=p.negative_prompt_embeds, guidance_scale=3.0).cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pipeline_samples_on_cuda_and_leaves_the_callers_prior_where_it_was(dtype, tmp_path):
    from scp_core.pipeline import SCPDiffPipeline

    _tiny_pipeline().save_pretrained(tmp_path / "p")
    pipe = SCPDiffPipeline.from_pretrained(tmp_path / "p", device="cuda", dtype=dtype)
    assert pipe.device.type == "cuda" and pipe.dtype == dtype and pipe.prompt_embeds.device.type == "cuda"
    prior = _joint(_tiny_pipeline())  # built on the CPU
    out = pipe(_labels(3), prior=prior, mu=0.8, num_inference_steps=5, guidance_scale=2.0, seed=0, batch_size=2,
               output_type="pt")
    assert out.images.shape == (3, 3, 32, 64) and torch.isfinite(out.images).all()
    assert out.latents.device.type == "cpu" and torch.isfinite(out.latents).all()
    assert prior.mean.device.type == "cpu", "the caller's prior object is not moved"
    # per-sample seeding holds on CUDA too: a sample does not depend on its batch
    one = pipe(_labels(3)[1:2], prior=prior, mu=0.8, num_inference_steps=5, guidance_scale=2.0, seed=[1],
               output_type="latent")
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(one.latents, out.latents[1:2], atol=tol, rtol=tol)
    plain = pipe(_labels(1), prior=NormalPrior(latent_channels=pipe.latent_shape[0]), mu=1.0, num_inference_steps=4,
                 seed=0, output_type="np")
    assert plain.images.dtype == np.uint8


def test_priors_from_cuda_latents_equal_the_cpu_statistics():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, 8, 16, generator=g)
    lab = torch.randint(0, 3, (6, 8, 16), generator=g)
    cpu = PriorAccumulator(3, (4, 8, 16)).update(x0, lab)
    gpu = PriorAccumulator(3, (4, 8, 16)).update(x0.cuda(), lab.cuda())
    for k in ("spatial", "categorical"):
        a, b = getattr(cpu, k)(), getattr(gpu, k)()
        torch.testing.assert_close(b.mean.cpu(), a.mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(b.std.cpu(), a.std, atol=1e-6, rtol=1e-6)
    j = gpu.joint(min_count=2).to("cuda")
    draw = j.sample(lab[:2].cuda(), generator=torch.Generator("cuda").manual_seed(0))
    assert draw.device.type == "cuda" and draw.shape == (2, 4, 8, 16) and torch.isfinite(draw).all()


@pytest.mark.parametrize("mixed,checkpointing", [("no", False), ("fp16", False), ("bf16", True)])
def test_one_finetuning_step_on_cuda_with_the_pipeline_loaded_on_the_cpu(tmp_path, mixed, checkpointing):
    """The pipeline sits on the CPU; accelerate trains on CUDA: every part moves, one step runs."""
    if mixed == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    pipe = tiny_pipeline()
    assert pipe.device.type == "cpu"
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=1, batch_size=4, lr=1e-4, mixed_precision=mixed,
                                                          gradient_checkpointing=checkpointing), tmp_path)
    assert r["accelerator"].device.type == "cuda" and np.isfinite(r["losses"]).all()
    for name, t in [("vae", next(pipe.vae.parameters())), ("unet", next(pipe.unet.parameters())),
                    ("controlnet", next(pipe.controlnet.parameters())), ("prompt", pipe.prompt_embeds)]:
        assert t.device.type == "cuda", name
    # and it samples there afterwards
    out = pipe(_labels(1)[:, :16, :32], mu=1.0, num_inference_steps=2, seed=0, output_type="latent")
    assert torch.isfinite(out.latents).all()


def test_half_precision_pipeline_from_pretrained_trains_on_cuda(tmp_path):
    """``from_pretrained`` gives float16 on CUDA; fine-tuning trains float32 weights under fp16 autocast."""
    from scp_core.pipeline import SCPDiffPipeline

    tiny_pipeline().save_pretrained(tmp_path / "p")
    pipe = SCPDiffPipeline.from_pretrained(tmp_path / "p")  # default device and dtype: cuda, float16
    assert pipe.dtype == torch.float16
    r = finetune_controlnet(pipe, TinySet(4), TrainConfig(steps=2, batch_size=4, lr=1e-4, mixed_precision="fp16"),
                            tmp_path / "run", save_to=tmp_path / "out")
    assert np.isfinite(r["losses"]).all() and pipe.dtype == torch.float16
