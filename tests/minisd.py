"""Miniature real-scale inputs written to disk, nothing downloaded.

* :func:`make_mini_sd`: a Stable Diffusion 2.1 base folder in the hub's layout with its class
  names (``model_index.json``, ``vae/``, ``unet/``, ``text_encoder/`` with a tiny
  ``CLIPTextModel``, ``tokenizer/`` with a tiny byte-level BPE vocabulary, ``scheduler/``),
  written by diffusers' own ``StableDiffusionPipeline.save_pretrained``. The architecture
  keeps SD 2.1's structure (8x VAE with four levels, a UNet with three cross-attention down
  blocks and a plain one, linear attention projections, epsilon prediction) at tiny widths.
* :func:`make_mini_cityscapes`: Cityscapes in its official layout
  (``leftImg8bit/{split}/{city}/*_leftImg8bit.png``, ``gtFine/{split}/{city}/*_gtFine_labelIds.png``)
  with blocky street scenes in real Cityscapes label ids.
* :func:`make_mini_segmenter`: a tiny transformers SegFormer (19 classes) saved with ``save_pretrained``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import scp_core  # noqa: F401  (the torchvision shim first)

# Cityscapes label ids (not train ids): what *_gtFine_labelIds.png holds
UNLABELED, ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 0, 7, 8, 11, 17, 21, 23, 24, 26
COLOURS = {UNLABELED: (0, 0, 0), ROAD: (128, 64, 128), SIDEWALK: (232, 35, 244), BUILDING: (70, 70, 70),
           POLE: (153, 153, 153), VEGETATION: (107, 142, 35), SKY: (70, 130, 180), PERSON: (220, 20, 60),
           CAR: (0, 0, 142)}
PROMPT_WORDS = ("city", "road", "scenes")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2 / CLIP's byte-to-unicode table)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
            + list(range(ord("\xae"), 256)))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def _tokenizer():
    """A CLIP tokenizer over a tiny vocabulary: the 256 byte symbols (alone and word-final) and a few merges."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    merges = []
    for word in PROMPT_WORDS:  # merge each prompt word left to right into one token
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    vocab = {}
    for tok in (["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
                + ["".join(m) for m in merges]):
        vocab.setdefault(tok, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    return tok, len(vocab)


def make_mini_sd(folder: Path, seed: int = 0) -> Path:
    """A tiny SD 2.1 base folder (hub layout), written by ``StableDiffusionPipeline.save_pretrained``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tok, vocab_size = _tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
                        sample_size=128, scaling_factor=0.18215)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32, attention_head_dim=(2, 2, 4, 4), use_linear_projection=True, norm_num_groups=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    # SD 2.1 base ships a PNDM scheduler with this schedule (scaled-linear betas, epsilon prediction)
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type="epsilon", set_alpha_to_one=False,
                              skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A blocky street scene: label ids and a colour image with per-class colours and noise."""
    lab = np.full((h, w), BUILDING, np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    lab[: int(h * rng.uniform(0.15, 0.3))] = SKY
    lab[horizon:] = ROAD
    lab[horizon:horizon + h // 10, : w // 4] = SIDEWALK
    v0 = int(rng.integers(w // 2, w - w // 4))
    lab[h // 5:horizon, v0:v0 + w // 6] = VEGETATION
    c0 = int(rng.integers(0, w - w // 4))
    lab[horizon + h // 8:horizon + h // 4, c0:c0 + w // 4] = CAR
    p0 = int(rng.integers(0, w - w // 16))
    lab[horizon - h // 8:horizon + h // 10, p0:p0 + w // 16] = PERSON
    lab[h // 6:horizon, w // 3:w // 3 + max(w // 64, 1)] = POLE
    lab[-h // 16:, -w // 8:] = UNLABELED  # the ego-vehicle corner: unlabeled -> ignore (255)
    img = np.zeros((h, w, 3), np.float32)
    for k, c in COLOURS.items():
        img[lab == k] = c
    img += rng.normal(0, 12, img.shape)
    return lab, np.clip(img, 0, 255).astype(np.uint8)


def make_mini_cityscapes(root: Path, n_train: int = 4, n_val: int = 2, size=(128, 256), seed: int = 0) -> Path:
    """Cityscapes in the official layout (images and ``*_gtFine_labelIds.png``), ``size`` = (H, W)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = cities[split][i % len(cities[split])]
            stem = f"{city}_{i:06d}_000019"
            lab, img = _scene(rng, *size)
            for sub, suffix, arr in (("leftImg8bit", "leftImg8bit", img), ("gtFine", "gtFine_labelIds", lab)):
                path = root / sub / split / city / f"{stem}_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
    return root


def make_mini_segmenter(folder: Path, num_labels: int = 19, seed: int = 0) -> Path:
    """A tiny SegFormer for semantic segmentation, saved where ``HFSegmenter`` reads it."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=num_labels)
    SegformerForSemanticSegmentation(cfg).save_pretrained(folder)
    return Path(folder)
