"""Models: the toy stack (tiny diffusers components) and Stable Diffusion 2.1 loading.

Both stacks share SD's noise schedule (scaled-linear betas 0.00085..0.012, T = 1000,
epsilon prediction) so that the prior math and the mismatch study carry over unchanged.

* Toy: ``AutoencoderKL`` with 4x downsampling and 8 latent channels (4 reached only 23.6 dB
  reconstruction PSNR at the CPU budget, 8 reach 25; see ``zoo/toy/REPORT.md``), a
  ``UNet2DConditionModel`` with cross-attention only at its lower-resolution level (fast on
  a CPU), ``ControlNetModel.from_unet`` and a fixed text embedding in place of CLIP (no
  tokenizer download).
* Real: SD 2.1 base (``AutoencoderKL``, ``UNet2DConditionModel``, CLIP text encoder) and a
  ControlNet from local diffusers folders, or hub ids where a network exists; the dataset's
  fixed prompt is encoded once and kept as ``prompt_embeds``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, PartialState
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

from .taef2 import TAEF2

SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    timestep_spacing="leading",
)
# Zero terminal SNR (Lin et al., WACV 2024, "Common diffusion noise schedules and sample steps are
# flawed"): SD's betas rescaled so that alpha_bar(T) = 0, v-prediction (epsilon is undefined at
# alpha_bar = 0) and DDIM steps that start at t = T ("trailing"). Under SD's schedule the noisiest
# training input still holds sqrt(alpha_bar(999)) = 0.068 of the image, so a start from N(0, I)
# asks for an image of average brightness; here the training input at T is pure noise, like the
# start. The toy profile trains with it as an experiment (``scpdiff train --schedule zero-snr``); the CamVid
# recipes train with it (``scp_core.training.recipes.RECIPES``).
ZERO_SNR_SCHEDULER_CONFIG = dict(SD_SCHEDULER_CONFIG, rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                 timestep_spacing="trailing")
SCHEDULES = {"sd": SD_SCHEDULER_CONFIG, "zero-snr": ZERO_SNR_SCHEDULER_CONFIG}
SD_SCALE_FACTOR = 0.18215  # SD 2.1's latent scale (the toy VAE is trained to match it)
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"

TOY_TEXT_TOKENS = 8
TOY_CROSS_DIM = 32

TOY_VAE_CONFIG = dict(
    mid_block_add_attention=False,
    in_channels=3, out_channels=3, latent_channels=8,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16, sample_size=64,
    scaling_factor=SD_SCALE_FACTOR,
)
TOY_UNET_CONFIG = dict(
    sample_size=(16, 32), in_channels=TOY_VAE_CONFIG["latent_channels"],
    out_channels=TOY_VAE_CONFIG["latent_channels"], layers_per_block=1,
    block_out_channels=(64, 128), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TOY_CROSS_DIM,
    attention_head_dim=8, norm_num_groups=32,
)
# two stride-2 convolutions: the control map at image size lands at latent size (4x)
TOY_CONTROLNET_EMBEDDING = (16, 32, 64)


def default_device() -> torch.device:
    """CUDA where available, else CPU (override with ``SCP_DEVICE``)."""
    if os.environ.get("SCP_DEVICE"):
        return torch.device(os.environ["SCP_DEVICE"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def usable_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`default_device`), or a ``ValueError`` naming it
    where this machine cannot run it (CUDA without a GPU, a GPU index beyond those torch sees)."""
    try:
        d = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device ({e}); use 'cpu', 'cuda' or None") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(d)!r} was asked for, but torch {torch.__version__} sees no CUDA GPU on this "
                         "machine; pass device='cpu', or None to use a GPU only where there is one")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(d)!r} was asked for, but torch sees {torch.cuda.device_count()} GPU(s); "
                         "pass 'cuda' (the first) or an index below that")
    return d


def run_on_cpu(device: str | torch.device | None = None) -> bool:
    """Whether a run (training, priors, sampling) asked to use ``device`` goes to the CPU.

    ``None`` / ``"auto"``: ``SCP_DEVICE`` if set, else the GPU where torch sees one (under
    ``accelerate launch``, each process takes its own). ``"cpu"``: the CPU. ``"cuda"``:
    the GPU, or a ``ValueError`` where there is none.
    """
    device = device if device not in (None, "auto") else os.environ.get("SCP_DEVICE") or "auto"
    try:
        kind = "auto" if device == "auto" else torch.device(device).type
    except RuntimeError:
        kind = str(device)
    if kind not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for (--device or SCP_DEVICE) but torch sees no GPU; "
                         "use 'cpu' or 'auto'")
    return kind == "cpu" or not torch.cuda.is_available()


