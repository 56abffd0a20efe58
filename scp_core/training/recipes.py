"""Every training recipe: the toy stacks' (:data:`TOY_FULL`, :data:`TOY_SMALL`, :data:`TOY_GV_CONTROLNET`)
and the real-image stacks' (:class:`StackRecipe`, :data:`RECIPES`, :func:`recipe_for`).

The committed zoo was trained with the full recipes; the small ones run the same code path in
minutes (toy) or seconds (real images), for the training notebook, smoke runs and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data.profiles import PROFILES
from .loop import TrainConfig

# ---------------------------------------------------------------------------- toy stacks
# What the toy VAE and base UNet are trained on: both regimes, so the base model can paint the
# global factor that toy-city-gv varies; each ControlNet then sees one regime.
TOY_BASE_DATASETS = ("toy-city", "toy-city-gv")

# zoo/toy (about 75 minutes on a 2-core CPU). ``vae_anneal``: the VAE stage's second phase, the
# same loss at a tenth of the learning rate (``None`` skips it).
TOY_FULL = dict(vae=TrainConfig(steps=3000, batch_size=8, lr=1e-3, warmup=100, checkpoint_every=250),
                vae_anneal=TrainConfig(steps=600, batch_size=8, lr=1e-4, seed=1, checkpoint_every=300),
                unet=TrainConfig(steps=1200, batch_size=16, lr=3e-4, warmup=100, checkpoint_every=300),
                controlnet=TrainConfig(steps=1500, batch_size=16, lr=2e-4, warmup=50, checkpoint_every=300))
# A few minutes, for the training notebook and smoke runs.
TOY_SMALL = dict(vae=TrainConfig(steps=60, batch_size=8, lr=5e-4, log_every=5), vae_anneal=None,
                 unet=TrainConfig(steps=60, batch_size=16, lr=3e-4, log_every=5),
                 controlnet=TrainConfig(steps=60, batch_size=16, lr=2e-4, log_every=5))
# zoo/toy-gv and zoo/toy-gv-zero-snr: the toy ControlNet stage, same recipe, on toy-city-gv.
TOY_GV_CONTROLNET = TOY_FULL["controlnet"]


# ---------------------------------------------------------------------------- real-image stacks
@dataclass
class StackRecipe:
    """What :func:`scp_core.training.camvid.train_stack` trains for one profile.

    Attributes:
        profile: the study profile (its dataset, options and image size come from
            ``scp_core.study.PROFILES``).
        unet: ``UNet2DConditionModel`` keyword overrides of the toy UNet.
        control_channels: channels of ControlNet's control-map encoder (``len - 1`` stride-2
            convolutions = log2 of the autoencoder's 8x).
        unet_cfg, controlnet_cfg: the two diffusion stages.
        segmenter: keywords of :func:`scp_core.metrics.toy_segmenter.train_toy_segmenter`.
        hflip: add horizontally flipped copies of every training image.
        n_samples: validation maps in the report's sample grid.
        segmenter_from: a trained segmenter folder (repository path) to reuse instead of training one
            (the GPU recipe reuses the committed CPU-trained segmenter of the same frames).
        noise_schedule: the diffusion stages' schedule, a key of ``scp_core.models.SCHEDULES``: ``"sd"``
            (SD's scaled-linear betas, epsilon prediction) or ``"zero-snr"`` (Lin et al. 2024: zero terminal
            SNR, v-prediction, trailing DDIM steps); the pipeline samples with the same.
    """

    profile: str
    unet: dict
    control_channels: tuple = (16, 32, 64, 128)
    unet_cfg: TrainConfig = field(default_factory=TrainConfig)
    controlnet_cfg: TrainConfig = field(default_factory=TrainConfig)
    segmenter: dict = field(default_factory=dict)
    hflip: bool = True
    n_samples: int = 6
    seed: int = 0
    segmenter_from: str | None = None
    noise_schedule: str = "sd"

    def segmenter_dir(self, out):
        """Where the stack's segmenter lives: the reused one (``segmenter_from``), else ``<out>/segmenter``."""
        from ..data.base import REPO_ROOT  # noqa: PLC0415 (kept beside its one use)

        return REPO_ROOT / self.segmenter_from if self.segmenter_from else Path(out) / "segmenter"


