"""The reference set: the real latents every prior is built from, by one convention, cached once.

A prior is a statistic of *reference latents* ``x0``: training images encoded by the pipeline's
autoencoder (a posterior sample times the scale factor), their label maps downsampled to latent
size. The convention, shared by the study, ``scpdiff priors``, the zoo reports and the benchmarks:

* the first ``n`` images are cut into fixed batches of :data:`REFERENCE_BATCH`; batch ``b`` is
  encoded with a generator seeded by ``(seed, b)`` alone;
* batch ``b`` belongs to *virtual shard* ``b % NUM_SHARDS``; each shard has its own
  :class:`~scp_core.priors.PriorAccumulator`, and the shards are merged in shard order (Chan's
  rule). The shard count is fixed, so any number of processes (:mod:`scp_core.distributed`)
  gives the same bits as one.

:func:`cached_accumulator` keeps the merged statistics in one file format (safetensors, the
accumulator's state with a ``key`` naming everything that determines the latents).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from .data import images_labels, to_float
from .data.profiles import TOY_PIPELINE, TOY_PIPELINE_DIR
from .io import REPO_ROOT, save_safetensors
from .priors import PriorAccumulator

REFERENCE_BATCH = 32  # images per encoded batch of the reference set (part of the seeding convention)
NUM_SHARDS = 8        # virtual shards of the reference set (fixed, so any process count gives the same bits)


def num_batches(n: int, batch_size: int = REFERENCE_BATCH) -> int:
    return -(-int(n) // batch_size)


def batch_generator(device, seed: int, b: int) -> torch.Generator:
    """The generator that encodes reference batch ``b``: seeded by ``(seed, b)`` alone."""
    return torch.Generator(device).manual_seed(int(np.random.default_rng([seed, b]).integers(2**62)))


def reference_batches(pipe, ds, n: int, batch_size: int = REFERENCE_BATCH, seed: int = 0,
                      only: Iterable[int] | None = None, encode: Callable | None = None):
    """``(b, x0, labels_latent)`` for the reference batches ``b`` (all, or those in ``only``), in order.

    Batch ``b`` holds images ``b * batch_size ...`` of ``ds``, encoded with :func:`batch_generator`,
    so any process, shard or consumer sees the same latents for it. ``encode(b, images_u8, make)``, if given,
    returns batch ``b``'s latents and may keep them (the study's cache); ``make()`` encodes them by this rule.
    """
    for b in (range(num_batches(n, batch_size)) if only is None else only):
        img, lab = images_labels(ds, np.arange(b * batch_size, min((b + 1) * batch_size, n)))

        def make(img=img, b=b):
            return pipe.encode(to_float(img), generator=batch_generator(pipe.device, seed, b))
        yield b, (make() if encode is None else encode(b, img, make)), pipe.prior_labels(lab)


def shard_batches(n: int, shard: int, num_shards: int = NUM_SHARDS, batch_size: int = REFERENCE_BATCH) -> range:
    return range(shard, num_batches(n, batch_size), num_shards)


def accumulate_shards(pipe, ds, n: int, shards: Iterable[int], seed: int = 0, progress: bool = True,
                      encode: Callable | None = None) -> dict:
    """``{shard: PriorAccumulator}`` over the reference batches of each of ``shards``."""
    shards = list(shards)
    bar = tqdm(total=sum(len(shard_batches(n, s)) for s in shards), desc="reference latents", unit="batch",
               disable=not progress, leave=False)
    accs = {}
    for shard in shards:
        acc = PriorAccumulator(pipe.prior_num_classes, pipe.latent_shape)
        for _, x0, lab in reference_batches(pipe, ds, n, seed=seed, only=shard_batches(n, shard), encode=encode):
            bar.update()
            acc.update(x0, lab)
        accs[shard] = acc
    bar.close()
    return accs


def merge_shards(accs: dict) -> PriorAccumulator:
    """Merge shard accumulators in shard order (the canonical reduction)."""
    acc = None
    for shard in sorted(accs):
        acc = accs[shard] if acc is None else acc.merge(accs[shard])
    return acc


def check_count(n: int, ds) -> int:
    """``min(n, len(ds))``; an empty reference set is refused."""
    n = min(int(n), len(ds))
    if n < 1:
        raise ValueError(f"the reference set is empty (n={n}, {len(ds)} images in the split): pass n >= 1")
    return n


def reference_accumulator(pipe, ds, n: int, seed: int = 0, encode: Callable | None = None) -> PriorAccumulator:
    """Statistics of the first ``n`` images of ``ds`` in one process, by the convention above (``encode``: as in
    :func:`reference_batches`)."""
    n = check_count(n, ds)
    return merge_shards(accumulate_shards(pipe, ds, n, range(NUM_SHARDS), seed, encode=encode))


def reference_provenance(pipe, pipeline_dir, dataset: str, split: str, n: int, seed: int) -> dict:
    """What a prior file records about where it came from (the same for every process count)."""
    return {"dataset": dataset, "split": split, "n": int(n), "pipeline": str(pipeline_dir or TOY_PIPELINE),
            "scale_factor": pipe.scale_factor, "image_size": list(pipe.image_size), "seed": int(seed),
            "reference_batch": REFERENCE_BATCH, "num_shards": NUM_SHARDS,
            "autoencoder": autoencoder_fingerprint(pipeline_dir)}  # the same value cached_accumulator keys with


def provenance_problems(prior, pipe, pipeline_dir) -> list[str]:
    """How the autoencoder a prior's latents came from differs from the pipeline ``pipe`` (folder
    ``pipeline_dir``, ``None`` for the toy stack): scale factor, image and latent size, autoencoder files.
    Fields a prior file does not record (older files) are not compared; ``[]`` when all agree."""
    prov, problems = prior.provenance or {}, []
    if prov.get("scale_factor") is not None and not np.isclose(float(prov["scale_factor"]), pipe.scale_factor,
                                                               rtol=1e-6, atol=0):
        problems.append(f"autoencoder scale factor {prov['scale_factor']} (the pipeline's is {pipe.scale_factor})")
    for key, ours in (("image_size", pipe.image_size), ("latent_shape", pipe.latent_shape)):
        if prov.get(key) is not None and [int(v) for v in prov[key]] != [int(v) for v in ours]:
            problems.append(f"{key.replace('_', ' ')} {list(prov[key])} (the pipeline's is {list(ours)})")
    if prov.get("autoencoder") and prov["autoencoder"] != autoencoder_fingerprint(pipeline_dir):
        problems.append(f"autoencoder fingerprint {prov['autoencoder'][:12]}... (the pipeline's autoencoder files "
                        f"hash to {autoencoder_fingerprint(pipeline_dir)[:12]}...)")
    return problems


def autoencoder_fingerprint(pipeline_dir) -> str:
    """sha256 of a pipeline folder's ``vae/`` (config, and weights where they are stored there)."""
    root = Path(pipeline_dir) if pipeline_dir else TOY_PIPELINE_DIR
    root = (root if root.is_absolute() else REPO_ROOT / root) / "vae"
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def save_accumulator(acc: PriorAccumulator, path, key: str = "") -> Path:
    """The accumulator's exact state as safetensors, atomically, with ``key`` in its metadata."""
    return save_safetensors({k: v.contiguous() for k, v in acc.state_dict().items()}, path, metadata={"key": key})