def fresh_accelerate_state(cpu: bool, mixed_precision: str | None = None) -> None:
    """In a single process, drop accelerate's shared state when a run asks for another device or precision
    than an earlier run of the same process (accelerate would otherwise keep, or refuse, the old one)."""
    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return
    if AcceleratorState._shared_state:
        st = AcceleratorState()
        other_precision = mixed_precision is not None and str(st.mixed_precision) != mixed_precision
        if (st.device.type == "cpu") != cpu or other_precision:
            AcceleratorState._reset_state(reset_partial_state=True)
    elif PartialState._shared_state and (PartialState().device.type == "cpu") != cpu:
        PartialState._reset_state()


def default_dtype(device: torch.device | str) -> torch.dtype:
    """Half precision on CUDA, float32 elsewhere (override with ``SCP_DTYPE=float32``)."""
    name = os.environ.get("SCP_DTYPE")
    if name:
        return getattr(torch, name)
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def make_scheduler(kind: str = "ddim", schedule: str = "sd"):
    """A noise schedule as a diffusers scheduler (``ddim`` for sampling, ``ddpm`` for training).

    ``schedule``: ``sd`` (SD's scaled-linear betas, epsilon prediction; the project's default)
    or ``zero-snr`` (:data:`ZERO_SNR_SCHEDULER_CONFIG`).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
    config = SCHEDULES[schedule]
    if kind == "ddim":
        return DDIMScheduler(**config)
    cfg = {k: v for k, v in config.items() if k not in ("set_alpha_to_one", "steps_offset")}
    return DDPMScheduler(**cfg)


def toy_vae(seed: int = 0, **overrides):
    """A tiny ``AutoencoderKL`` (4x downsampling, 8 latent channels), randomly initialised."""
    torch.manual_seed(seed)
    return AutoencoderKL(**{**TOY_VAE_CONFIG, **overrides})


def toy_unet(seed: int = 0, **overrides):
    """A tiny ``UNet2DConditionModel`` with attention only at its lower-resolution level."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**TOY_UNET_CONFIG, **overrides})


def controlnet_from_unet(unet, conditioning_embedding_out_channels=None, vae_factor: int | None = None):
    """``ControlNetModel.from_unet``: a trainable copy of the UNet encoder (zero-initialised outputs).

    Args:
        unet: the base UNet.
        conditioning_embedding_out_channels: channels of the control-map encoder; its
            number of stride-2 convolutions (``len - 1``) must equal log2 of the VAE's
            downsampling (3 for SD's 8x, 2 for the toy's 4x).
        vae_factor: the VAE's downsampling, which fixes that number when the channels are
            not given. Default: 8 for SD-sized UNets (first block >= 320 channels), 4 otherwise.
            The widths are SD's ``(16, 32, 96, 256)`` for SD-sized UNets, small ones otherwise.
    """
    if conditioning_embedding_out_channels is None:
        big = unet.config.block_out_channels[0] >= 320
        factor = int(vae_factor or (8 if big else 4))
        n = factor.bit_length() - 1
        if factor < 2 or 2 ** n != factor:
            raise ValueError(f"vae_factor must be a power of two >= 2, got {vae_factor!r}")
        widths = (16, 32, 96, 256) if big else (16, 32, 64, 64, 64)
        conditioning_embedding_out_channels = (widths + widths[-1:] * n)[:n + 1]
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_embedding_out_channels)


