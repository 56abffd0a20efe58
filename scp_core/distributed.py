"""Scale-out with accelerate: sharded prior statistics, sampling and evaluation.

The same functions run as a plain single process and under
``accelerate launch --num_processes N`` (on a CPU-only machine use ``--multi_gpu`` to get N
processes; see ``tests/test_distributed.py``). Results do not depend on N:

* **Priors.** The reference images are cut into fixed batches of :data:`REFERENCE_BATCH`;
  batch ``b`` belongs to *virtual shard* ``b % num_shards`` (:data:`NUM_SHARDS`, fixed,
  independent of N) and is encoded with a generator seeded by ``(seed, b)``. This is *the*
  convention of the project: the notebooks, ``scpdiff priors`` and the zoo's reports all
  build priors through :func:`reference_accumulator` / :func:`build_priors_distributed`, so
  the same ``(pipeline, dataset, n, seed)`` gives the same prior file everywhere. Each process accumulates the
  shards ``s`` with ``s % N == rank``, one fresh :class:`PriorAccumulator` per shard; the
  main process gathers the shard states and merges them in shard order. The arithmetic is
  the same for every N, so the prior is bit-identical to one process.
* **Sampling.** Label map ``i`` is sampled with seed ``seed + i`` (the pipeline's rule), so
  an image depends only on its index; process ``rank`` takes indices ``rank::N`` and
  writes ``{i:06d}.png``.
* **Evaluation.** Each process scores its indices (segmentation confusion matrix, FD
  features); the main process gathers and reduces them in index order.
"""
from __future__ import annotations

import atexit
from pathlib import Path

import numpy as np
import torch

from . import _tv_compat  # noqa: F401
from .io import atomic_path, write_json
from .priors import NormalPrior, PriorAccumulator, load_prior

REFERENCE_BATCH = 32  # images per encoded batch of the reference set (part of the seeding convention)
NUM_SHARDS = 8        # virtual shards of the reference set (fixed, so any process count gives the same bits)


def _state(device=None):
    """accelerate's process state; ``device`` as in :func:`scp_core.models.run_on_cpu`."""
    from accelerate import PartialState

    from .models import fresh_accelerate_state, run_on_cpu

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


def _dataset(pipe, dataset: str, root, split: str):
    """The dataset at the pipeline's image size (the real loaders resize to any size)."""
    from .data import get_dataset

    ds = get_dataset(dataset, root=root, split=split)
    if tuple(ds.size) != tuple(pipe.image_size) and hasattr(ds, "files"):
        ds = get_dataset(dataset, root=root, split=split, size=tuple(pipe.image_size))
    return ds


def _gather_objects(obj, state) -> list:
    """All processes' ``obj`` in rank order (every process gets the list)."""
    if state.num_processes == 1:
        return [obj]
    out = [None] * state.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


def _load_pipe(pipeline, device):
    from .toy_zoo import PIPELINE_DIR, load_toy_pipeline
    from .pipeline import SCPDiffPipeline

    if pipeline is None:
        return load_toy_pipeline(PIPELINE_DIR, device=device)
    return SCPDiffPipeline.from_pretrained(pipeline, device=device)


