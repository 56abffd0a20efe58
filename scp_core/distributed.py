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
import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from .data import dataset_at_size, get_dataset, images_labels, to_float
from .io import AtomicFolder, OutputFolderError, write_json
from .metrics import SegmentationMeter, SegmenterFeatures, extract_features, frechet_distance_of
from .metrics._common import read_image
from .metrics.toy_segmenter import load_toy_segmenter
from .models import fresh_accelerate_state, run_on_cpu
from .pipeline import load_stack
from .priors import MIN_COUNT, NormalPrior, PriorAccumulator, load_prior
from .reference import (NUM_SHARDS, accumulate_shards, check_count, merge_shards, provenance_problems,
                        reference_provenance, save_accumulator)
from .release.conventions import AUTHORS_NORMAL, authors_normal_prior


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


def _gather_objects(obj, state) -> list:
    """All processes' ``obj`` in rank order (every process gets the list)."""
    if state.num_processes == 1:
        return [obj]
    out = [None] * state.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def _run_folder(out, state, overwrite: bool, marker: str):
    """The temporary folder every process writes ``out``'s run into; on success the main process puts it
    in place of ``out`` as a whole (:class:`scp_core.io.AtomicFolder`: locked, debris of killed runs
    cleared, a non-empty ``out`` refused unless ``overwrite``)."""
    folder = AtomicFolder(out, overwrite=overwrite, marker=marker) if state.is_main_process else None
    tmp, err = None, None
    if folder is not None:
        try:
            tmp = str(folder.open())
        except (OutputFolderError, OSError) as e:
            err = str(e)
    tmp, err = _gather_objects((tmp, err), state)[0]  # every process learns the folder (or the refusal)
    if err:
        raise OutputFolderError(err)
    try:
        yield Path(tmp)
        state.wait_for_everyone()
        if folder is not None:
            folder.commit()
    finally:
        if folder is not None:
            folder.close()


def _load_pipe(pipeline_dir, device, scale: str | None):
    """The pipeline folder (``None``: the committed toy stack) by ``pipeline.load_stack``'s rule for its scale
    (``None``: toy without a folder, real with one)."""
    return load_stack(pipeline_dir, scale or ("real" if pipeline_dir else "toy"), device=device)


def build_priors_distributed(pipeline_dir, dataset: str, root, split: str, n: int, out, min_count: int = MIN_COUNT,
                             fallback: str = "class", seed: int = 0, device=None,
                             dataset_options: dict | None = None, overwrite: bool = False,
                             scale: str | None = None) -> dict:
    """Spatial, categorical and joint prior files from ``n`` images, sharded across processes.

    ``device``: ``auto`` (default), ``cpu`` or ``cuda`` (see :func:`scp_core.models.run_on_cpu`);
    ``dataset_options``: keywords of the dataset class (a profile's, e.g. CamVid's hold-out); ``scale``: the
    profile's (``data.profiles``), how the pipeline loads. The prior files and the accumulator are one unit:
    written into a temporary folder and renamed onto ``out`` as a whole; a non-empty ``out`` is refused unless
    ``overwrite`` (which replaces it).
    Returns (on every process) ``{"spatial": path, "categorical": path, "joint": path}``.
    """
    if int(min_count) < 1:
        raise ValueError(f"--min-count must be an integer >= 1, got {min_count}")
    state = _state(device)
    out = Path(out)
    paths = {k: out / f"{k}.safetensors" for k in ("spatial", "categorical", "joint")}
    with _run_folder(out, state, overwrite, "accumulator.safetensors") as tmp:
        pipe = _load_pipe(pipeline_dir, state.device, scale)
        ds = dataset_at_size(dataset, root, split, pipe.image_size, dataset_options)
        n = check_count(n, ds)
        mine = [s for s in range(NUM_SHARDS) if s % state.num_processes == state.process_index]
        accs = accumulate_shards(pipe, ds, n, mine, seed, progress=state.is_main_process)
        gathered = {}
        for part in _gather_objects({s: {k: v.cpu() for k, v in a.state_dict().items()} for s, a in accs.items()},
                                    state):
            gathered.update({s: PriorAccumulator.from_state_dict(sd) for s, sd in part.items()})
        if state.is_main_process:
            acc = merge_shards(gathered)
            prov = reference_provenance(pipe, pipeline_dir, dataset, split, n, seed)
            for kind, prior in acc.priors(min_count, fallback, prov).items():
                prior.save(tmp / paths[kind].name)
            save_accumulator(acc, tmp / "accumulator.safetensors", json.dumps(prov, sort_keys=True))
    if state.is_main_process:
        print(f"[scpdiff] priors from {n} images ({state.num_processes} process(es)) -> {out}")
    return paths


