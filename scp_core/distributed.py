"""Scale-out with accelerate: sharded prior statistics, sampling and evaluation.

The same functions run as a plain single process and under
``accelerate launch --num_processes N`` (on a CPU-only machine use ``--multi_gpu`` to get N
processes; see ``tests/test_distributed.py``). Results do not depend on N:

* **Priors.** The reference set's convention (:mod:`scp_core.reference`) fixes batches, seeds
  and virtual shards; process ``rank`` accumulates the shards ``s`` with ``s % N == rank``, the
  main process gathers their states and merges them in shard order: bit-identical to one process.
* **Sampling.** Label map ``i`` is sampled with seed ``seed + i`` (the pipeline's rule), so
  an image depends only on its index; process ``rank`` takes indices ``rank::N`` and
  writes ``{i:06d}.png``.
* **Evaluation.** Each process scores its indices (segmentation confusion matrix, FD
  features); the main process gathers and reduces them in index order.
"""
from __future__ import annotations

import atexit
import json
from pathlib import Path

import numpy as np
import torch

from .data import get_dataset, images_labels, to_float
from .io import atomic_path, write_json
from .metrics import SegmentationMeter, SegmenterFeatures, extract_features, frechet_distance_of
from .metrics._common import read_image
from .metrics.toy_segmenter import load_toy_segmenter
from .models import fresh_accelerate_state, run_on_cpu
from .pipeline import load_pipeline
from .priors import MIN_COUNT, NormalPrior, PriorAccumulator, load_prior
from .reference import NUM_SHARDS, accumulate_shards, check_count, merge_shards, reference_provenance, save_accumulator
from .sampling import resolve_mu


def _state(device=None):
    """accelerate's process state; ``device`` as in :func:`scp_core.models.run_on_cpu`."""
    from accelerate import PartialState  # accelerate is imported only where processes are set up

    cpu = run_on_cpu(device)
    fresh_accelerate_state(cpu)
    state = PartialState(cpu=cpu)
    if state.num_processes > 1:
        atexit.register(_close_process_group)  # registering twice is harmless: the hook checks first
    return state


