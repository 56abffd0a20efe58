"""The study: functions that return what each notebook shows (tables as DataFrames, images).

Notebooks stay thin: they pick a :class:`Settings`, call these functions, plot, and write
their numbers with :func:`write_metrics`. Everything is seeded; every number carries the
sample count it rests on and, where affordable, a 95 % bootstrap interval.

Profiles: ``toy`` (the embedded default: toy-city and the committed toy zoo, FD-toy in
place of FID) and ``toy-gv`` (toy-city with strong per-image global variation, same
models). Real-scale profiles (``cityscapes``, ``ade20k``) take a pipeline folder and a
dataset root; FID then uses pytorch-fid's Inception (its weights must be present).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import _tv_compat  # noqa: F401
from .data import CAMVID_DUSK_HOLDOUT, REPO_ROOT, colorize, get_dataset
from .io import write_json, write_text
from .priors import NormalPrior
from .sampling import DEFAULT_MU, resolve_mu

PRIOR_KINDS = ("normal", "spatial", "categorical", "joint")

# The paper's numbers (docs/method.md, section 2), for the tables that set ours beside them.
PAPER_TABLE1 = pd.DataFrame(
    [("normal", 65.14, 94.14, 23.35, 20.73, 61.14, 20.58), ("spatial", 66.77, 94.29, 12.83, 20.86, 64.46, 16.03),
     ("categorical", 66.86, 94.54, 11.63, 21.86, 66.63, 16.56), ("joint", 67.92, 94.65, 10.53, 25.61, 71.79, 12.66)],
    columns=["prior", "cityscapes_miou", "cityscapes_acc", "cityscapes_fid", "ade20k_miou", "ade20k_acc", "ade20k_fid"])
PAPER_TABLE2 = pd.DataFrame([("ControlNet", 20.7, 20.6, 28.4), ("SCP-Diff", 10.5, 13.0, 17.6)],
                            columns=["method", "cityscapes_fid", "ade20k_fid", "coco_stuff_fid"])
PAPER_TABLE3 = pd.DataFrame([("OASIS", 0.35, 0.65), ("ControlNet", 0.59, 0.17), ("SCP-Diff", 0.56, 0.21)],
                            columns=["method", "lpips", "ms_ssim"])


@dataclass
class Settings:
    """One run's knobs. ``smoke`` shrinks every count so a notebook runs in seconds.

    Attributes:
        profile: ``toy`` or ``toy-gv`` (or a real-scale profile name).
        dataset: dataset registry name; ``pipeline``: pipeline folder (``None``: the toy zoo).
        n_ref: reference images for the priors; ``n_eval``: validation maps evaluated.
        steps, guidance, mu: DDIM steps, CFG scale, the default mu for the priors.
        min_count, fallback: joint prior fallback rule.
        seed: base seed (sample ``i`` uses ``seed + i``).
        out_dir: where reports go (default ``reports/<profile>``; smoke runs go to
            ``reports/_smoke/<profile>`` so they never overwrite reference results).
    """

    profile: str = "toy"
    dataset: str = "toy-city"
    pipeline: str | None = None
    n_ref: int = 2000
    n_eval: int = 500
    steps: int = 20
    guidance: float = 1.0
    mu: float = DEFAULT_MU
    min_count: int = 5
    fallback: str = "class"
    seed: int = 0
    batch_size: int = 50
    smoke: bool = False
    out_dir: str | None = None
    data_root: str | None = None
    segmenter: str | None = None  # a transformers segmentation folder, or one written by ToySegmenter; None: the toy one
    metric: str = "FD-toy"        # "FID" at real scale (pytorch-fid Inception; its weights must be present)
    dataset_options: dict = field(default_factory=dict)  # keywords of the dataset class (size, hold-out)
    eval_splits: tuple = ("val",)  # the evaluation maps and real references: these splits, concatenated

    @property
    def reports(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        return REPO_ROOT / "reports" / ("_smoke" if self.smoke else "") / self.profile


PROFILES = {
    "toy": Settings(profile="toy", dataset="toy-city"),
    # real scale: the paper's settings; paths come from `scpdiff reproduce --pipeline --data-root --segmenter`
    "cityscapes": Settings(profile="cityscapes", dataset="cityscapes", n_ref=2975, n_eval=500, guidance=4.0,
                           batch_size=8, metric="FID"),
    "ade20k": Settings(profile="ade20k", dataset="ade20k", n_ref=10000, n_eval=2000, guidance=7.5,
                       batch_size=8, metric="FID"),
    # real photographs on the CPU: CamVid at 192 x 256 (3:4, the native 360 x 480 scaled by 8/15), the
    # pretrained TAEF2 autoencoder and the models of zoo/camvid (`scpdiff train --profile camvid`). The last
    # 12 frames of the dusk sequence 0001TP are held out of every training and prior set (split "holdout").
    "camvid": Settings(profile="camvid", dataset="camvid", pipeline="zoo/camvid/pipeline", n_ref=355, n_eval=101,
                       batch_size=16, metric="FID", segmenter="zoo/camvid/segmenter",
                       dataset_options={"size": (192, 256), "holdout": CAMVID_DUSK_HOLDOUT}),
    # the daylight zoo fine-tuned on toy-city-gv (scp_core.toy_zoo.train_toy_gv)
    "toy-gv": Settings(profile="toy-gv", dataset="toy-city-gv", pipeline="zoo/toy-gv/pipeline"),
    # the same toy-gv stack with base UNet and ControlNet retrained under zero terminal SNR (notebook 09)
    "toy-gv-zero-snr": Settings(profile="toy-gv-zero-snr", dataset="toy-city-gv", pipeline="zoo/toy-gv-zero-snr/pipeline"),
}
SMOKE = dict(n_ref=64, n_eval=16, steps=4, batch_size=16)
# Table 1 on the toy profile runs both toy-city settings side by side (daylight and global variation).
COMPANIONS = {"toy": ("toy", "toy-gv")}


def comparison_profiles(profile: str) -> list[str]:
    """The settings notebook 03 compares for ``profile``: itself and its companions (toy: toy and toy-gv)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    return list(COMPANIONS.get(profile, (profile,)))


