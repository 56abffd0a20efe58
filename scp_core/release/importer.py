"""``import_release``: the authors' checkpoint and statistics into one folder of this project, written as one unit.

The folder is a pipeline folder (:meth:`~scp_core.pipeline.SCPDiffPipeline.save_pretrained`'s layout:
``vae/``, ``unet/``, ``controlnet/``, ``scheduler/``, ``conditioning.safetensors``, ``scp_pipeline.json``
and ``prior.safetensors``, the joint prior) when a checkpoint is given, plus ``priors/`` (one prior file
per statistics file given) and ``release.json`` (what was read, with sizes and sha256, and both sampling
conventions). Everything is read, checked and converted before the first byte is written; the folder is
then built beside ``out`` and renamed into place (:func:`scp_core.io.atomic_folder`), so an error leaves
nothing behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..data import DATASETS
from ..io import OutputFolderError, atomic_folder, portable
from ..models import SD_SCALE_FACTOR, encode_prompt, make_scheduler
from ..pipeline import SCPDiffPipeline
from ..reference import autoencoder_fingerprint
from .checkpoint import SD21_MODEL_CONFIG, convert_checkpoint, file_digest, read_checkpoint
from .conventions import AUTHORS_DIFFUSION_STEPS, CONVENTIONS, authors_id_map, authors_palette, conventions
from .stats import find_stat_files, release_priors

__all__ = ["MANIFEST", "import_release", "build_pipeline"]

MANIFEST = "release.json"


def _tokenizer(folder):
    """SD 2.x's CLIP tokenizer from a local folder (``tokenizer/`` of SD 2.1 base: vocab.json, merges.txt)."""
    from transformers import CLIPTokenizer  # slow to import; needed only to encode the prompts once

    def holds(d: Path) -> bool:
        return (d / "vocab.json").is_file() or (d / "tokenizer.json").is_file()

    folder = Path(folder)
    if not holds(folder):
        if not holds(folder / "tokenizer"):
            raise ValueError(f"{folder} holds no CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json): give "
                             "SD 2.1 base's tokenizer/ folder (or the base folder holding it)")
        folder = folder / "tokenizer"
    return CLIPTokenizer.from_pretrained(str(folder))


def build_pipeline(checkpoint, tokenizer, dataset: str, conv, image_size=None, model_config: dict | None = None,
                   ) -> tuple[SCPDiffPipeline, dict]:
    """An :class:`SCPDiffPipeline` (float32, CPU) from a ControlNet-format checkpoint; ``(pipeline, provenance)``.

    The prompts of ``conv`` (:class:`~.conventions.SamplingConventions`) are encoded once with the
    checkpoint's own text encoder and ``tokenizer``; the text encoder is then dropped (the pipeline
    keeps the embeddings). The label set (classes, ignore id) is this project's ``dataset``; the palette is
    the one the authors' ControlNet was trained with (:func:`~.conventions.authors_palette`).
    """
    ds = DATASETS[dataset]
    size = tuple(int(s) for s in (image_size or ds.default_size))
    tok = _tokenizer(tokenizer)
    sd = read_checkpoint(checkpoint)
    mods = convert_checkpoint(sd, model_config, image_size=max(size))
    del sd
    with torch.no_grad():
        cond = encode_prompt(mods["text_encoder"], tok, conv.prompt, "cpu")
        uncond = encode_prompt(mods["text_encoder"], tok, conv.negative_prompt, "cpu")
    prov = {"checkpoint": file_digest(checkpoint), "model_config": model_config or SD21_MODEL_CONFIG,
            "prompt": conv.prompt, "negative_prompt": conv.negative_prompt}
    pipe = SCPDiffPipeline(mods["vae"], mods["unet"], mods["controlnet"], make_scheduler("ddim"), cond, uncond,
                           num_classes=ds.num_classes, palette=authors_palette(dataset), image_size=size,
                           ignore_index=ds.ignore_index, scale_factor=mods["scale_factor"],
                           info={"dataset": dataset, "prompt": conv.prompt, "negative_prompt": conv.negative_prompt,
                                 "source": "imported with scpdiff import-release", "conventions": conv.as_dict()})
    if pipe.latent_shape[1] * pipe.vae_factor != size[0] or pipe.latent_shape[2] * pipe.vae_factor != size[1]:
        raise ValueError(f"image size {size} is not a multiple of the autoencoder's factor {pipe.vae_factor}")
    return pipe, prov


def _check_out(out: Path, inputs, overwrite: bool) -> None:
    """Refuse, before any conversion, an output folder that holds an earlier run (unless ``overwrite``) or that
    is, or holds, one of the inputs (replacing it would delete them); :func:`atomic_folder` checks again."""
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise OutputFolderError(f"{out} holds an earlier run; pass --overwrite to replace it as a whole, or choose "
                                "another --out")
    o = out.resolve()
    for p in inputs:
        p = Path(p).resolve()
        if p == o or o in p.parents:
            raise ValueError(f"--out {out} holds the input {p}; choose another output folder")