# zoo/camvid (its training_facts.json records what each stage took): CamVid at 96 x 128 (12 x 16 x 32 TAEF2 latents),
# batch 32, a cosine learning rate and an EMA of the weights. Seconds per step with two threads at batch 32
# (bench/camvid_train_cost.py): the first stack's widths (32, 64, 128) 0.173 (base UNet) and 0.430 (ControlNet +
# unlocked decoder), at 192 x 256 0.48 and 1.97. The second CPU stack (those widths, 15,000 + 5,000 steps, zero
# terminal SNR) scored plain ControlNet KID 3.5x the real floor, its samples blurred; its first level (32 channels)
# is no wider than the 32-channel latent it reads. The third (this recipe) takes the GPU recipe's widths
# (64, 96, 160): 0.294 and 0.548 s a step (1.7x and 1.3x), 20.0 MB of UNet + ControlNet in float16 (the zoo's budget
# is 25 MB with the segmenter); 18,000 + 4,500 steps took 122 minutes of the 150-minute sitting (KID 2.4x the floor).
RECIPES = {
    "camvid": StackRecipe(
        profile="camvid",
        unet=dict(sample_size=(12, 16), in_channels=32, out_channels=32, block_out_channels=(64, 96, 160),
                  down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        unet_cfg=TrainConfig(steps=18000, batch_size=32, lr=3e-4, schedule="cosine", warmup=200, ema_decay=0.999,
                             checkpoint_every=1000, log_every=50),
        controlnet_cfg=TrainConfig(steps=4500, batch_size=32, lr=2e-4, schedule="cosine", warmup=100,
                                   ema_decay=0.999, checkpoint_every=500, log_every=50),
        segmenter=dict(steps=1000, batch_size=8, lr=3e-3, crop=(96, 128), channels=(16, 32, 64, 128)),
        # Under SD's schedule this recipe gave plain ControlNet KID 6.3x the real floor, its samples under random
        # colour casts: at t = 999 SD's training input still holds sqrt(alpha_bar) = 0.068 of the image, and on
        # 12 x 16 latents the mean of N(0, I) noise per channel (s.d. 1 / sqrt(192) = 0.072) is as large as that
        # signal's, so the model reads the start's noise as the picture's colour. Zero terminal SNR removes it
        # (on toy-city-gv it cut plain ControlNet's FD-toy from 0.63 to 0.17, notebook 09).
        noise_schedule="zero-snr",
    ),
}
# The schedule control (notebook 12): the camvid recipe under SD's schedule (scaled-linear betas, epsilon prediction,
# terminal alpha_bar > 0), everything else equal (widths, steps, batch, lr, EMA, flips, data, seed), and camvid's
# segmenter reused rather than trained again, so that one judge scores both stacks.
RECIPES["camvid-sd"] = replace(RECIPES["camvid"], profile="camvid-sd", noise_schedule="sd",
                               segmenter_from=PROFILES["camvid"].segmenter)
# One H100 / H200 in at most 8 minutes: wider networks on the same TAEF2 latents, bf16, an EMA of the
# weights, each stage capped by a wall-clock budget (its steps are an upper bound; the facts record the steps done),
# the committed segmenter reused (it scores the images; it need not change with the generator). Not yet run.
GPU_RECIPES = {
    "camvid": StackRecipe(
        profile="camvid",
        # 6.7 M + 3.8 M parameters: 21.0 MB in float16 with the ControlNet, under the zoo's 25 MB with the segmenter
        unet=dict(sample_size=(12, 16), in_channels=32, out_channels=32, block_out_channels=(64, 96, 160),
                  layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
        unet_cfg=TrainConfig(steps=20000, batch_size=64, lr=2e-4, warmup=500, checkpoint_every=2000, log_every=50,
                             mixed_precision="bf16", ema_decay=0.999, max_wall_s=270),
        controlnet_cfg=TrainConfig(steps=10000, batch_size=64, lr=1e-4, warmup=200, checkpoint_every=2000,
                                   log_every=50, mixed_precision="bf16", ema_decay=0.999, max_wall_s=150),
        segmenter_from="zoo/camvid/segmenter",
        noise_schedule="zero-snr",  # as the CPU recipe's
    ),
}
# Seconds-sized counts of any :class:`StackRecipe`, for tests and smoke runs (same code path).
STACK_SMALL = dict(segmenter=dict(steps=3, batch_size=2, crop=(64, 64)), n_samples=2)
_SMALL_COUNTS = dict(steps=4, batch_size=2, checkpoint_every=2, log_every=1, warmup=0)


def recipe_for(profile: str, small: bool = False, gpu: bool = False) -> StackRecipe:
    """The profile's recipe (``gpu``: the one-GPU recipe; ``small``: seconds-sized counts, same code path)."""
    table = GPU_RECIPES if gpu else RECIPES
    if profile not in table:
        raise ValueError(f"no {'GPU ' if gpu else ''}training recipe for profile {profile!r}; known: {sorted(table)} "
                         "(the toy profiles: scp_core.training.toy)")
    if not small:
        return table[profile]
    # the recipe's own options (schedule, EMA; on the GPU bf16 and the budget) at seconds-sized counts
    return replace(table[profile], **{k: v for k, v in STACK_SMALL.items() if not k.endswith("_cfg")},
                   unet_cfg=replace(table[profile].unet_cfg, **_SMALL_COUNTS),
                   controlnet_cfg=replace(table[profile].controlnet_cfg, **_SMALL_COUNTS))