def settings(profile: str = "toy", smoke: bool | None = None, **overrides) -> Settings:
    """Settings of a profile; ``smoke=None`` reads ``SCP_SMOKE=1`` from the environment (nbval)."""
    if smoke is None:
        smoke = os.environ.get("SCP_SMOKE", "0") == "1"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    base = PROFILES[profile]
    # The environment names a real dataset and its models; the toy profiles generate their own data
    # and use the committed toy zoo, so it does not apply to them (a camvid root given to toy-city
    # would have it generate its images into that folder).
    env = {} if base.metric == "FD-toy" else {
        "pipeline": os.environ.get("SCP_PIPELINE"), "data_root": os.environ.get("SCP_DATA_ROOT"),
        "segmenter": os.environ.get("SCP_SEGMENTER")}
    s = replace(base, smoke=bool(smoke), **{k: v for k, v in {**env, **overrides}.items() if v is not None})
    if s.metric == "FID" and not s.pipeline:
        raise ValueError(f"profile {profile!r} is real scale: give the fine-tuned pipeline folder "
                         "(`scpdiff reproduce --profile ... --pipeline DIR --data-root DIR --segmenter DIR`, "
                         "or SCP_PIPELINE / SCP_DATA_ROOT / SCP_SEGMENTER)")
    if s.smoke:
        s = replace(s, **{k: min(getattr(s, k), v) for k, v in SMOKE.items()})
    return s


# ----------------------------------------------------------------------------- loading
_CACHE: dict = {}