def _sample_prior(pipe, pipeline_dir, prior, force: bool = False):
    """The prior ``sample`` runs with: normal, or the file ``prior`` checked against the pipeline."""
    if prior in (None, "normal"):
        return NormalPrior(latent_channels=pipe.latent_shape[0])
    if prior == AUTHORS_NORMAL:  # their N(0, I) baseline, run below mu = 1 (scp_core.release.conventions)
        return authors_normal_prior(pipe.latent_shape)
    prior_obj = load_prior(prior, num_classes=pipe.prior_num_classes, latent_shape=pipe.latent_shape)
    problems = provenance_problems(prior_obj, pipe, pipeline_dir)
    if problems and not force:
        raise ValueError(f"prior file {prior} was not built for this pipeline: {'; '.join(problems)}. Build the "
                         "prior with this pipeline (scpdiff priors), or pass --force to sample with it anyway")
    return prior_obj


def sample_distributed(pipeline_dir, dataset: str, root, split: str, n: int, out, prior=None,
                       mu: float | None = None, steps: int = 20, guidance: float = 1.0, seed: int = 0,
                       batch_size: int = 32, device=None, dataset_options: dict | None = None,
                       overwrite: bool = False, clamp: bool = False, force: bool = False,
                       scale: str | None = None) -> list[Path]:
    """Sample the first ``n`` label maps of a split; image ``i`` (seed ``seed + i``) goes to ``{i:06d}.png``.

    ``dataset_options``: keywords of the dataset class (a profile's, e.g. CamVid's hold-out). The run is
    one unit: built in a temporary folder and renamed onto ``out`` as a whole, with ``samples.json``
    listing its files; a non-empty ``out`` is refused unless ``overwrite``. ``n`` above the split's size
    is an error unless ``clamp``; a prior built for another autoencoder is refused unless ``force``.
    ``mu``: what is asked for (``None``: the pipeline's rule); ``samples.json`` records the ``mu`` that ran.
    """
    from PIL import Image  # Pillow comes with torchvision / diffusers; only sampling writes images

    if int(n) < 1 or int(batch_size) < 1:
        raise ValueError(f"--n and --batch-size must be integers >= 1, got n={n}, batch_size={batch_size}")
    state = _state(device)
    out = Path(out)
    with _run_folder(out, state, overwrite, "samples.json") as tmp:
        pipe = _load_pipe(pipeline_dir, state.device, scale)
        ds = dataset_at_size(dataset, root, split, pipe.image_size, dataset_options)
        if int(n) > len(ds) and not clamp:
            raise ValueError(f"--n {n} is more than the {len(ds)} label maps of split {split!r}: "
                             f"pass --n {len(ds)} at most")
        n = min(int(n), len(ds))
        prior_obj = _sample_prior(pipe, pipeline_dir, prior, force)
        mine = np.arange(n)[state.process_index::state.num_processes]
        for s in range(0, len(mine), batch_size):
            idx = mine[s:s + batch_size]
            _, lab = images_labels(ds, idx)
            res = pipe(lab, prior=prior_obj, mu=mu, num_inference_steps=steps, guidance_scale=guidance,
                       seed=[seed + int(i) for i in idx], batch_size=batch_size, output_type="np",
                       progress=state.is_main_process)
            ran_mu = res.mu
            for i, arr in zip(idx, res.images):
                Image.fromarray(arr).save(tmp / f"{int(i):06d}.png", format="PNG")
        state.wait_for_everyone()
        if state.is_main_process:
            write_json(tmp / "samples.json", {
                "dataset": dataset, "split": split, "n": n, "prior": str(prior or "normal"), "mu": ran_mu,
                "steps": steps, "guidance": guidance, "seed": seed, "processes": state.num_processes,
                "files": sorted(p.name for p in tmp.glob("*.png"))})
    return [out / f"{i:06d}.png" for i in np.arange(n)[state.process_index::state.num_processes]]


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
