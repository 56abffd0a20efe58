"""The authors' release (SCP-Diff-Toolkit) imported: their checkpoints, their statistics, their sampling conventions.

* :mod:`.stats` -- their ``*_mean_std.npy`` statistics read with a restricted unpickler and made this
  project's spatial / categorical / joint priors, with provenance;
* :mod:`.checkpoint` -- a ControlNet-repository checkpoint (``.ckpt`` / ``.safetensors``) converted to
  diffusers modules with diffusers' own converters and local model configurations;
* :mod:`.conventions` -- their prompts, CFG scales, step index (as this project's ``mu``) and fallback,
  beside this project's own;
* :mod:`.importer` -- :func:`import_release`, which writes all of it as one folder (``scpdiff import-release``).
"""
from __future__ import annotations

from .checkpoint import SD21_MODEL_CONFIG, convert_checkpoint, read_checkpoint
from .conventions import (AUTHORS_NORMAL, CONVENTIONS, SamplingConventions, authors_id_map, authors_mu,
                          authors_normal_prior, authors_palette, authors_steps, conventions, recorded_conventions,
                          sampling_choices)
from .importer import MANIFEST, build_pipeline, import_release
from .stats import STAT_SUFFIXES, find_stat_files, read_release_npy, release_priors

__all__ = ["SD21_MODEL_CONFIG", "convert_checkpoint", "read_checkpoint", "AUTHORS_NORMAL", "CONVENTIONS",
           "SamplingConventions", "recorded_conventions", "sampling_choices",
           "authors_id_map", "authors_mu", "authors_normal_prior", "authors_palette", "authors_steps", "conventions",
           "MANIFEST",
           "build_pipeline", "import_release", "STAT_SUFFIXES", "find_stat_files", "read_release_npy",
           "release_priors"]