def load_pipeline(s: Settings):
    """The profile's pipeline (the committed toy zoo by default), cached per process."""
    from .toy_zoo import PIPELINE_DIR, load_toy_pipeline

    from .models import default_device
    from .pipeline import SCPDiffPipeline

    key = ("pipe", s.pipeline)
    if key not in _CACHE:
        torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("SCP_THREADS", "2"))))
        path = Path(s.pipeline) if s.pipeline else PIPELINE_DIR
        path = path if path.is_absolute() else REPO_ROOT / path
        if s.metric == "FD-toy":
            _CACHE[key] = load_toy_pipeline(path)
        else:
            _CACHE[key] = SCPDiffPipeline.from_pretrained(path, device=default_device())
    return _CACHE[key]


def load_data(s: Settings, split: str):
    key = ("data", s.dataset, s.data_root, split, json.dumps(s.dataset_options, sort_keys=True, default=str))
    if key not in _CACHE:
        options = dict(s.dataset_options)
        if s.metric != "FD-toy" and "size" not in options:
            # real scale: the images at the size the pipeline was fine-tuned at (the loaders resize)
            options["size"] = tuple(load_pipeline(s).image_size)
        _CACHE[key] = get_dataset(s.dataset, root=s.data_root, split=split, **options)
    return _CACHE[key]


def load_segmenter(s: Settings | None = None):
    """The toy segmenter, or (real scale) a transformers model from ``s.segmenter``."""
    from .metrics import HFSegmenter, load_toy_segmenter

    folder = s.segmenter if s is not None else None
    key = ("seg", folder)
    if key not in _CACHE:
        path = Path(folder) if folder else None
        path = path if path is None or path.is_absolute() else REPO_ROOT / path
        cfg = path / "config.json" if path is not None else None
        if cfg is not None and cfg.is_file() and "channels" in json.loads(cfg.read_text()):
            _CACHE[key] = load_toy_segmenter(path)  # a segmenter trained with the toy recipe (zoo/camvid)
        else:
            _CACHE[key] = HFSegmenter(folder) if folder else load_toy_segmenter()
    return _CACHE[key]


def _extractor(s: Settings):
    """Features for the Frechet distance: the toy segmenter's (FD-toy) or Inception's (FID)."""
    from .metrics import InceptionFeatures, SegmenterFeatures
    from .models import default_device

    key = ("extractor", s.metric)
    if key not in _CACHE:
        _CACHE[key] = (SegmenterFeatures(load_segmenter()) if s.metric == "FD-toy"
                       else InceptionFeatures(device=default_device()))
    return _CACHE[key]


