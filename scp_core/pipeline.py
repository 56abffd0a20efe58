"""``SCPDiffPipeline``: label maps in, images out, with any noise prior (diffusers style).

Components are saved and loaded with their own ``save_pretrained`` / ``from_pretrained``
(``vae/``, ``unet/``, ``controlnet/``, ``scheduler/``), plus ``conditioning.safetensors``
(the fixed prompt's embeddings, so no text encoder is needed at sampling time),
``scp_pipeline.json`` (label set, palette, image size, scale factor) and, optionally,
``prior.safetensors``.

Seeding: sample ``i`` of a call draws all of its randomness (prior draw, Eq. 6 noise and,
with ``eta > 0``, DDIM's noise) from its own generator seeded with ``seed + i``. A sample
therefore does not depend on the batch size or on how label maps are split across
processes.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .data import control_map
from .data.profiles import SCALES, TOY_PIPELINE_DIR
from .io import follow_umask, portable, save_safetensors
from .labels import downsample_labels, label_batch, map_ignore
from .models import (SD_SCALE_FACTOR, default_device, default_dtype, load_vae, usable_device,
                     vae_downsample_factor)
from .pipeline_folder import (CONFIG_NAME, HASHES_KEY, check_target_folder, check_weight_hashes, put_in_place,
                              read_config, read_modules, weight_hashes)
from .priors import NormalPrior, Prior, load_prior
from .sampling import DEFAULT_MU, check_finite, ddim_denoise, ddim_timesteps, resolve_mu, start_latents
from .timing import timed



def check_labels_fit(labels: torch.Tensor, image_size: tuple[int, int] | None, factor: int) -> None:
    """``ValueError`` naming the fix when label maps ``[B, H, W]`` do not fit a model sampling ``image_size``
    through a VAE that downsamples by ``factor``."""
    H, W = labels.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"label maps of {H} x {W} do not fit the model: height and width must be "
                         f"multiples of the VAE factor {factor}; resize them (nearest) to e.g. "
                         f"{H // factor * factor} x {W // factor * factor}")
    if image_size is not None and (H, W) != tuple(image_size):
        raise ValueError(f"label maps are {H} x {W} but this model samples {image_size[0]} x "
                         f"{image_size[1]}; resize them with scp_core.data.resize_labels")


@dataclass
class SCPOutput:
    """What a pipeline call returns.

    Attributes:
        images: PIL images, a float tensor ``[B, 3, H, W]`` in [0, 1], or a uint8 array
            ``[B, H, W, 3]``, by ``output_type``; ``None`` for ``output_type="latent"``.
        latents: final latents ``x_0`` (unscaled by the VAE factor), ``[B, C, h, w]``.
        start_latents: the latents DDIM started from (``x_{t_start}``).
        timesteps: the timesteps that ran.
        mu: the step fraction that ran (``scp_core.sampling.resolve_mu``'s answer to what was asked).
        t_start: the first timestep that ran (the level the start was noised to, Eq. 6).
    """

    images: object
    latents: torch.Tensor
    start_latents: torch.Tensor
    timesteps: list = field(default_factory=list)
    mu: float = 1.0
    t_start: int | None = None


class SCPDiffPipeline:
    """A fine-tuned ControlNet on a latent diffusion model, sampled from a noise prior.

    Args:
        vae, unet, controlnet: diffusers models.
        scheduler: a ``DDIMScheduler`` with SD's schedule.
        prompt_embeds, negative_prompt_embeds: ``[1, L, D]`` fixed prompt and null prompt.
        num_classes: real classes of the label set; ``ignore_index`` (e.g. 255) is mapped
            to class ``num_classes`` for the prior (a class of its own) and drawn black in
            the control map.
        palette: ``uint8 [num_classes, 3]`` colours of the control map.
        image_size: ``(H, W)`` the model samples.
        prior: optional default prior.
    """

    def __init__(self, vae, unet, controlnet, scheduler, prompt_embeds, negative_prompt_embeds,
                 num_classes: int, palette, image_size: Sequence[int], ignore_index: int | None = None,
                 prior: Prior | None = None, scale_factor: float = SD_SCALE_FACTOR, info: dict | None = None):
        self.vae, self.unet, self.controlnet, self.scheduler = vae, unet, controlnet, scheduler
        self.prompt_embeds = prompt_embeds
        self.negative_prompt_embeds = negative_prompt_embeds
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.palette = np.asarray(palette, dtype=np.uint8)
        self.image_size = tuple(int(s) for s in image_size)
        self.scale_factor = float(scale_factor)
        self.prior = prior
        self.info = dict(info or {})
        self.vae_factor = vae_downsample_factor(vae)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def _vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def prior_num_classes(self) -> int:
        """Classes the priors are built over (the ignore id, if any, is one more)."""
        return self.num_classes + (1 if self.ignore_index is not None else 0)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        H, W = self.image_size
        return (self.unet.config.in_channels, H // self.vae_factor, W // self.vae_factor)

    def to(self, device=None, dtype=None) -> "SCPDiffPipeline":
        for m in (self.vae, self.unet, self.controlnet):
            m.to(device) if dtype is None or m.dtype == dtype else m.to(device=device, dtype=dtype)
        self.prompt_embeds = self.prompt_embeds.to(device=device, dtype=dtype)
        self.negative_prompt_embeds = self.negative_prompt_embeds.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ label maps
    def prior_labels(self, labels) -> torch.Tensor:
        """Full-size label maps -> ids for the prior at latent size (ignore id -> own class)."""
        labels = label_batch(labels)
        if self.ignore_index is not None:
            labels = map_ignore(labels, self.ignore_index, to=self.num_classes)
        return downsample_labels(labels, self.latent_shape[1:])

    def control(self, labels) -> torch.Tensor:
        return control_map(label_batch(labels), self.palette, ignore_index=self.ignore_index)

    # ------------------------------------------------------------------ VAE
    @timed("encoding")
    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None,
               sample: bool = True) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> scaled latents ``x0``, contiguous (channels-last sums differently)."""
        dist = self.vae.encode(images.to(self._vae_device, self.vae.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return (z.float() * self.scale_factor).contiguous()

    @timed("decoding")
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images ``[B, 3, H, W]`` in [-1, 1]."""
        x = self.vae.decode((latents / self.scale_factor).to(self._vae_device, self.vae.dtype)).sample
        return x.float().clamp(-1, 1)

    # ------------------------------------------------------------------ sampling
    def _generators(self, n: int, seed: int | Sequence[int] | None, generator) -> list[torch.Generator]:
        if generator is not None:
            gens = list(generator) if isinstance(generator, (list, tuple)) else None
            if gens is None:  # one generator: derive a seed per sample from it, deterministically
                seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
                gens = [torch.Generator(self.device).manual_seed(s) for s in seeds]
            if len(gens) != n:
                raise ValueError(f"got {len(gens)} generators for {n} label maps")
            return gens
        if seed is None:
            raise ValueError("pass seed=... (an int, or one int per label map) or generator=...; "
                             "every random draw here is explicitly seeded")
        seeds = [int(seed) + i for i in range(n)] if np.isscalar(seed) else [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} label maps")
        return [torch.Generator(self.device).manual_seed(s) for s in seeds]

    def _prepare(self, labels, prior: Prior | None, mu: float | None, default_mu: float, num_inference_steps: int,
                 x0=None):
        labels = label_batch(labels)
        if labels.shape[0] == 0:
            raise ValueError("labels hold no label map (batch of 0); pass at least one [H, W] map")
        check_labels_fit(labels, self.image_size, self.vae_factor)
        prior = prior if prior is not None else (self.prior or NormalPrior(latent_channels=self.latent_shape[0]))
        if not isinstance(prior, NormalPrior):
            prior.check_compatible(num_classes=self.prior_num_classes, latent_shape=self.latent_shape)
        elif prior.channels != self.latent_shape[0]:
            raise ValueError(f"the normal prior has {prior.channels} channels, this model's latents have "
                             f"{self.latent_shape[0]}: use NormalPrior(latent_channels={self.latent_shape[0]})")
        mu = resolve_mu(prior, mu, default=default_mu, real_start=x0 is not None)
        timesteps = ddim_timesteps(self.scheduler, num_inference_steps, mu)
        return labels, prior, mu, timesteps

    def _images(self, latents, output_type):
        """One batch of final latents -> images of ``output_type`` (decoded batch by batch: a VAE
        decode of every image of a large call at once would not fit a GPU at 512 x 1024)."""
        if output_type == "latent":
            return None
        x = check_finite((self.decode(latents) + 1) / 2, "decoded images").cpu()
        if output_type == "pt":
            return x
        arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        if output_type == "np":
            return arr
        return [Image.fromarray(a) for a in arr]

    def _finish(self, images, latents, x_start, timesteps, mu, output_type):
        if output_type == "pt":
            images = torch.cat(images)
        elif output_type == "np":
            images = np.concatenate(images)
        elif output_type == "pil":
            images = [im for batch in images for im in batch]
        else:
            images = None
        return SCPOutput(images=images, latents=torch.cat(latents), start_latents=torch.cat(x_start),
                         timesteps=[int(t) for t in timesteps], mu=float(mu), t_start=int(timesteps[0]))

    def _models(self, compile) -> tuple:
        """UNet and ControlNet, compiled once per pipeline with ``torch.compile`` when asked."""
        if not compile:
            return self.unet, self.controlnet
        kw = dict(compile) if isinstance(compile, dict) else {}
        key = (id(self.unet), id(self.controlnet), tuple(sorted(kw.items())))
        if getattr(self, "_compiled", (None,))[0] != key:
            self._compiled = (key, torch.compile(self.unet, **kw), torch.compile(self.controlnet, **kw))
        return self._compiled[1:]

    @timed("sampling")
    @torch.no_grad()
    def __call__(self, labels, prior: Prior | None = None, mu: float | None = None, num_inference_steps: int = 20,
                 guidance_scale: float = 1.0, controlnet_conditioning_scale: float = 1.0, eta: float = 0.0,
                 seed: int | Sequence[int] | None = None, generator=None, batch_size: int = 16,
                 output_type: str = "pil", callback: Callable | None = None, progress: bool = True,
                 x0: torch.Tensor | None = None, compile: bool | dict = False,
                 x0_callback: Callable | None = None, default_mu: float = DEFAULT_MU) -> SCPOutput:
        """Sample images for full-size label maps ``[B, H, W]`` (Eq. 6, then DDIM from muT).

        Args:
            labels: integer label maps at the model's image size (dataset ids; the ignore
                id is handled).
            prior: ``NormalPrior`` / spatial / categorical / joint (default: the attached
                prior, else normal). ``NormalPrior`` with ``mu=1`` is plain ControlNet.
            mu: the fraction of the DDIM schedule to run (see ``scp_core.sampling``). ``None``:
                1 for the normal prior (plain ControlNet; any other value is refused) and ``default_mu``
                for the SCP priors (``scp_core.sampling.resolve_mu``); with ``x0``, default 1. The output
                says which ``mu`` and ``t_start`` ran.
            default_mu: the SCP priors' ``mu`` when ``mu`` is ``None`` (the paper's 0.8).
            guidance_scale: CFG weight; 1 disables the unconditional branch.
            seed / generator: sample ``i`` uses ``seed + i`` (or ``seed[i]``, or
                ``generator[i]``); one generator derives per-sample seeds from itself.
            batch_size: label maps per forward pass; results do not depend on it.
            output_type: ``"pil"``, ``"pt"`` (float [0, 1]), ``"np"`` (uint8) or ``"latent"``.
            callback: ``callback(i, t, latents)`` after each DDIM step of each batch.
            x0_callback: ``x0_callback(i, t, x0_hat)`` with each step's prediction of the clean latents.
            x0: real latents (scaled) for the Fig. 3 sampler: start from
                ``N(sqrt(alpha_bar) x0, (1 - alpha_bar) I)`` instead of a prior draw.
            compile: opt-in ``torch.compile`` of the UNet and the ControlNet (``True``, or a
                dict of ``torch.compile`` keywords such as ``{"mode": "max-autotune"}``); the
                compiled modules are kept for later calls. The first call pays the compilation
                (minutes at SD size); a new batch shape compiles again.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if output_type not in ("pil", "pt", "np", "latent"):
            raise ValueError(f"output_type must be 'pil', 'pt', 'np' or 'latent', got {output_type!r}")
        labels, prior, mu, timesteps = self._prepare(labels, prior, mu, default_mu, num_inference_steps, x0)
        B = labels.shape[0]
        if x0 is not None and tuple(x0.shape) != (B, *self.latent_shape):
            raise ValueError(f"x0 must be [B, C, h, w] = {(B, *self.latent_shape)}, got {tuple(x0.shape)}")
        gens = self._generators(B, seed, generator)
        alpha_bar = float(self.scheduler.alphas_cumprod[int(timesteps[0])])
        device = self.device
        unet, controlnet = self._models(compile)
        # the label maps go to the device once: the colour-coded control maps and the latent-size labels are
        # built there, for the whole call, rather than batch by batch on the CPU
        labels = labels.to(device)
        plabels = self.prior_labels(labels)
        # once per call, and on a shallow copy: the caller's prior object stays where it was
        prior = copy.copy(prior).to(device)
        x0 = x0.to(device, torch.float32) if x0 is not None else None
        control_all = self.control(labels)
        outs, starts, images = [], [], []
        bar = tqdm(range(0, B, batch_size), desc=f"sampling ({prior.kind}, mu={mu})",
                   disable=not progress or B <= batch_size, leave=False)
        for s in bar:
            idx = range(s, min(s + batch_size, B))
            x = torch.cat([start_latents(prior if x0 is None else x0[i:i + 1], plabels[i:i + 1], alpha_bar, gens[i])
                           for i in idx])
            starts.append(x.cpu())
            step_gen = [gens[i] for i in idx] if eta > 0 else None
            out = ddim_denoise(x, timesteps, unet=unet, controlnet=controlnet, scheduler=self.scheduler,
                               control=control_all[idx.start:idx.stop], prompt_embeds=self.prompt_embeds,
                               negative_prompt_embeds=self.negative_prompt_embeds, guidance_scale=guidance_scale,
                               controlnet_conditioning_scale=controlnet_conditioning_scale, eta=eta,
                               generator=step_gen, callback=callback, x0_callback=x0_callback)
            check_finite(out, f"latents of the {prior.kind} prior (guidance_scale={guidance_scale}, eta={eta})")
            images.append(self._images(out, output_type))
            outs.append(out.cpu())
        return self._finish(images, outs, starts, timesteps, mu, output_type)

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "palette": self.palette.tolist(), "image_size": list(self.image_size),
                "scale_factor": self.scale_factor, "info": self.info}

    def save_pretrained(self, path: str | os.PathLike, save_prior: bool = True) -> Path:
        """Write every component into the folder ``path`` (built in a temporary folder, then renamed),
        with the sha256 of every weight file in ``scp_pipeline.json``."""

        path = Path(path)
        check_target_folder(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            self.vae.save_pretrained(tmp / "vae")
            self.unet.save_pretrained(tmp / "unet")
            self.controlnet.save_pretrained(tmp / "controlnet")
            self.scheduler.save_pretrained(tmp / "scheduler")
            cond = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
            save_safetensors({k: v.detach().float().cpu().contiguous() for k, v in cond.items()},
                             tmp / "conditioning.safetensors")
            if save_prior and self.prior is not None:
                self.prior.save(tmp / "prior.safetensors")
            for cfg in tmp.glob("*/*.json"):  # diffusers records where a component was loaded from
                cfg.write_text(portable(cfg.read_text()))
            (tmp / CONFIG_NAME).write_text(json.dumps({**self.config(), HASHES_KEY: weight_hashes(tmp)}, indent=2)
                                           + "\n")
            put_in_place(follow_umask(tmp), path)  # diffusers' files are 0600, mkdtemp's folder 0700
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None, prior: str | Prior | None = None,
                        controlnet: str | os.PathLike | None = None,
                        trained: str | os.PathLike | None = None) -> "SCPDiffPipeline":
        """Load a pipeline folder written by :meth:`save_pretrained`.

        Args:
            path: the folder.
            device, dtype: default CUDA + float16 where available, else CPU + float32.
            prior: a prior (or prior file) to attach instead of ``path/prior.safetensors``.
            controlnet: another ControlNet folder to use instead of ``path/controlnet``.
            trained: a folder of trained modules (``unet/``, ``controlnet/`` and their sha256 in
                ``modules.json``, ``training.stacks.save_modules``) that replace ``path``'s own.
        """
        if trained is not None:
            trained = Path(trained)
            check_weight_hashes(trained, read_modules(trained))
            controlnet = trained / "controlnet"

        path = Path(path)
        previous = path.with_name(f".{path.name}.old")
        if not path.exists() and (previous / CONFIG_NAME).is_file():
            # save_pretrained was killed between moving the old folder aside and moving the new one
            # in: the old folder is the last complete pipeline
            warnings.warn(f"{path} is missing; loading the previous complete pipeline from {previous}")
            path = previous
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not an SCP-Diff pipeline folder (no {CONFIG_NAME}); "
                                    "create one with SCPDiffPipeline.save_pretrained or `scpdiff train`")
        device = usable_device(device)
        dtype = dtype or default_dtype(device)
        cfg = read_config(path / CONFIG_NAME)
        try:
            vae = load_vae(path / "vae", torch_dtype=dtype)
            unet = UNet2DConditionModel.from_pretrained(trained / "unet" if trained else path / "unet",
                                                        torch_dtype=dtype)
            cn = ControlNetModel.from_pretrained(Path(controlnet) if controlnet else path / "controlnet",
                                                 torch_dtype=dtype)
            cond = load_file(str(path / "conditioning.safetensors"))
            scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
            missing = {"prompt_embeds", "negative_prompt_embeds"} - set(cond)
            if missing:
                raise ValueError(f"conditioning.safetensors lacks {sorted(missing)}")
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise ValueError(f"could not load the pipeline in {path}: {e}. A weight or config file is missing, "
                             "corrupt or truncated; re-create it (`scpdiff train`) or restore it from git.") from e
        for name, module in (("vae", vae), ("unet", unet), ("controlnet", cn)):
            if not all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()):
                raise ValueError(f"the {name} weights of {path} contain NaN or Inf: the weight file is corrupt; "
                                 "re-create it (`scpdiff train`) or restore it from git")
        check_weight_hashes(path, cfg, skip=("controlnet/",) * bool(controlnet) + ("unet/",) * bool(trained)
                            + ("prior",) * (prior is not None))
        pipe = cls(vae.eval(), unet.eval(), cn.eval(), scheduler, cond["prompt_embeds"],
                   cond["negative_prompt_embeds"], num_classes=cfg["num_classes"], palette=cfg["palette"],
                   image_size=cfg["image_size"], ignore_index=cfg["ignore_index"],
                   scale_factor=cfg["scale_factor"], info=cfg.get("info"))
        pipe.to(device)  # the weights already have ``dtype`` (torch_dtype); only the embeddings need it
        pipe.prompt_embeds = pipe.prompt_embeds.to(dtype)
        pipe.negative_prompt_embeds = pipe.negative_prompt_embeds.to(dtype)
        if isinstance(prior, Prior):
            pipe.prior = prior
        elif prior is not None or (path / "prior.safetensors").is_file():
            pipe.prior = load_prior(prior or path / "prior.safetensors", num_classes=pipe.prior_num_classes,
                                    latent_shape=pipe.latent_shape)
        return pipe

    @classmethod
    def from_components(cls, components: dict, **kw) -> "SCPDiffPipeline":
        """Build from the dict returned by ``models.load_sd_components`` plus label-set fields."""
        return cls(components["vae"], components["unet"], components["controlnet"], components["scheduler"],
                   components["prompt_embeds"], components["negative_prompt_embeds"], **kw)