def toy_text_conditioning(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The toy's fixed "prompt": a seeded ``[1, 8, 32]`` embedding, and zeros as its null prompt."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, TOY_TEXT_TOKENS, TOY_CROSS_DIM, generator=g)
    return cond, torch.zeros_like(cond)


@dataclass
class ModelSource:
    """Where a real component comes from: a local diffusers folder or a hub id."""

    path: str
    subfolder: str | None = None

    def resolve(self, what: str) -> str:
        p = Path(self.path).expanduser()
        if p.is_dir():
            return str(p)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        looks_like_id = "/" in self.path and not self.path.startswith((".", "/", "~")) and self.path.count("/") == 1
        if offline or not looks_like_id:
            hint = (f"huggingface-cli download {SD21_BASE} --local-dir models/sd21-base" if what == "Stable Diffusion"
                    else "train one with `scpdiff train` or copy a diffusers ControlNet folder there")
            raise FileNotFoundError(
                f"{what} not found at '{self.path}' (no such folder"
                + (", and HF_HUB_OFFLINE=1 forbids the hub" if offline else "") + f"). "
                f"On a machine with network: {hint}; then pass that folder.")
        return self.path


def encode_prompt(text_encoder, tokenizer, prompt: str, device=None) -> torch.Tensor:
    """CLIP-encode one prompt to ``[1, 77, D]`` (done once per dataset and cached)."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(device or text_encoder.device))[0]


def load_sd_components(base: str = SD21_BASE, controlnet: str | None = None, prompt: str = "",
                       negative_prompt: str = "", device=None, dtype=None) -> dict:
    """Load SD 2.1 base (VAE, UNet, CLIP) and a ControlNet; encode the fixed prompt once.

    Args:
        base: local diffusers folder of SD 2.1 base, or its hub id where a network exists.
        controlnet: folder of a fine-tuned ``ControlNetModel``; ``None`` makes a fresh one
            from the UNet (for fine-tuning).
        prompt, negative_prompt: the dataset's fixed prompt and the CFG null prompt.

    Returns:
        dict with ``vae, unet, controlnet, scheduler, prompt_embeds, negative_prompt_embeds``.
    """
    from transformers import CLIPTextModel, CLIPTokenizer  # slow to import; needed only for SD 2.1's text encoder

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    root = ModelSource(base).resolve("Stable Diffusion")
    _check_epsilon_base(root)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype)
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype)
    tok = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", torch_dtype=dtype).to(device)
    cond = encode_prompt(te, tok, prompt, device)
    uncond = encode_prompt(te, tok, negative_prompt, device)
    del te
    if controlnet is None:
        cn = controlnet_from_unet(unet, vae_factor=2 ** (len(vae.config.block_out_channels) - 1))
    else:
        cn = ControlNetModel.from_pretrained(ModelSource(controlnet).resolve("ControlNet"), torch_dtype=dtype)
    return dict(vae=vae.to(device), unet=unet.to(device), controlnet=cn.to(device, dtype),
                scheduler=make_scheduler("ddim"), prompt_embeds=cond.to(device, dtype),
                negative_prompt_embeds=uncond.to(device, dtype))


def _check_epsilon_base(root: str) -> None:
    """Refuse a base whose scheduler is not epsilon prediction (e.g. SD 2.1 768, v-prediction):
    the project's schedule (:data:`SD_SCHEDULER_CONFIG`) and the priors assume SD 2.1 *base*."""
    cfg = Path(root) / "scheduler" / "scheduler_config.json"
    if cfg.is_file():
        pred = json.loads(cfg.read_text()).get("prediction_type", "epsilon")
        if pred != "epsilon":
            raise ValueError(f"{root} predicts {pred!r}, but SCP-Diff here follows SD 2.1 base (epsilon "
                             f"prediction); use {SD21_BASE}")


def vae_downsample_factor(vae) -> int:
    """Image side / latent side of a VAE: ``downsample_factor`` if it has one (TAEF2), else
    ``AutoencoderKL``'s ``2 ** (len(block_out_channels) - 1)``."""
    factor = getattr(vae, "downsample_factor", None)
    return int(factor) if factor else 2 ** (len(vae.config.block_out_channels) - 1)


def load_vae(folder: Path, torch_dtype=None):
    """The VAE saved in ``folder``, by the class name in its ``config.json`` (``AutoencoderKL`` or ``TAEF2``)."""
    cfg_path = Path(folder) / "config.json"
    name = json.loads(cfg_path.read_text()).get("_class_name") if cfg_path.is_file() else None
    if name == "TAEF2":
        return TAEF2.from_pretrained(folder, torch_dtype=torch_dtype)
    return AutoencoderKL.from_pretrained(folder, torch_dtype=torch_dtype)