def load_accumulator(path, key: str | None = None) -> PriorAccumulator | None:
    """The accumulator saved at ``path`` (``None`` if absent, unreadable or saved under another ``key``)."""
    if not Path(path).is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if key is not None and (f.metadata() or {}).get("key") != key:
                return None
            return PriorAccumulator.from_state_dict({k: f.get_tensor(k) for k in f.keys()})
    except Exception:  # noqa: BLE001 - an unreadable cache counts as absent (it is recomputed and replaced)
        return None


def cached_accumulator(path, provenance: dict, dataset_options: dict,
                       compute: Callable[[], PriorAccumulator]) -> PriorAccumulator:
    """The reference set's accumulator: read from ``path`` if saved there for the same inputs, else computed and saved.

    Encoding the reference images is the costly part of building priors (minutes for CamVid's 355
    frames through TAEF2), and every notebook of a batch needs the same statistics. The key holds the
    provenance (:func:`reference_provenance`), the dataset options and the autoencoder's files.
    """
    key = json.dumps({**provenance, "dataset_options": dataset_options,
                      "autoencoder": autoencoder_fingerprint(provenance.get("pipeline"))},
                     sort_keys=True, default=str)
    acc = load_accumulator(path, key)
    if acc is None:
        acc = compute()
        save_accumulator(acc, path, key)
    return acc