def _items(ds, idx):
    if hasattr(ds, "images"):
        img = torch.as_tensor(ds.images[idx]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        return img, torch.as_tensor(ds.labels[idx]).long()
    items = [ds[int(i)] for i in idx]
    return torch.stack([it["image"] for it in items]), torch.stack([it["labels"] for it in items])


def reference_batches(pipe, ds, n: int, batch_size: int = REFERENCE_BATCH, seed: int = 0, only=None):
    """``(b, x0, labels_latent)`` for the reference batches ``b`` (all, or those in ``only``), in order.

    The project's one convention: batch ``b`` holds images ``b * batch_size ...`` and is
    encoded (a VAE posterior sample times the scale factor) with a generator seeded by
    ``(seed, b)`` alone, so any process, shard or consumer sees the same latents for it.
    """
    n_batches = -(-int(n) // batch_size)
    for b in (range(n_batches) if only is None else only):
        idx = np.arange(b * batch_size, min((b + 1) * batch_size, n))
        img, lab = _items(ds, idx)
        g = torch.Generator(pipe.device).manual_seed(int(np.random.default_rng([seed, b]).integers(2**62)))
        yield b, pipe.encode(img, generator=g), pipe.prior_labels(lab)


def accumulate_shards(pipe, ds, n: int, batch_size: int, seed: int, num_shards: int, rank: int, world: int) -> dict:
    """This process's virtual shards: ``{shard: PriorAccumulator state}``."""
    from tqdm.auto import tqdm

    n_batches = -(-int(n) // batch_size)
    mine = [s for s in range(num_shards) if s % world == rank]
    states = {}
    bar = tqdm(total=sum(len(range(sh, n_batches, num_shards)) for sh in mine), desc="reference latents",
               unit="batch", disable=rank != 0, leave=False)
    for shard in mine:
        acc = PriorAccumulator(pipe.prior_num_classes, pipe.latent_shape)
        for _, x0, lab in reference_batches(pipe, ds, n, batch_size, seed, only=range(shard, n_batches, num_shards)):
            bar.update()
            acc.update(x0, lab)
        states[shard] = {k: v.cpu() for k, v in acc.state_dict().items()}
    bar.close()
    return states


def merge_shards(states: dict) -> PriorAccumulator:
    """Merge shard states in shard order (the canonical reduction)."""
    acc = None
    for shard in sorted(states):
        part = PriorAccumulator.from_state_dict(states[shard])
        acc = part if acc is None else acc.merge(part)
    return acc


def reference_accumulator(pipe, ds, n: int, seed: int = 0) -> PriorAccumulator:
    """Statistics of the first ``n`` images of ``ds`` in one process, by the project's one convention.

    Bit-identical to :func:`build_priors_distributed` with any number of processes (same
    batches, seeds and shard order). Each image is encoded to a VAE posterior sample times
    the scale factor (``x0``), its label map downsampled to latent size by nearest selection.
    """
    n = min(int(n), len(ds))
    if n < 1:
        raise ValueError(f"the reference set is empty (n={n}, {len(ds)} images in the split): pass n >= 1")
    return merge_shards(accumulate_shards(pipe, ds, n, REFERENCE_BATCH, seed, NUM_SHARDS, rank=0, world=1))


def reference_provenance(pipe, pipeline, dataset: str, split: str, n: int, seed: int) -> dict:
    """What a prior file records about where it came from (the same for every process count)."""
    return {"dataset": dataset, "split": split, "n": int(n), "pipeline": str(pipeline or "zoo/toy/pipeline"),
            "scale_factor": pipe.scale_factor, "image_size": list(pipe.image_size), "seed": int(seed),
            "reference_batch": REFERENCE_BATCH, "num_shards": NUM_SHARDS}


def build_priors_distributed(pipeline, dataset: str, root, split: str, n: int, out, min_count: int = 5,
                             fallback: str = "class", seed: int = 0, device=None) -> dict:
    """Spatial, categorical and joint prior files from ``n`` images, sharded across processes.

    ``device``: ``auto`` (default), ``cpu`` or ``cuda`` (see :func:`scp_core.models.run_on_cpu`).
    Returns (on every process) ``{"spatial": path, "categorical": path, "joint": path}``.
    """
    state = _state(device)
    pipe = _load_pipe(pipeline, state.device)
    ds = _dataset(pipe, dataset, root, split)
    n = min(int(n), len(ds))
    states = accumulate_shards(pipe, ds, n, REFERENCE_BATCH, seed, NUM_SHARDS, state.process_index,
                               state.num_processes)
    gathered = {}
    for part in _gather_objects(states, state):
        gathered.update(part)
    out = Path(out)
    paths = {k: out / f"{k}.safetensors" for k in ("spatial", "categorical", "joint")}
    if state.is_main_process:
        acc = merge_shards(gathered)
        prov = reference_provenance(pipe, pipeline, dataset, split, n, seed)
        for kind, prior in acc.priors(min_count, fallback, prov).items():
            prior.save(paths[kind])
        with atomic_path(out / "accumulator.safetensors") as tmp:
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in acc.state_dict().items()}, str(tmp))
        print(f"[scpdiff] priors from {n} images ({state.num_processes} process(es)) -> {out}")
    state.wait_for_everyone()
    return paths


def sample_distributed(pipeline, dataset: str, root, split: str, n: int, out, prior=None, mu: float | None = None,
                       steps: int = 20, guidance: float = 1.0, seed: int = 0, batch_size: int = 32,
                       device=None) -> list[Path]:
    """Sample the first ``n`` label maps of a split; image ``i`` (seed ``seed + i``) goes to ``{i:06d}.png``."""
    from PIL import Image

    state = _state(device)
    pipe = _load_pipe(pipeline, state.device)
    ds = _dataset(pipe, dataset, root, split)
    n = min(int(n), len(ds))
    if prior in (None, "normal"):
        prior_obj = NormalPrior(latent_channels=pipe.latent_shape[0])
    else:
        prior_obj = load_prior(prior, num_classes=pipe.prior_num_classes, latent_shape=pipe.latent_shape)
    from .sampling import resolve_mu

    mu = resolve_mu(prior_obj, mu)
    mine = np.arange(n)[state.process_index::state.num_processes]
    out = Path(out)
    written = []
    for s in range(0, len(mine), batch_size):
        idx = mine[s:s + batch_size]
        _, lab = _items(ds, idx)
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
    from .data import get_dataset
    from .metrics import feature_statistics, frechet_distance, load_toy_segmenter, SegmentationMeter
    from .metrics._common import read_image

    state = _state()
    seg = segmenter or load_toy_segmenter()
    ds = get_dataset(dataset, root=root, split=split)
    n = min(int(n), len(ds))
    mine = np.arange(n)[state.process_index::state.num_processes]
    meter = SegmentationMeter(seg.num_classes, ignore_index=getattr(ds, "ignore_index", None))
    feats, real_feats = {}, {}
    with torch.no_grad():
        for s in range(0, len(mine), batch):
            idx = mine[s:s + batch]
            gen = torch.stack([read_image(Path(image_dir) / f"{int(i):06d}.png") for i in idx]).float() / 127.5 - 1
            real, lab = _items(ds, idx)
            meter.update(seg.predict(gen), lab)
            for i, f, r in zip(idx, seg.features(gen).double(), seg.features(real).double()):
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
    fa = torch.stack([allf[i] for i in sorted(allf)]).numpy()
    fb = torch.stack([allr[i] for i in sorted(allr)]).numpy()
    fd = frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    return {"miou": float(res["miou"]), "acc": float(res["acc"]), "fd": float(fd), "n": n,
            "processes": state.num_processes}