def import_release(out: str | os.PathLike, dataset: str, checkpoint: str | os.PathLike | None = None,
                   tokenizer: str | os.PathLike | None = None, stat_dir: str | os.PathLike | None = None,
                   stat_name: str | None = None, convention: str = "authors", fallback: str | None = None,
                   diffusion_steps: int = AUTHORS_DIFFUSION_STEPS, image_size=None,
                   model_config: dict | None = None, overwrite: bool = False) -> Path:
    """Import the authors' checkpoint and / or statistics into the folder ``out`` (see the module text).

    Args:
        out: the folder to write (refused if it holds an earlier import, unless ``overwrite``).
        dataset: ``cityscapes``, ``ade20k`` or ``coco-stuff``: the label set, palette and image size,
            and how the authors' label values map to this project's ids.
        checkpoint, tokenizer: the ControlNet-format checkpoint and SD 2.x's CLIP tokenizer folder.
        stat_dir, stat_name: the statistics ``<stat_dir>/<stat_name>_{spatial,categorical,spatial_class}_mean_std.npy``.
        convention: ``"authors"`` (their prompts, CFG, step index and spatial fallback) or ``"ours"``;
            the pipeline's prompt embeddings are that convention's; ``release.json`` records both.
        fallback: the joint prior's fallback at count 0 (default: the convention's).
        diffusion_steps: the authors' step index, expressed as ``mu`` in the authors' convention.
        image_size: ``(H, W)`` (default: the dataset's paper size, the authors' too).
        model_config: the architecture (default :data:`~.checkpoint.SD21_MODEL_CONFIG`).
        overwrite: replace an earlier import in ``out`` as a whole.
    """
    if dataset not in ("cityscapes", "ade20k", "coco-stuff"):
        raise ValueError(f"--dataset must be cityscapes, ade20k or coco-stuff (the authors' release), got {dataset!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if checkpoint is None and stat_dir is None:
        raise ValueError("nothing to import: give a checkpoint, statistics (stat_dir and stat_name), or both")
    if checkpoint is not None and tokenizer is None:
        raise ValueError("a checkpoint needs SD 2.x's CLIP tokenizer folder (tokenizer/ of SD 2.1 base) to encode "
                         "the prompts; it is not part of the checkpoint")
    if stat_dir is not None and not stat_name:
        raise ValueError("statistics need their name: stat_name, as in <name>_spatial_mean_std.npy")
    convs = {name: conventions(name, dataset, diffusion_steps) for name in CONVENTIONS}
    conv = convs[convention]
    ds = DATASETS[dataset]
    files = find_stat_files(stat_dir, stat_name) if stat_dir is not None else {}
    _check_out(Path(out), [p for p in (checkpoint, tokenizer, *files.values()) if p is not None], overwrite)
    pipe, pipe_prov = (build_pipeline(checkpoint, tokenizer, dataset, conv, image_size, model_config)
                       if checkpoint is not None else (None, None))
    priors = {}
    if files:
        latent = pipe.latent_shape if pipe is not None else None
        if latent is None and image_size is not None:  # SD's autoencoder: 4 channels, 8x smaller
            latent = (4, int(image_size[0]) // 8, int(image_size[1]) // 8)
        priors = release_priors(files, authors_id_map(dataset), ds.num_classes, ds.ignore_index,
                                fallback=fallback or conv.fallback, latent_shape=latent)
    manifest = {"format": "scp-release-import", "dataset": dataset, "convention": convention,
                "conventions": {k: c.as_dict() for k, c in convs.items()},
                "pipeline": pipe_prov, "priors": {k: f"priors/{k}.safetensors" for k in priors},
                "statistics": {k: p.name for k, p in files.items()}}
    for prior in priors.values():  # what `scpdiff sample` checks a prior against (scp_core.reference)
        prior.provenance.update({"scale_factor": pipe.scale_factor if pipe is not None else SD_SCALE_FACTOR,
                                 "latent_shape": list(prior.latent_shape)})
    with atomic_folder(out, overwrite=overwrite, marker=MANIFEST) as tmp:
        if pipe is not None:
            pipe.save_pretrained(tmp, save_prior=False)
            fingerprint = autoencoder_fingerprint(tmp)
            for prior in priors.values():  # statistics and checkpoint of one release: the same autoencoder
                prior.provenance.update({"image_size": list(pipe.image_size), "autoencoder": fingerprint})
            if "joint" in priors:  # the pipeline's default prior
                priors["joint"].save(tmp / "prior.safetensors")
        for kind, prior in priors.items():
            prior.save(tmp / "priors" / f"{kind}.safetensors")
        (tmp / MANIFEST).write_text(portable(json.dumps(manifest, indent=2, default=str)) + "\n")
    return Path(out)