def _images_labels(ds, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[n, H, W, 3]`` and int64 labels ``[n, H, W]`` of dataset items."""
    if hasattr(ds, "images"):
        return torch.as_tensor(ds.images[idx]), torch.as_tensor(ds.labels[idx]).long()
    items = [ds[int(i)] for i in idx]
    img = torch.stack([((it["image"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
                       for it in items])
    return img, torch.stack([it["labels"] for it in items])


def eval_set(s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_eval`` evaluation images (uint8) and label maps: the splits ``s.eval_splits`` in order."""
    imgs, labs, left = [], [], s.n_eval
    for split in s.eval_splits:
        ds = load_data(s, split)
        img, lab = _images_labels(ds, np.arange(min(left, len(ds))))
        imgs.append(img), labs.append(lab)
        left -= len(img)
        if left <= 0:
            break
    return torch.cat(imgs), torch.cat(labs)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> float ``[n, 3, H, W]`` in [-1, 1]."""
    return images_u8.permute(0, 3, 1, 2).float().div(127.5).sub(1)


# ----------------------------------------------------------------------------- priors
def build_priors(s: Settings, save: bool = True) -> dict:
    """Spatial, categorical and joint priors (Eqs. 5, 7, 8) from ``n_ref`` training images.

    The statistics come from :func:`scp_core.distributed.reference_accumulator`, the one
    convention every entry point uses, so ``scpdiff priors`` with the same pipeline, dataset,
    ``n`` and seed writes the same prior files as this function.

    Returns:
        ``{"normal": NormalPrior, "spatial": ..., "categorical": ..., "joint": ...,
        "_accumulator": PriorAccumulator}``; the files go to ``<reports>/priors/*.safetensors``
        (git-ignored), with the reference statistics they come from (:func:`_reference_statistics`).
    """
    from .distributed import reference_accumulator, reference_provenance

    key = ("priors", s.profile, s.pipeline, s.dataset, s.data_root, s.n_ref, s.min_count, s.fallback, s.seed)
    if key in _CACHE:
        return _CACHE[key]
    pipe = load_pipeline(s)
    ds = load_data(s, "train")
    prov = reference_provenance(pipe, s.pipeline, s.dataset, "train", min(s.n_ref, len(ds)), s.seed)
    acc = _reference_statistics(s, prov, lambda: reference_accumulator(pipe, ds, s.n_ref, seed=s.seed))
    priors = {"normal": NormalPrior(latent_channels=pipe.latent_shape[0]),
              **acc.priors(s.min_count, s.fallback, prov), "_accumulator": acc}
    if save:
        for k in ("spatial", "categorical", "joint"):
            priors[k].save(s.reports / "priors" / f"{k}.safetensors")
    _CACHE[key] = priors
    return priors


def _autoencoder_fingerprint(s: Settings) -> str:
    """sha256 of the pipeline's ``vae/`` folder (config, and weights where they are stored there)."""
    import hashlib

    from .toy_zoo import PIPELINE_DIR

    root = Path(s.pipeline) if s.pipeline else PIPELINE_DIR
    root = (root if root.is_absolute() else REPO_ROOT / root) / "vae"
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _reference_statistics(s: Settings, provenance: dict, compute):
    """The reference set's :class:`PriorAccumulator`, cached beside the priors of the report.

    Encoding the reference images is the costly part of building priors (minutes for CamVid's
    355 frames through TAEF2), and every notebook of a batch needs the same statistics; the
    cache ``<reports>/priors/reference_statistics.safetensors`` is used only when everything that
    determines the latents matches: the provenance of :func:`reference_provenance`, the dataset
    options and the autoencoder's files. Written atomically; anything else recomputes.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from .io import atomic_path
    from .priors import PriorAccumulator

    key = json.dumps({**provenance, "dataset_options": s.dataset_options, "autoencoder": _autoencoder_fingerprint(s)},
                     sort_keys=True, default=str)
    path = s.reports / "priors" / "reference_statistics.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return PriorAccumulator.from_state_dict({k: f.get_tensor(k) for k in f.keys()})
        except Exception:  # noqa: BLE001 - an unreadable cache is recomputed and replaced
            pass
    acc = compute()
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in acc.state_dict().items()}, str(tmp), metadata={"key": key})
    return acc


def prior_summary(priors: dict, class_names) -> pd.DataFrame:
    """Per class: reference tokens, the class mean and std (first four latent channels), joint cells using the fallback."""
    cat, joint = priors["categorical"], priors["joint"]
    names = list(class_names) + ["(ignore)"] * (cat.num_classes - len(class_names))
    rows = []
    for c in range(cat.num_classes):
        seen = joint.count[c] > 0
        rows.append({"class": names[c], "tokens": int(cat.class_counts[c]),
                     "mean (ch 0-3)": np.round(cat.mean[c, :4].numpy(), 3).tolist(),
                     "std (ch 0-3)": np.round(cat.std[c, :4].numpy(), 3).tolist(),
                     "cells seen": int(seen.sum()),
                     "cells with fallback among seen": int((joint.fallback_mask[c] & seen).sum())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- sampling
def generate(s: Settings, labels: torch.Tensor, prior=None, mu: float | None = None, x0=None,
             seed_offset: int = 0, steps: int | None = None) -> torch.Tensor:
    """uint8 images ``[n, H, W, 3]`` for label maps; sample ``i`` uses seed ``seed + seed_offset + i``.

    ``mu=None``: the prior's step fraction by :func:`scp_core.sampling.resolve_mu` (the normal
    prior at 1, the others at ``s.mu``); with ``x0`` (Fig. 3), ``mu`` is the start level.
    """
    pipe = load_pipeline(s)
    if x0 is None:
        mu = resolve_mu(prior, mu, default=s.mu)
    out = pipe(labels, prior=prior, mu=mu, num_inference_steps=steps or s.steps,
               guidance_scale=s.guidance, seed=s.seed + seed_offset, batch_size=s.batch_size,
               output_type="np", x0=x0, progress=True)
    return torch.as_tensor(out.images)


# ----------------------------------------------------------------------------- evaluation
def _features(s: Settings, images_u8: torch.Tensor, batch: int = 100) -> torch.Tensor:
    ext = _extractor(s)
    with torch.no_grad():
        return torch.cat([ext(images_u8[i:i + batch].permute(0, 3, 1, 2).float() / 255)
                          for i in range(0, len(images_u8), batch)]).double()


def _fd(fa: torch.Tensor, fb: torch.Tensor) -> float:
    from .metrics import feature_statistics, frechet_distance

    return frechet_distance(*feature_statistics(fa.numpy()), *feature_statistics(fb.numpy()))


def frechet_bootstrap(fa: torch.Tensor, fb: torch.Tensor, n_boot: int = 100, seed: int = 0):
    """Frechet distance of features ``fa`` (generated) to ``fb`` (reference) and a 95 % interval.

    The interval is a percentile bootstrap over the generated images, shifted by the
    bootstrap's bias. Resampling with replacement repeats images, which shrinks the sample's
    spread and so *inflates* a Frechet distance: the raw percentile interval sits above the
    estimate's own sampling distribution. Subtracting the bias estimate (mean of the draws
    minus the estimate) re-centres it; ``tests/test_study.py`` checks the coverage.

    Returns:
        ``(value, (lo, hi))``, or ``(value, None)`` for ``n_boot <= 0``.
    """
    value = _fd(fa, fb)
    if n_boot <= 0:
        return value, None
    rng = np.random.default_rng(seed)
    draws = [fa[rng.integers(0, len(fa), len(fa))] for _ in range(n_boot)]
    if len(fa) < fa.shape[1]:  # fewer images than features (FID: 2048-d): the n x n form, same quantity
        from .metrics import feature_statistics, frechet_distance_few

        mu2, sigma2 = feature_statistics(fb.numpy())
        boots = np.array([frechet_distance_few(d.numpy(), mu2, sigma2) for d in draws])
    else:
        boots = np.array([_fd(d, fb) for d in draws])
    bias = float(boots.mean() - value)
    return value, tuple((np.percentile(boots, [2.5, 97.5]) - bias).tolist())


def reference_features(s: Settings) -> torch.Tensor:
    """Toy-segmenter features of real validation images (the FD-toy reference set)."""
    key = ("ref_feats", s.dataset, s.n_eval, s.metric, tuple(s.eval_splits))
    if key not in _CACHE:
        img, _ = eval_set(replace(s, n_eval=max(s.n_eval, 100) if not s.smoke else s.n_eval))
        _CACHE[key] = _features(s, img)
    return _CACHE[key]


def kid_score(gen_feats: torch.Tensor, ref_feats: torch.Tensor) -> dict:
    """KID (unbiased MMD^2, cubic kernel; :mod:`scp_core.metrics.kid`) on all images, with its standard error.

    ``kid`` is the U-statistic on every generated and reference image (``kid_full``) and
    ``kid_se`` its two-sample jackknife standard error; both are raw values (tables show them
    times 10^3, as papers do). At these counts a subset average would only repeat the full set.
    """
    from .metrics import kid_from_features

    k = kid_from_features(gen_feats.numpy(), ref_feats.numpy(), n_subsets=1, subset_size=len(gen_feats))
    return {"kid": k["kid_full"], "kid_se": k["kid_se"]}


def score(s: Settings, gen_u8: torch.Tensor, labels: torch.Tensor, ci: bool = True) -> dict:
    """mIoU / accuracy (segmenter on generated images vs. the input maps) and the Frechet distance.

    The distance is stored as ``fd`` (with ``fd_ci``) and ``metric`` names it: ``s.metric``,
    FD-toy on the toy profiles, FID at real scale; tables and figures label it from there.
    With FID, ``kid`` and ``kid_se`` (:func:`kid_score`) come from the same Inception features.
    """
    from .metrics import SegmentationMeter

    seg = load_segmenter(s)
    ds = load_data(s, "val")
    meter = SegmentationMeter(ds.num_classes, ignore_index=ds.ignore_index, keep_per_sample=ci)
    for i in range(0, len(gen_u8), 100):
        meter.update(seg.predict(to_float(gen_u8[i:i + 100])), labels[i:i + 100])
    res = meter.compute()
    out = {"miou": 100 * res["miou"], "acc": 100 * res["acc"], "n": int(len(gen_u8)), "metric": s.metric}
    gen_feats, ref_feats = _features(s, gen_u8), reference_features(s)
    fd, fd_ci = frechet_bootstrap(gen_feats, ref_feats, n_boot=100 if ci else 0)
    out["fd"] = fd
    if s.metric == "FID":  # KID beside FID: unbiased, the fair comparison at a hundred images
        out.update(kid_score(gen_feats, ref_feats))
    if ci:
        b = meter.bootstrap(n_boot=200, seed=s.seed)
        out["miou_ci"] = [100 * v for v in b["miou"]]
        out["acc_ci"] = [100 * v for v in b["acc"]]
        out["fd_ci"] = list(fd_ci)
    return out


def real_ceiling(s: Settings) -> dict:
    """What real images score: the ceiling of any generator.

    mIoU / accuracy: the toy segmenter on the real validation images of the evaluated maps.
    FD-toy / FID (and KID): ``n_eval`` real *training* images against the validation reference
    (two independent real sets of the same size: the floor a perfect generator would reach).
    """
    img, lab = eval_set(s)
    out = score(s, img, lab, ci=False)
    train = load_data(s, "train")
    real_train, _ = _images_labels(train, np.arange(min(len(img), len(train))))
    train_feats, ref_feats = _features(s, real_train), reference_features(s)
    out["fd"] = _fd(train_feats, ref_feats)
    if s.metric == "FID":
        out.update(kid_score(train_feats, ref_feats))
    return out


# ----------------------------------------------------------------------------- the studies
def prior_comparison(s: Settings, kinds=PRIOR_KINDS) -> tuple[pd.DataFrame, dict]:
    """Table 1: each prior at ``s.mu`` (normal at mu = 1, plain ControlNet) on ``n_eval`` maps."""
    priors = build_priors(s)
    _, labels = eval_set(s)
    rows, images = [], {}
    for k in kinds:
        mu = resolve_mu(priors[k], default=s.mu)
        t = time.time()
        gen = generate(s, labels, prior=priors[k], mu=mu)
        r = score(s, gen, labels)
        rows.append({"prior": k, "mu": mu, **r, "sample_s": round(time.time() - t, 1)})
        images[k] = gen
    return pd.DataFrame(rows), images


def global_brightness(s: Settings, kinds=("normal", "spatial", "joint"), n: int = 100,
                      images: dict | None = None) -> pd.DataFrame:
    """The global-factor diagnostic (docs/method.md, section 4): the spread of per-image mean brightness.

    The priors draw latent tokens independently, so a prior sample averages per-image global
    factors (lighting) away; if the model keeps the low frequencies of its start, generated
    images vary less in brightness than real ones. Returns the std (and mean) over ``n`` maps.
    ``images``: ``{kind: uint8 images}`` already generated for the first ``n`` (or more)
    evaluation maps with the same seeds (e.g. by :func:`prior_comparison`), used instead of
    sampling them again.
    """
    priors = build_priors(s)
    img, labels = eval_set(replace(s, n_eval=n))
    def row(name, mu, u8):
        b = (u8.float() / 255).mean(dim=(1, 2, 3))
        return {"images": name, "mu": mu, "brightness std": float(b.std()), "brightness mean": float(b.mean()),
                "n": int(len(u8))}
    rows = [row("real", None, img)]
    for k in kinds:
        mu = resolve_mu(priors[k], default=s.mu)
        gen = images[k][:len(labels)] if images and k in images else generate(s, labels, prior=priors[k], mu=mu)
        rows.append(row(f"{k} prior", mu, gen))
    return pd.DataFrame(rows)


def mismatch_study(s: Settings, mus=(0.2, 0.4, 0.6, 0.8, 1.0)) -> pd.DataFrame:
    """Fig. 3: denoise from N(sqrt(a_muT) x0, (1 - a_muT) I) with real x0, against N(0, I)."""
    pipe = load_pipeline(s)
    img, labels = eval_set(s)
    x0 = pipe.encode(to_float(img), generator=torch.Generator().manual_seed(s.seed))
    rows = []
    base = score(s, generate(s, labels, prior=NormalPrior(latent_channels=x0.shape[1])), labels)
    for mu in mus:
        r = score(s, generate(s, labels, x0=x0, mu=mu), labels)
        rows.append({"start": "N(sqrt(a) x0, (1-a) I)", "mu": mu, **r})
    rows.append({"start": "N(0, I)", "mu": 1.0, **base})
    return pd.DataFrame(rows)


def mu_sweep(s: Settings, kinds=("joint", "spatial", "categorical"), mus=(0.5, 0.7, 0.8, 0.9, 1.0)) -> pd.DataFrame:
    """Fig. 8: the metrics against mu for the priors; the normal prior at mu = 1 as reference."""
    priors = build_priors(s)
    _, labels = eval_set(s)
    rows = []
    for k in kinds:
        for mu in mus:
            rows.append({"prior": k, "mu": mu, **score(s, generate(s, labels, prior=priors[k], mu=mu), labels)})
    rows.append({"prior": "normal", "mu": 1.0, **score(s, generate(s, labels, prior=priors["normal"]), labels)})
    return pd.DataFrame(rows)


def diversity_study(s: Settings, k: int = 8, n_maps: int = 32, kinds=("normal", "joint"),
                    priors: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Table 3: K samples per label map, mean pairwise LPIPS and MS-SSIM, averaged over maps.

    ``priors``: ``{kind: Prior}`` to draw from (default: :func:`build_priors`).
    """
    from .metrics import diversity

    priors = priors or build_priors(s)
    _, labels = eval_set(replace(s, n_eval=n_maps))
    rows, grids = [], {}
    for kind in kinds:
        mu = resolve_mu(priors[kind], default=s.mu)
        lab = labels.repeat_interleave(k, 0)
        gen = generate(s, lab, prior=priors[kind], mu=mu, seed_offset=10_000)
        groups = to_float(gen).view(len(labels), k, 3, *gen.shape[1:3])
        d = diversity(groups, lpips_net=None, progress=False)
        rows.append({"prior": kind, "mu": mu, "lpips": d["lpips"], "lpips_ci": d.get("lpips_ci"),
                     "ms_ssim": d["ms_ssim"], "ms_ssim_ci": d.get("ms_ssim_ci"), "maps": d["n_maps"], "k": k,
                     "lpips_note": d.get("lpips_unavailable_reason")})
        grids[kind] = gen.view(len(labels), k, *gen.shape[1:])
    return pd.DataFrame(rows), grids


def comparison_table(metrics_dir: Path) -> pd.DataFrame:
    """Table 2: the paper's FID rows and ours (read from ``prior_comparison.json``), ours marked.

    Our numbers go to the column ``ours`` with the metric they were measured with in
    ``ours_metric`` (FD-toy on the toy profiles, FID at real scale), never into the paper's FID
    columns: a toy distance is not comparable with the paper's FID.
    """
    rows = [{"method": r.method, "source": "paper", "cityscapes": r.cityscapes_fid, "ade20k": r.ade20k_fid,
             "coco_stuff": r.coco_stuff_fid, "ours": None, "ours_metric": "FID"} for r in PAPER_TABLE2.itertuples()]
    path = Path(metrics_dir) / "prior_comparison.json"
    if path.is_file():
        ours = json.loads(path.read_text())
        metric = ours.get("settings", {}).get("metric", "FD-toy")
        for setting, tab in ours.get("tables", {}).items():
            by = {r["prior"]: r for r in tab}
            for method, kind in (("ControlNet", "normal"), ("SCP-Diff", "joint")):
                if kind in by:
                    rows.append({"method": method, "source": f"this project, {setting} profile (n={by[kind]['n']})",
                                 "cityscapes": None, "ade20k": None, "coco_stuff": None, "ours": by[kind]["fd"],
                                 "ours_metric": by[kind].get("metric", metric)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures and output
def image_grid(rows: dict, titles=None, path: Path | None = None, scale: float = 1.6):
    """A matplotlib grid: one row per entry of ``rows`` (``name -> uint8 [n, H, W, 3]``)."""
    import matplotlib.pyplot as plt

    n = max(len(v) for v in rows.values())
    h, w = next(iter(rows.values())).shape[1:3]
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n * w / h / 1.2, scale * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(np.asarray(imgs[c]))
            if r == 0 and titles:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path: Path) -> Path:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    return Path(path)


def readable(df: pd.DataFrame, metric: str, columns) -> pd.DataFrame:
    """``columns`` of a results table for reading: ``fd`` named by its metric, KID (if any) times 10^3.

    KID and its standard error follow the distance's interval (they exist where the metric is FID).
    """
    cols = [c for c in columns if c in df]
    out = df[cols].copy()
    if "kid" in df:
        at = cols.index("fd_ci") + 1 if "fd_ci" in cols else len(cols)
        out.insert(at, "KID x1e3", df["kid"] * 1e3)
        out.insert(at + 1, "KID SE x1e3", df["kid_se"] * 1e3)
    return out.rename(columns={"fd": metric, "fd_ci": f"{metric} 95% CI"})


def _interval_text(v, digits: int = 3):
    """A ``(lo, hi)`` interval cell as ``[lo, hi]`` for reading; any other cell unchanged."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]"
    return v


def save_table(df: pd.DataFrame, path_stem: Path) -> None:
    """``<stem>.csv`` (full precision) and ``<stem>.md`` (3 decimals, intervals as ``[lo, hi]``), atomically."""
    write_text(Path(str(path_stem) + ".csv"), df.to_csv(index=False))
    shown = df.copy()
    for col in shown.columns[shown.dtypes == object]:
        shown[col] = shown[col].map(_interval_text)
    write_text(Path(str(path_stem) + ".md"), shown.to_markdown(index=False, floatfmt=".3f") + "\n")


def colorized(labels: torch.Tensor, s: Settings) -> np.ndarray:
    return colorize(labels.numpy(), load_data(s, "val").palette)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_metrics(s: Settings, name: str, payload: dict) -> Path:
    """``<reports>/metrics/<name>.json``: the notebook's numbers with the settings they rest on."""
    return write_json(s.reports / "metrics" / f"{name}.json",
                      {"name": name, "settings": asdict(s), "commit": git_commit(), **payload})


def records(df: pd.DataFrame) -> list:
    return json.loads(df.to_json(orient="records"))