def _close_process_group() -> None:
    """Tear down the process group before the interpreter exits.

    A rank that leaves with its gloo group still open can abort in C++ teardown
    ("terminate called without an active exception", SIGABRT), which makes
    ``accelerate launch`` report a failure after the work is done.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _dataset(pipe, dataset: str, root, split: str, dataset_options: dict | None = None):
    """The dataset with ``dataset_options`` (keywords of its class, e.g. CamVid's hold-out), at the
    pipeline's image size unless the options name one (the real loaders resize to any size)."""
    options = dict(dataset_options or {})
    ds = get_dataset(dataset, root=root, split=split, **options)
    if tuple(ds.size) != tuple(pipe.image_size) and hasattr(ds, "files") and "size" not in options:
        ds = get_dataset(dataset, root=root, split=split, **options, size=tuple(pipe.image_size))
    return ds


def _gather_objects(obj, state) -> list:
    """All processes' ``obj`` in rank order (every process gets the list)."""
    if state.num_processes == 1:
        return [obj]
    out = [None] * state.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


def _load_pipe(pipeline, device):
    """The pipeline folder ``pipeline`` (default: the committed toy stack, in float32)."""
    return load_pipeline(pipeline, device=device, dtype=None if pipeline else torch.float32)


def build_priors_distributed(pipeline, dataset: str, root, split: str, n: int, out, min_count: int = MIN_COUNT,
                             fallback: str = "class", seed: int = 0, device=None,
                             dataset_options: dict | None = None) -> dict:
    """Spatial, categorical and joint prior files from ``n`` images, sharded across processes.

    ``device``: ``auto`` (default), ``cpu`` or ``cuda`` (see :func:`scp_core.models.run_on_cpu`);
    ``dataset_options``: keywords of the dataset class (a profile's, e.g. CamVid's hold-out).
    Returns (on every process) ``{"spatial": path, "categorical": path, "joint": path}``.
    """
    state = _state(device)
    pipe = _load_pipe(pipeline, state.device)
    ds = _dataset(pipe, dataset, root, split, dataset_options)
    n = check_count(n, ds)
    mine = [s for s in range(NUM_SHARDS) if s % state.num_processes == state.process_index]
    accs = accumulate_shards(pipe, ds, n, mine, seed, progress=state.is_main_process)
    gathered = {}
    for part in _gather_objects({s: {k: v.cpu() for k, v in a.state_dict().items()} for s, a in accs.items()}, state):
        gathered.update({s: PriorAccumulator.from_state_dict(sd) for s, sd in part.items()})
    out = Path(out)
    paths = {k: out / f"{k}.safetensors" for k in ("spatial", "categorical", "joint")}
    if state.is_main_process:
        acc = merge_shards(gathered)
        prov = reference_provenance(pipe, pipeline, dataset, split, n, seed)
        for kind, prior in acc.priors(min_count, fallback, prov).items():
            prior.save(paths[kind])
        save_accumulator(acc, out / "accumulator.safetensors", json.dumps(prov, sort_keys=True))
        print(f"[scpdiff] priors from {n} images ({state.num_processes} process(es)) -> {out}")
    state.wait_for_everyone()
    return paths


def sample_distributed(pipeline, dataset: str, root, split: str, n: int, out, prior=None, mu: float | None = None,
                       steps: int = 20, guidance: float = 1.0, seed: int = 0, batch_size: int = 32,
                       device=None, dataset_options: dict | None = None) -> list[Path]:
    """Sample the first ``n`` label maps of a split; image ``i`` (seed ``seed + i``) goes to ``{i:06d}.png``.

    ``dataset_options``: keywords of the dataset class (a profile's, e.g. CamVid's hold-out).
    """
    from PIL import Image  # Pillow comes with torchvision / diffusers; only sampling writes images

    state = _state(device)
    pipe = _load_pipe(pipeline, state.device)
    ds = _dataset(pipe, dataset, root, split, dataset_options)
    n = min(int(n), len(ds))
    if prior in (None, "normal"):
        prior_obj = NormalPrior(latent_channels=pipe.latent_shape[0])
    else:
        prior_obj = load_prior(prior, num_classes=pipe.prior_num_classes, latent_shape=pipe.latent_shape)
    mu = resolve_mu(prior_obj, mu)
    mine = np.arange(n)[state.process_index::state.num_processes]
    out = Path(out)
    written = []
    for s in range(0, len(mine), batch_size):
        idx = mine[s:s + batch_size]
        _, lab = images_labels(ds, idx)
        res = pipe(lab, prior=prior_obj, mu=mu, num_inference_steps=steps, guidance_scale=guidance,
                   seed=[seed + int(i) for i in idx], batch_size=batch_size, output_type="np",
                   progress=state.is_main_process)
        for i, arr in zip(idx, res.images):
            p = out / f"{int(i):06d}.png"
            with atomic_path(p) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG")
            written.append(p)
    state.wait_for_everyone()
    if state.is_main_process:
        write_json(out / "samples.json", {"dataset": dataset, "split": split, "n": n, "prior": str(prior or "normal"),
                                          "mu": mu, "steps": steps, "guidance": guidance, "seed": seed,
                                          "processes": state.num_processes})
    return written


def evaluate_distributed(image_dir, dataset: str, root, split: str, n: int, segmenter=None, batch: int = 64) -> dict:
    """mIoU / accuracy and FD-toy features of ``{i:06d}.png`` samples, sharded, reduced on the main process.

    Returns (main process; others get ``{}``) ``miou``, ``acc``, ``fd`` (FD-toy) against the split's
    real images, and ``n``.
    """
    state = _state()
    seg = segmenter or load_toy_segmenter()
    extractor = SegmenterFeatures(seg)
    ds = get_dataset(dataset, root=root, split=split)
    n = min(int(n), len(ds))
    mine = np.arange(n)[state.process_index::state.num_processes]
    meter = SegmentationMeter(seg.num_classes, ignore_index=getattr(ds, "ignore_index", None))
    feats, real_feats = {}, {}
    with torch.no_grad():
        for s in range(0, len(mine), batch):
            idx = mine[s:s + batch]
            gen = torch.stack([read_image(Path(image_dir) / f"{int(i):06d}.png") for i in idx]).permute(0, 2, 3, 1)
            real, lab = images_labels(ds, idx)
            meter.update(seg.predict(to_float(gen)), lab)
            gen_f, real_f = extract_features(gen, extractor, batch), extract_features(real, extractor, batch)
            for i, f, r in zip(idx, gen_f, real_f):
                feats[int(i)], real_feats[int(i)] = f, r
    parts = _gather_objects({"meter": meter, "feats": feats, "real": real_feats}, state)
    if not state.is_main_process:
        return {}
    total = parts[0]["meter"]
    for p in parts[1:]:
        total.merge(p["meter"])  # confusion counts add up exactly across processes
    res = total.compute()
    allf = {k: v for p in parts for k, v in p["feats"].items()}
    allr = {k: v for p in parts for k, v in p["real"].items()}
    fd = frechet_distance_of(torch.stack([allf[i] for i in sorted(allf)]), torch.stack([allr[i] for i in sorted(allr)]))
    return {"miou": float(res["miou"]), "acc": float(res["acc"]), "fd": float(fd), "n": n,
            "processes": state.num_processes}
