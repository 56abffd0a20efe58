"""TAEF2: the tiny autoencoder for FLUX.2 latents (TAESD family), as a diffusers-style VAE.

Architecture (TAESD, Bohan Ollin Boer Bohan, ``madebyollin/taesd``; "flux_2" variant):
plain 3x3 convolutions with ReLU; residual ``Block``s of three 3x3 convolutions with a 1x1
skip (identity here, 64 -> 64) and a ReLU after the sum; stride-2 convolutions without bias
to go down (8x in total), nearest upsampling followed by a bias-free 3x3 convolution to go
up; 32 latent channels. In this variant the blocks at the lowest resolution (the encoder's
last three, the decoder's first three) first add a residual branch
``1x1 conv -> GroupNorm(4, 4C) -> ReLU -> 1x1 conv`` to their input, and the decoder starts
with a soft clamp ``tanh(x / 3) * 3``. Images enter the encoder in [0, 1] and leave the
decoder in [0, 1]; this module speaks [-1, 1] like diffusers' VAEs.

The layer order is read from the key names of the released state dicts (``0.weight``,
``1.conv.0.weight``, ``11.pool.0.weight``, ...) by :func:`layer_spec`: an index whose keys
are ``conv.*`` is a Block (``pool.*`` keys: with the GroupNorm branch), one with a single
3x3 ``weight`` is a convolution (no bias: stride 2 in the encoder, after an upsampling in
the decoder), and an index without keys is a parameter-free layer: the decoder's soft clamp
(index 0), its ReLU after the first convolution, and the nearest upsamplings.

Latents are raw (not unit variance); the pipeline rescales them with a factor fitted from
data (``scp_core.training.losses.fit_scale_factor``). Weights: ``taef2_encoder.safetensors`` and
``taef2_decoder.safetensors`` in the weights folder (:func:`scp_core.weights.weights_dir`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from safetensors import SafetensorError, safe_open

from .weights import weight_file, weights_dir


__all__ = ["TAEF2", "layer_spec", "ENCODER_FILE", "DECODER_FILE"]

ENCODER_FILE = "taef2_encoder.safetensors"
DECODER_FILE = "taef2_decoder.safetensors"


class Clamp(nn.Module):
    """The decoder's soft clamp ``tanh(x / 3) * 3``."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """TAESD's residual block: ``relu(conv(x) + skip(x))``, optionally after ``x + pool(x)``."""

    def __init__(self, n_in: int, n_out: int, groupnorm_branch: bool = False):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(n_out, n_out, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(n_out, n_out, 3, padding=1))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        if groupnorm_branch:
            n_gn = 4 * n_in
            self.pool = nn.Sequential(nn.Conv2d(n_in, n_gn, 1, bias=False), nn.GroupNorm(4, n_gn), nn.ReLU(),
                                      nn.Conv2d(n_gn, n_in, 1, bias=False))
        else:
            self.pool = None

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + self.skip(x))


def layer_spec(shapes: dict[str, tuple], part: str) -> list[list]:
    """The layer list of one half from its state-dict key names and shapes.

    Args:
        shapes: ``{key: shape}`` of ``taef2_encoder`` or ``taef2_decoder``.
        part: ``"encoder"`` or ``"decoder"``.

    Returns:
        ``[[kind, n_in, n_out], ...]`` with kind one of ``conv``, ``down`` (stride-2 conv),
        ``upconv`` (bias-free conv after an upsampling), ``block``, ``block_gn``, ``clamp``,
        ``relu``, ``up``. Raises ``ValueError`` if the keys do not describe a TAESD half.
    """
    by_index: dict[int, dict[str, tuple]] = {}
    for k, s in shapes.items():
        m = re.fullmatch(r"(\d+)\.(.+)", k)
        if not m:
            raise ValueError(f"unexpected key {k!r}: TAESD state dicts have keys '<index>.<name>'")
        by_index.setdefault(int(m.group(1)), {})[m.group(2)] = tuple(s)
    if not by_index:
        raise ValueError("empty state dict")
    spec: list[list] = []
    for i in range(max(by_index) + 1):
        keys = by_index.get(i)
        if keys is None:  # parameter-free layer
            if part == "decoder" and i == 0:
                spec.append(["clamp", None, None])
            elif part == "decoder" and spec and spec[-1][0] == "conv" and len(spec) == 2:
                spec.append(["relu", None, None])
            elif part == "decoder" and (by_index.get(i + 1, {}).keys() == {"weight"}):
                spec.append(["up", None, None])
            else:
                raise ValueError(f"{part}: no weights at index {i}, and no parameter-free TAESD layer fits there")
            continue
        if "conv.0.weight" in keys:
            n_out, n_in = keys["conv.0.weight"][:2]
            spec.append(["block_gn" if "pool.0.weight" in keys else "block", n_in, n_out])
        elif set(keys) <= {"weight", "bias"} and "weight" in keys and len(keys["weight"]) == 4:
            n_out, n_in = keys["weight"][:2]
            if "bias" in keys:
                spec.append(["conv", n_in, n_out])
            else:
                spec.append(["down" if part == "encoder" else "upconv", n_in, n_out])
        else:
            raise ValueError(f"{part}: keys {sorted(keys)} at index {i} match no TAESD layer")
    return spec


def _build(spec: list[list]) -> nn.Sequential:
    layers = []
    for kind, n_in, n_out in spec:
        if kind == "conv":
            layers.append(nn.Conv2d(n_in, n_out, 3, padding=1))
        elif kind == "down":
            layers.append(nn.Conv2d(n_in, n_out, 3, stride=2, padding=1, bias=False))
        elif kind == "upconv":
            layers.append(nn.Conv2d(n_in, n_out, 3, padding=1, bias=False))
        elif kind in ("block", "block_gn"):
            layers.append(Block(n_in, n_out, groupnorm_branch=kind == "block_gn"))
        elif kind == "clamp":
            layers.append(Clamp())
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "up":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return nn.Sequential(*layers)


@dataclass
class DeterministicLatent:
    """The encoder's output seen as a posterior with zero variance (diffusers' ``latent_dist`` API)."""

    mean: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean)

    def sample(self, generator=None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return torch.zeros(self.mean.shape[0], device=self.mean.device)


@dataclass
class EncoderOutput:
    latent_dist: DeterministicLatent

    @property
    def latents(self) -> torch.Tensor:
        return self.latent_dist.mean


@dataclass
class DecoderOutput:
    sample: torch.Tensor


class TAEF2(ModelMixin, ConfigMixin):
    """TAEF2 (8x, 32 latent channels) with diffusers' VAE interface.

    ``encode(x)`` takes images in [-1, 1] and returns an object with ``latent_dist``
    (deterministic: ``sample() == mean``); ``decode(z).sample`` is in [-1, 1]. Saved and
    loaded with ``save_pretrained`` / ``from_pretrained`` (the layer lists are in the config);
    :meth:`from_weights` builds it from the two released safetensors files.

    Args:
        encoder_spec, decoder_spec: layer lists from :func:`layer_spec`.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, encoder_spec: list, decoder_spec: list):
        super().__init__()
        self.encoder = _build(encoder_spec)
        self.decoder = _build(decoder_spec)
        self.latent_channels = int(encoder_spec[-1][2])
        self.downsample_factor = 2 ** sum(1 for k, *_ in encoder_spec if k == "down")

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Images ``[B, 3, H, W]`` in [-1, 1] (H, W multiples of 8) -> raw latents ``[B, 32, H/8, W/8]``."""
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"TAEF2 needs image sides divisible by {f}, got {tuple(x.shape[-2:])}")
        z = self.encoder(x.add(1).div(2))
        out = EncoderOutput(DeterministicLatent(z))
        return out if return_dict else (out.latent_dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Raw latents -> images in [-1, 1] (the decoder's [0, 1] output, clamped and mapped)."""
        x = self.decoder(z).clamp(0, 1).mul(2).sub(1)
        return DecoderOutput(x) if return_dict else (x,)

    def forward(self, x: torch.Tensor):
        return self.decode(self.encode(x).latent_dist.mean)

    def save_pretrained(self, save_directory, weights: bool = False, **kwargs):
        """Write ``config.json`` only (the weights stay in the weights folder and are not copied);
        ``weights=True`` also writes them, like any diffusers model."""
        if weights:
            return super().save_pretrained(save_directory, **kwargs)
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, folder, torch_dtype: torch.dtype | None = None, **kwargs) -> "TAEF2":
        """Load a folder written by :meth:`save_pretrained`: with weights inside it if it has them,
        else from the weights folder (:meth:`from_weights`), checked against the saved layer lists."""
        folder = Path(folder)
        if any((folder / n).is_file() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")):
            return super().from_pretrained(folder, torch_dtype=torch_dtype, **kwargs)
        cfg_path = folder / cls.config_name
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: not a TAEF2 folder (write one with TAEF2.save_pretrained)")
        cfg = json.loads(cfg_path.read_text())
        model = cls.from_weights(dtype=torch_dtype or torch.float32)
        for key in ("encoder_spec", "decoder_spec"):
            if json.loads(json.dumps(model.config[key])) != cfg.get(key):
                raise ValueError(f"the TAEF2 weights in {weights_dir()} do not have the layers {cfg_path} "
                                 f"was saved with ({key} differs): put the matching taef2_*.safetensors there")
        return model

    @classmethod
    def from_weights(cls, folder: str | Path | None = None, dtype: torch.dtype = torch.float32) -> "TAEF2":
        """Build from ``taef2_encoder.safetensors`` / ``taef2_decoder.safetensors`` in ``folder``
        (default: the weights folder, ``SCP_WEIGHTS_DIR`` or ``<repo>/weights``).

        Raises ``FileNotFoundError`` naming the missing file and ``ValueError`` when a file is
        not a TAESD state dict or its shapes do not fit.
        """
        halves = {}
        specs = {}
        for part, name in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
            path = weight_file(name, folder, what=f"the TAEF2 {part} (TAESD project's taef2_{part}.pth "
                                                 "converted to safetensors with unchanged keys)")
            try:
                with safe_open(str(path), "pt") as f:
                    halves[part] = {k: f.get_tensor(k) for k in f.keys()}
            except (SafetensorError, OSError) as e:
                raise ValueError(f"{path} is not a readable safetensors file ({e}); replace it with "
                                 f"the TAESD project's taef2_{part} weights") from e
            try:
                specs[part] = layer_spec({k: tuple(v.shape) for k, v in halves[part].items()}, part)
            except ValueError as e:
                raise ValueError(f"{path}: {e}; expected the TAEF2 {part} state dict") from e
        enc_c, dec_c = specs["encoder"][-1][2], next(s[1] for s in specs["decoder"] if s[0] == "conv")
        if enc_c != dec_c:
            raise ValueError(f"TAEF2 encoder makes {enc_c} latent channels but the decoder reads {dec_c}: "
                             "the two files are not a pair")
        model = cls(specs["encoder"], specs["decoder"])
        for part in ("encoder", "decoder"):
            try:
                getattr(model, part).load_state_dict(halves[part], strict=True)
            except RuntimeError as e:
                raise ValueError(f"{weight_file(ENCODER_FILE if part == 'encoder' else DECODER_FILE, folder)}: "
                                 f"shapes do not fit the TAEF2 {part}: {e}") from e
        if dtype != torch.float32:
            model = model.to(dtype)
        return model.eval().requires_grad_(False)
