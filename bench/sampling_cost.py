"""Benchmark: sampling cost of the normal prior at mu = 1 against the joint prior at mu = 0.5, 0.8, 0.9.

Same pipeline, same batch of label maps, same number of DDIM steps N (20): with mu the sampler
runs ``int(N * mu)`` of them (``scp_core.sampling``), so the expected time ratio against plain
ControlNet sampling (normal prior, mu = 1) is ``int(N * mu) / N``. Measured side by side in
one run, each configuration repeated (median), the order rotated between repeats.

Also measured: the prior draw as the pipeline does it (per label map: ``distribution_map`` +
``sample`` + ``noise_to_step``, i.e. ``sampling.start_latents``) against one UNet + ControlNet
call on the same batch (target: under 1 %), for the joint prior and the priors that keep global
factors (``scp_core.priors.global_factor``: joint-global, joint-mixture, signal-leak, built from the
same reference latents), and the VAE decode that follows sampling.

Default: the committed toy stack (``zoo/toy/pipeline``) on the CPU, a joint prior from 200 toy-city
training images, 8 toy-city validation maps. ``--stack camvid``: the committed CamVid stack (TAEF2
autoencoder, 192 x 256), priors from 200 CamVid training images, 8 validation maps (needs the data).
Both also time the sampler with the ControlNet's conditioning embedding recomputed at every step
(diffusers' ``ControlNetModel.forward``) against the sampler's once-per-batch embedding.
``--device cuda`` (implies ``--real-size``) runs the same measurement with an SD-2.1-size UNet,
ControlNet and VAE (random weights: the cost does not depend on them) at Cityscapes' 512 x 1024,
float16, CFG 4.0, and reports seconds per image beside the paper's 2.34 s per image on an A100
scaled by ``int(N mu) / N``.

Usage: ``python bench/sampling_cost.py [--quick] [--stack camvid] [--device cuda] [--batch 8] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, QUICK_OUT, command_line, md_table, median, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scp_core import study  # noqa: E402
from scp_core.priors import MIN_COUNT, NormalPrior, PriorAccumulator  # noqa: E402
from scp_core.priors.global_factor import GlobalJointAccumulator, MixtureJointAccumulator  # noqa: E402
from scp_core.priors.signal_leak import SignalLeakAccumulator  # noqa: E402
from scp_core.reference import reference_batches  # noqa: E402
from scp_core.sampling import ddim_timesteps, start_latents  # noqa: E402

MUS = [("normal", 1.0), ("joint", 0.5), ("joint", 0.8), ("joint", 0.9)]
EVERY_STEP = ("normal, control embedded at every step", 1.0)  # diffusers' ControlNet.forward as it is
PAPER_S_PER_IMAGE = 2.34  # SCP-Diff, A100, Cityscapes 512 x 1024


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clock(device, fn, *a, **kw):
    import time

    sync(device)
    t = time.perf_counter()
    r = fn(*a, **kw)
    sync(device)
    return time.perf_counter() - t, r


# ----------------------------------------------------------------------------- stacks
def reference_stack(s, device, batch: int):
    """The pipeline of settings ``s`` with the joint and global-factor priors of its reference set
    (:mod:`scp_core.reference`, the study's convention) and ``batch`` evaluation label maps."""
    pipe = study.load_pipeline(s)
    pipe.to(device)
    train = study.load_data(s, "train")
    n_ref = min(s.n_ref, len(train))
    accs = Accumulators(pipe.prior_num_classes, pipe.latent_shape)
    with torch.no_grad():
        for _, x0, lab in reference_batches(pipe, train, n_ref, seed=s.seed):
            accs.update(x0.cpu(), lab)
    _, labels = study.eval_set(s)
    info = {"image_size": list(pipe.image_size), "latent_shape": list(pipe.latent_shape),
            "prior_reference_images": n_ref, "dtype": "float32"}
    return pipe, accs.priors(min_count=MIN_COUNT), labels[:batch], info


def toy_stack(device, n_ref: int, batch: int):
    """The committed toy stack (``zoo/toy``) with priors from ``n_ref`` toy-city training images."""
    pipe, priors, labels, info = reference_stack(study.settings("toy", smoke=False, quick=False, n_ref=n_ref),
                                                device, batch)
    return pipe, priors, labels, {"stack": "toy (zoo/toy/pipeline)", **info}


def camvid_stack(device, n_ref: int, batch: int):
    """The committed CamVid stack (TAEF2, ``zoo/camvid``) with priors from ``n_ref`` CamVid training images.

    Needs the CamVid data and the TAEF2 weights (``--data-root`` / ``--weights-dir`` or the
    ``SCP_DATA_ROOT`` / ``SCP_WEIGHTS_DIR`` environment, as for ``scpdiff``).
    """
    pipe, priors, labels, info = reference_stack(study.settings("camvid", smoke=False, quick=False, n_ref=n_ref),
                                                device, batch)
    return pipe, priors, labels, {"stack": "CamVid (zoo/camvid/pipeline, TAEF2 autoencoder)", **info}


class Accumulators:
    """The joint prior's statistics and those of the priors that keep global factors, fed together."""

    def __init__(self, K, shape, centres=None):
        self.accs = {"joint": PriorAccumulator(K, shape), "joint-global": GlobalJointAccumulator(K, shape),
                     "joint-mixture": MixtureJointAccumulator(K, shape, centres=centres, n_fit=128),
                     "signal-leak": SignalLeakAccumulator(shape)}

    def update(self, latents, labels):
        for acc in self.accs.values():
            acc.update(latents, labels)
        return self

    def priors(self, min_count):
        a = self.accs
        return {"joint": a["joint"].joint(min_count=min_count), "joint-global": a["joint-global"].prior(min_count),
                "joint-mixture": a["joint-mixture"].prior(min_count), "signal-leak": a["signal-leak"].prior()}


SD21_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SD21_VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512)