def load_pipeline(path: str | os.PathLike | None = None, device="cpu", dtype=torch.float32,
                  prior=None, trained: str | os.PathLike | None = None) -> SCPDiffPipeline:
    """The pipeline folder ``path`` (default: the committed toy stack).

    The default, float32 on the CPU, is what the toy stacks run at; ``device=None`` / ``dtype=None``
    take :meth:`SCPDiffPipeline.from_pretrained`'s choice (CUDA + float16 where available); ``trained``:
    a folder of trained modules replacing the folder's UNet and ControlNet (another training seed).
    """
    path = Path(path) if path is not None else TOY_PIPELINE_DIR
    try:
        return SCPDiffPipeline.from_pretrained(path, device=device, dtype=dtype, prior=prior, trained=trained)
    except FileNotFoundError as e:
        if path != TOY_PIPELINE_DIR:
            raise
        raise FileNotFoundError(f"{e}; the toy stack is trained with `scpdiff train --profile toy` (its time on "
                                "a 2-core CPU is in zoo/toy/REPORT.md), or restore zoo/toy from git") from e


def load_stack(pipeline_dir: str | os.PathLike | None, scale: str, device=None,
               trained: str | os.PathLike | None = None) -> SCPDiffPipeline:
    """A profile's stack, by the one rule the study and the sharded commands share (``data.profiles``' scale).

    ``toy``: float32, on the CPU unless ``device`` says otherwise (the toy stacks are trained and scored so);
    ``real``: :meth:`SCPDiffPipeline.from_pretrained`'s choice of dtype (float16 on CUDA), on ``device`` or
    the default device. ``pipeline_dir`` ``None`` is the committed toy stack.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "toy":
        return load_pipeline(pipeline_dir, device=device or "cpu", dtype=torch.float32, trained=trained)
    return load_pipeline(pipeline_dir, device=device or default_device(), dtype=None, trained=trained)