@torch.no_grad()
def real_size_stack(device, batch: int, image_size=(512, 1024), classes: int = 19):
    """SD 2.1 UNet + ControlNet + VAE sizes with random weights, Cityscapes' label set shape."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from scp_core.models import make_scheduler
    from scp_core.pipeline import SCPDiffPipeline

    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD21_UNET)
    cn = ControlNetModel.from_unet(unet)
    vae = AutoencoderKL(**SD21_VAE)
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, 77, 1024, generator=g), torch.randn(1, 77, 1024, generator=g)
    palette = torch.randint(0, 256, (classes, 3), generator=g).numpy().astype(np.uint8)
    pipe = SCPDiffPipeline(vae.eval(), unet.eval(), cn.eval(), make_scheduler("ddim"), cond, uncond,
                           num_classes=classes, palette=palette, image_size=image_size, ignore_index=255)
    pipe.to(device, dtype)
    K, shape = pipe.prior_num_classes, pipe.latent_shape
    # the statistics' values do not change the cost; their shapes do
    accs = Accumulators(K, shape, centres=torch.randn(3, shape[0], generator=g)).update(
        torch.randn(4, *shape, generator=g), torch.randint(0, K, (4, *shape[1:]), generator=g))
    coarse = torch.randint(0, classes, (batch, image_size[0] // 32, image_size[1] // 32), generator=g)
    labels = coarse.repeat_interleave(32, 1).repeat_interleave(32, 2)  # blocky Cityscapes-size maps
    info = {"stack": "SD 2.1 sizes, random weights (UNet 865M-class, ControlNet from_unet, SD VAE)",
            "image_size": list(image_size), "latent_shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
            "params_unet_M": sum(p.numel() for p in unet.parameters()) / 1e6,
            "params_controlnet_M": sum(p.numel() for p in cn.parameters()) / 1e6}
    return pipe, accs.priors(min_count=1), labels, info


# ----------------------------------------------------------------------------- measurements
@torch.no_grad()
def unet_call(pipe, labels, guidance: float, t: int = 501):
    """One UNet + ControlNet evaluation on the batch (both CFG branches in one call, as the sampler does)."""
    B = labels.shape[0]
    x = torch.randn(B, *pipe.latent_shape, generator=torch.Generator().manual_seed(0)).to(pipe.device, pipe.dtype)
    control = pipe.control(labels).to(pipe.device, pipe.dtype)
    cond = pipe.prompt_embeds.expand(B, *pipe.prompt_embeds.shape[1:])
    if guidance > 1:
        x, control = torch.cat([x, x]), torch.cat([control, control])
        cond = torch.cat([pipe.negative_prompt_embeds.expand_as(cond), cond])
    tt = torch.tensor(t, device=pipe.device)

    def call():
        down, mid = pipe.controlnet(x, tt, encoder_hidden_states=cond, controlnet_cond=control,
                                    conditioning_scale=1.0, return_dict=False)
        return pipe.unet(x, tt, encoder_hidden_states=cond, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]
    return call


def prior_draw(pipe, prior, labels, alpha_bar):
    """The pipeline's draw for a batch: per label map its own generator, start_latents (Eq. 6)."""
    plabels = pipe.prior_labels(labels).to(pipe.device)
    prior = prior.to(pipe.device)
    gens = [torch.Generator(pipe.device).manual_seed(i) for i in range(len(plabels))]

    def draw():
        return torch.cat([start_latents(prior, plabels[i:i + 1], alpha_bar, gens[i]) for i in range(len(plabels))])
    return draw, plabels


@contextmanager
def patched_embedding():
    """The sampler with diffusers' per-step conditioning embedding (no once-per-batch cache)."""
    from scp_core import sampling

    keep = sampling.control_embedded_once
    sampling.control_embedded_once = lambda controlnet, control: nullcontext()
    try:
        yield
    finally:
        sampling.control_embedded_once = keep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long run (batch 2, one repeat)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda; cuda implies --real-size")
    ap.add_argument("--real-size", action="store_true",
                    help="SD-2.1-size models at 512 x 1024 instead of the toy stack")
    ap.add_argument("--stack", choices=["toy", "camvid"], default="toy",
                    help="the committed stack to time without --real-size: toy (default) or camvid (needs its data)")
    ap.add_argument("--data-root", default=None, help="--stack camvid: the CamVid root (else SCP_DATA_ROOT)")
    ap.add_argument("--weights-dir", default=None,
                    help="--stack camvid: the TAEF2 weights' folder (else SCP_WEIGHTS_DIR)")
    ap.add_argument("--batch", type=int, default=None, help="label maps per batch (default 8; quick 2)")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps N of the full schedule")
    ap.add_argument("--repeats", type=int, default=None, help="timings per configuration (default 3; quick 1)")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (default: toy 1.0, real size 4.0)")
    ap.add_argument("--n-ref", type=int, default=200, help="training images behind the priors")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None,
                    help="output folder (default reports/bench; with --quick reports/_scratch/bench)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    real = a.real_size or a.device.startswith("cuda")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here (this benchmark's GPU numbers need one)")
    batch = a.batch or (2 if a.quick else 8)
    repeats = a.repeats or (1 if a.quick else 3)
    guidance = a.guidance if a.guidance is not None else (4.0 if real else 1.0)
    N = a.steps

    if real:
        pipe, built, labels, info = real_size_stack(a.device, batch)
    elif a.stack == "camvid":
        import os

        for env, value in (("SCP_DATA_ROOT", a.data_root), ("SCP_WEIGHTS_DIR", a.weights_dir)):
            if value:
                os.environ[env] = value
        pipe, built, labels, info = camvid_stack(a.device, 50 if a.quick else a.n_ref, batch)
    else:
        pipe, built, labels, info = toy_stack(a.device, 50 if a.quick else a.n_ref, batch)
    joint = built["joint"]
    priors = {"normal": NormalPrior(latent_channels=pipe.latent_shape[0]), **built}

    def sample(kind, mu):
        if (kind, mu) == EVERY_STEP:  # the sampler without its once-per-batch control embedding
            with patched_embedding():
                return sample("normal", mu)
        return pipe(labels, prior=priors[kind], mu=mu, num_inference_steps=N, guidance_scale=guidance, seed=0,
                    batch_size=batch, output_type="latent", progress=False)

    configs = MUS + [EVERY_STEP]
    for kind, mu in MUS[:2]:  # warm-up (allocator, kernels, cuDNN autotuning)
        sample(kind, mu)
    times = {cfg: [] for cfg in configs}
    for r in range(repeats):
        order = configs[r % len(configs):] + configs[:r % len(configs)]  # rotate so drift does not favour one config
        for cfg in order:
            times[cfg].append(clock(a.device, sample, *cfg)[0])
    latents = sample("normal", 1.0).latents
    decode = [clock(a.device, pipe.decode, latents)[0] for _ in range(repeats)]

    # prior draw against one UNet + ControlNet call
    call = unet_call(pipe, labels, guidance)
    call()
    n_calls = 3 if a.quick else 10
    t_call = median([clock(a.device, call)[0] for _ in range(n_calls)])
    alpha = float(pipe.scheduler.alphas_cumprod[int(ddim_timesteps(pipe.scheduler, N, 0.8)[0])])
    draw, plabels = prior_draw(pipe, joint, labels, alpha)
    draw()
    n_draws = 20 if a.quick else 100
    t_draw = median([clock(a.device, draw)[0] for _ in range(n_draws)])
    t_other = {}
    for kind in ("joint-global", "joint-mixture", "signal-leak"):
        other, _ = prior_draw(pipe, built[kind], labels, alpha)
        other()
        t_other[kind] = median([clock(a.device, other)[0] for _ in range(n_draws)])
    t_down = median([clock(a.device, pipe.prior_labels, labels)[0] for _ in range(n_draws)])
    t_map = median([clock(a.device, joint.distribution_map, plabels)[0] for _ in range(n_draws)])

    base = median(times[("normal", 1.0)])
    rows, flat = [], []
    for kind, mu in configs:
        n = int(round(N * mu, 6))
        med = median(times[(kind, mu)])
        expected = n / N
        row = {"prior, mu": f"{kind}, {mu}", "DDIM steps run": n, "median s / batch": med,
               "s / image": med / batch, "measured ratio": med / base, "expected ratio int(N mu)/N": expected,
               "measured / expected": (med / base) / expected}
        if real:
            row["paper A100 s / image x int(N mu)/N"] = PAPER_S_PER_IMAGE * expected
            row["s / image incl. decode"] = (med + median(decode)) / batch
        rows.append(row)
        flat.append({"prior": kind, "mu": mu, "steps_run": n, "times_s": times[(kind, mu)], "median_s": med,
                     "s_per_image": med / batch, "measured_ratio": med / base, "expected_ratio": expected})
    draw_rows = [
        {"what": "one UNet + ControlNet call (batch" + (", both CFG branches" if guidance > 1 else "") + ")",
         "median s": t_call, "share of one call": 1.0},
        {"what": "prior draw: start_latents per map (distribution_map + sample + noise_to_step)",
         "median s": t_draw, "share of one call": t_draw / t_call},
        {"what": "  of which distribution_map, whole batch", "median s": t_map, "share of one call": t_map / t_call},
        *({"what": f"prior draw, {kind} (scp_core.priors.global_factor), same way", "median s": t,
           "share of one call": t / t_call}
          for kind, t in t_other.items()),
        {"what": "label downsampling for the prior (prior_labels)", "median s": t_down,
         "share of one call": t_down / t_call},
        {"what": "VAE decode of the batch (after sampling)", "median s": median(decode),
         "share of one call": median(decode) / t_call},
    ]
    verdict = "meets" if t_draw / t_call < 0.01 else "misses"
    worst = max(t_other, key=t_other.get)
    verdict_other = "meet" if t_other[worst] / t_call < 0.01 else "miss"
    where = (f"{info['stack']}, {a.device}, {info['dtype']}, images {info['image_size'][0]} x {info['image_size'][1]}, "
             f"latents {' x '.join(map(str, info['latent_shape']))}")
    all_times = ', '.join(f"{k} {m}: " + ' / '.join(f'{t:.3f}' for t in times[(k, m)]) + ' s' for k, m in configs)
    sections = [
        ("Wall time against mu", md_table(rows) + f"""

{where}; batch of {batch} label maps, N = {N} DDIM steps, CFG {guidance}, `output_type="latent"` (decode
measured separately below). Median of {repeats} timed run(s) per configuration after one warm-up run,
order rotated between repeats; all times: {all_times}.
"measured / expected" near 1 means the cost is the UNet steps alone; above 1, fixed costs (the prior draw,
control map, scheduler setup) that do not shrink with mu. The last row runs the normal prior with the
ControlNet's conditioning embedding recomputed at every step, as diffusers' `ControlNetModel.forward` does;
the sampler embeds the control map once per batch (`scp_core.sampling.control_embedded_once`, bit-identical
latents): **{median(times[EVERY_STEP]) / base:.2f}x** the time of the sampler's own mu = 1 run."""),
        ("Prior draw against one network call", md_table(draw_rows) + f"""

Median of {n_draws} draws and {n_calls} calls on the same batch of {batch}. The draw costs
**{100 * t_draw / t_call:.3f} %** of one UNet + ControlNet call ({verdict} the 1 % target) and it happens once
per sample, against int(N mu) calls. The priors that keep global factors {verdict_other} it: the slowest,
{worst}, costs **{100 * t_other[worst] / t_call:.3f} %**."""),
    ]
    if not real:
        sections.append(("GPU", """Not measured: no GPU was available to this run. \
`python bench/sampling_cost.py --device cuda`
runs the same benchmark with SD-2.1-size UNet, ControlNet and VAE at 512 x 1024 (float16, CFG 4.0) and adds
seconds per image beside the paper's 2.34 s per image on an A100, scaled by int(N mu)/N."""))
    data = {"command": command_line(), "quick": a.quick, "device": a.device, "batch": batch, "steps": N,
            "guidance": guidance, "repeats": repeats, "stack": info, "configs": flat,
            "decode_s": decode, "unet_controlnet_call_s": t_call, "prior_draw_s": t_draw,
            "distribution_map_s": t_map, "prior_labels_s": t_down, "draw_share_of_call": t_draw / t_call,
            "global_prior_draw_s": t_other,
            "global_prior_draw_share_of_call": {k: t / t_call for k, t in t_other.items()},
            "targets": {"draw_share_of_call_max": 0.01}}
    if not real:
        name = "sampling_cost" + ("_camvid" if a.stack == "camvid" else "")
    else:
        name = f"sampling_cost_{'gpu' if a.device.startswith('cuda') else 'cpu'}_real_size"
    write_results(name, "Sampling cost against mu", sections, data,
                  out=Path(a.out) if a.out else (QUICK_OUT if a.quick else OUT))


if __name__ == "__main__":
    main()
