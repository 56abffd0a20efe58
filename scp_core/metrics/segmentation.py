"""Segmentation agreement: mIoU and pixel accuracy of a segmenter on generated images.

The paper scores how well generated images follow their label maps by segmenting them with
a pretrained network and comparing with the input labels (DRN-D-105 on Cityscapes, UperNet101
on ADE20K, DeepLabV2 on COCO-Stuff). Here:

* :class:`SegmentationMeter` accumulates a confusion matrix over batches (the standard
  protocol): ``IoU_c = TP / (TP + FP + FN)`` over the whole set, pixels whose target is the
  ignore index are skipped, classes absent from both prediction and target (``TP + FP +
  FN = 0``) get ``NaN`` and are excluded from the mean; pixel accuracy is ``sum TP / valid
  pixels``. A prediction outside ``[0, K)`` (e.g. a model class mapped to "ignore") counts
  as wrong for its target class (a false negative) and as no class's false positive.
* Pluggable segmenters, all with ``predict(images [-1, 1] [B, 3, H, W]) -> [B, H, W]``
  dataset label ids: :class:`HFSegmenter` (a transformers semantic-segmentation model from a
  local folder, SegFormer or UperNet, with a model-to-dataset label-id mapping) and the toy
  segmenter (:mod:`scp_core.metrics.toy_segmenter`).
* :func:`evaluate_segmentation` runs a segmenter over images and label maps (tensors or
  folders) into a meter.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._common import iter_image_batches, iter_label_batches, list_image_files, source_length

__all__ = ["SegmentationMeter", "Segmenter", "HFSegmenter", "evaluate_segmentation",
           "confusion_matrix"]


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Confusion counts of one batch, rows = target class, columns = predicted class.

    Args:
        pred: predicted ids ``[...]`` (same shape as ``target``), or logits ``[B, K, H, W]``.
        target: target ids ``[...]``.
        num_classes: K.
        ignore_index: target id to skip (``None``: none).

    Returns:
        int64 ``[K, K + 1]``; the last column counts valid-target pixels whose prediction
        is outside ``[0, K)``.

    Raises:
        ValueError: on shape mismatch or target ids outside ``[0, K)`` other than ``ignore_index``.
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.is_floating_point() and pred.ndim == target.ndim + 1:
        pred = pred.argmax(dim=-3)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    pred, target = pred[valid], target[valid]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        bad = torch.unique(target[(target < 0) | (target >= num_classes)])[:10].tolist()
        raise ValueError(f"target ids {bad} are outside [0, {num_classes}) and are not the ignore "
                         f"index {ignore_index}")
    pred = torch.where((pred < 0) | (pred >= num_classes), torch.full_like(pred, num_classes), pred)
    idx = target * (num_classes + 1) + pred
    return torch.bincount(idx, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


class SegmentationMeter:
    """Confusion-matrix mIoU and pixel accuracy, accumulated over batches.

    Args:
        num_classes: number of evaluated classes K (ids ``0..K-1``).
        ignore_index: target id whose pixels are skipped (``None``: no ignore id).
        class_names: optional K names for the per-class table.
        keep_per_sample: also keep each image's confusion matrix (``K x (K+1)`` ints per
            image) for :meth:`bootstrap`.

    Example:
        >>> m = SegmentationMeter(3, ignore_index=255)
        >>> m.update(pred, target)          # any number of times
        >>> r = m.compute(); r["miou"], r["acc"], r["per_class"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 class_names: Sequence[str] | None = None, keep_per_sample: bool = False):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.keep_per_sample = keep_per_sample
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._cm = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)
        self._per_sample: list[torch.Tensor] = []
        self.n_images = 0

    @property
    def confusion(self) -> np.ndarray:
        """The ``K x K`` confusion matrix (rows: target, columns: prediction)."""
        return self._cm[:, :self.num_classes].numpy().copy()

    def update(self, pred, target) -> None:
        """Add a batch.

        Args:
            pred: predicted ids ``[B, H, W]`` (or ``[H, W]``), or logits ``[B, K, H, W]``.
            target: target ids, same shape as the ids.
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.is_floating_point() and pred.ndim == target.ndim + 1:
            pred = pred.argmax(dim=-3)
        if target.ndim == 2:
            pred, target = pred.unsqueeze(0), target.unsqueeze(0)
        if self.keep_per_sample:
            for p, t in zip(pred, target):
                cm = confusion_matrix(p, t, self.num_classes, self.ignore_index)
                self._per_sample.append(cm)
                self._cm += cm
        else:
            self._cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.n_images += int(target.shape[0])

    @property
    def per_sample(self) -> np.ndarray:
        """Each image's confusion matrix, ``[n, K, K + 1]`` (needs ``keep_per_sample=True``)."""
        if not self.keep_per_sample:
            raise RuntimeError("per_sample needs SegmentationMeter(..., keep_per_sample=True)")
        k = self.num_classes
        return torch.stack(self._per_sample).numpy() if self._per_sample else np.zeros((0, k, k + 1), np.int64)

    def merge(self, other: "SegmentationMeter") -> "SegmentationMeter":
        """Add another meter's counts (e.g. gathered from other processes); exact, integer counts."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(f"cannot merge meters for {other.num_classes} classes (ignore {other.ignore_index}) "
                             f"into {self.num_classes} (ignore {self.ignore_index})")
        self._cm += other._cm
        self._per_sample.extend(other._per_sample)
        self.n_images += other.n_images
        return self

    @staticmethod
    def _scores(cm: np.ndarray, k: int) -> dict:
        tp = np.diag(cm[:, :k]).astype(np.float64)
        gt = cm.sum(axis=1).astype(np.float64)           # TP + FN (incl. invalid predictions)
        pr = cm[:, :k].sum(axis=0).astype(np.float64)    # TP + FP
        union = gt + pr - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            cls_acc = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        present = ~np.isnan(iou)
        return {
            "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
            "acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "macc": float(np.nanmean(cls_acc)) if (gt > 0).any() else float("nan"),
            "iou": iou, "cls_acc": cls_acc, "tp": tp, "gt": gt, "pr": pr,
            "n_pixels": int(total), "n_classes_present": int(present.sum()),
        }

    def compute(self) -> dict:
        """Scores of everything accumulated so far.

        Returns:
            dict with ``miou`` (mean IoU over classes present in target or prediction),
            ``acc`` (pixel accuracy), ``macc`` (mean per-class accuracy over classes present
            in the target), ``per_class`` (DataFrame indexed by class name: ``iou``, ``acc``,
            ``gt_pixels``, ``pred_pixels``, ``present``), ``n_pixels`` (valid pixels),
            ``n_images``, ``n_classes_present``.
        """
        s = self._scores(self._cm.numpy(), self.num_classes)
        per_class = pd.DataFrame({
            "class_id": np.arange(self.num_classes),
            "iou": s["iou"], "acc": s["cls_acc"],
            "gt_pixels": s["gt"].astype(np.int64), "pred_pixels": s["pr"].astype(np.int64),
            "present": ~np.isnan(s["iou"]),
        }, index=pd.Index(self.class_names, name="class"))
        return {"miou": s["miou"], "acc": s["acc"], "macc": s["macc"], "per_class": per_class,
                "n_pixels": s["n_pixels"], "n_images": self.n_images,
                "n_classes_present": s["n_classes_present"]}

    def bootstrap(self, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
        """Percentile bootstrap CIs of mIoU and accuracy, resampling images.

        Needs ``keep_per_sample=True``. Each resample sums the chosen images' confusion
        matrices and recomputes the set-level scores (not a mean of per-image scores).

        Returns:
            ``{"miou": (low, high), "acc": (low, high), "n_boot": n_boot}``.
        """
        if not self.keep_per_sample:
            raise RuntimeError("bootstrap needs SegmentationMeter(..., keep_per_sample=True)")
        if len(self._per_sample) < 2:
            return {"miou": (float("nan"),) * 2, "acc": (float("nan"),) * 2, "n_boot": n_boot}
        cms = torch.stack(self._per_sample).numpy()
        rng = np.random.default_rng(seed)
        mi, ac = np.empty(n_boot), np.empty(n_boot)
        for b in range(n_boot):
            s = self._scores(cms[rng.integers(0, len(cms), len(cms))].sum(axis=0), self.num_classes)
            mi[b], ac[b] = s["miou"], s["acc"]
        a = (1 - ci) / 2
        return {"miou": (float(np.nanquantile(mi, a)), float(np.nanquantile(mi, 1 - a))),
                "acc": (float(np.quantile(ac, a)), float(np.quantile(ac, 1 - a))), "n_boot": n_boot}


class Segmenter(Protocol):
    """What :func:`evaluate_segmentation` needs from a segmenter."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Images float ``[B, 3, H, W]`` in ``[-1, 1]`` to dataset label ids ``[B, H, W]``."""
        ...


class HFSegmenter:
    """A transformers semantic-segmentation model (SegFormer, UperNet, ...) from a local folder.

    The folder is what ``save_pretrained`` writes (``config.json``, weights and, optionally,
    ``preprocessor_config.json``); nothing is fetched from a hub (``local_files_only``).
    Images are normalised with the processor's ``image_mean`` / ``image_std`` (ImageNet
    values when the folder has no processor config), optionally resized to ``input_size``,
    the logits are upsampled bilinearly to the image size, and the argmax model class is
    mapped to a dataset label id.

    Args:
        folder: local model folder.
        label_map: model class id -> dataset label id, as a dict (model ids missing from it
            map to ``unmapped_id``) or a sequence of length ``num_labels``. ``None``:
            identity. Examples: Cityscapes SegFormer predicts the 19 train ids, identity for a
            train-id dataset; ADE20K SegFormer predicts 0..149 for the dataset's 1..150
            (0 = "other"), so ``{i: i + 1 for i in range(150)}``.
        unmapped_id: dataset id for unmapped model classes (counts as a wrong prediction).
        input_size: ``(H, W)`` to resize to before the model (``None``: the image's size).
        device: torch device.
    """

    def __init__(self, folder: str | os.PathLike, label_map: Mapping[int, int] | Sequence[int] | None = None,
                 unmapped_id: int = 255, input_size: tuple[int, int] | None = None,
                 device: str | torch.device = "cpu"):
        from transformers import AutoModelForSemanticSegmentation  # about a second to import: only for HF models

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model in {folder} (config.json missing)")
        self.device = torch.device(device)
        self.model = AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
        self.model = self.model.to(self.device).eval()
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        proc = folder / "preprocessor_config.json"
        if proc.is_file():
            cfg = json.loads(proc.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
            if cfg.get("do_normalize", True) is False:
                mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.input_size = tuple(input_size) if input_size is not None else None
        n = int(self.model.config.num_labels)
        if label_map is None:
            lut = torch.arange(n)
        elif isinstance(label_map, Mapping):
            lut = torch.full((n,), int(unmapped_id), dtype=torch.int64)
            for k, v in label_map.items():
                if not 0 <= int(k) < n:
                    raise ValueError(f"label_map key {k} outside the model's {n} classes")
                lut[int(k)] = int(v)
        else:
            lut = torch.as_tensor(list(label_map), dtype=torch.int64)
            if lut.numel() != n:
                raise ValueError(f"label_map has {lut.numel()} entries, the model has {n} classes")
        self.lut = lut
        self.num_model_labels = n

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Model logits ``[B, num_labels, H, W]`` at the input images' size."""
        x = (images.float().to(self.device) + 1.0) / 2.0
        h, w = x.shape[-2:]
        if self.input_size is not None and self.input_size != (h, w):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        out = self.model(pixel_values=x).logits
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Dataset label ids ``[B, H, W]`` (int64) for images ``[B, 3, H, W]`` in ``[-1, 1]``."""
        return self.lut[self.logits(images).argmax(dim=1).cpu()]


def evaluate_segmentation(images, labels, segmenter: Segmenter, num_classes: int,
                          ignore_index: int | None = 255, class_names: Sequence[str] | None = None,
                          batch_size: int = 32, value_range: tuple[float, float] = (-1.0, 1.0),
                          keep_per_sample: bool = False, progress: bool = True) -> dict:
    """Segment images and score the predictions against label maps.

    Args:
        images: image source (tensor / array in ``value_range`` or uint8, folder, file list).
        labels: label maps ``[N, H, W]`` (tensor / array) or a folder / file list of label
            PNGs, in the same order as the images (two folders must pair up by file stem).
        segmenter: anything with ``predict(images [-1, 1]) -> [B, H, W]``.
        num_classes, ignore_index, class_names: as in :class:`SegmentationMeter`.
        batch_size: images per forward pass.
        value_range: range of float image input.
        keep_per_sample: keep per-image confusion matrices; the result then has ``ci``.
        progress: show a tqdm bar.

    Returns:
        :meth:`SegmentationMeter.compute`'s dict (plus ``ci`` from :meth:`~SegmentationMeter.bootstrap`
        when ``keep_per_sample``).
    """
    if isinstance(images, (str, os.PathLike)) and isinstance(labels, (str, os.PathLike)):
        si = [p.stem for p in list_image_files(images)]
        sl = [p.stem for p in list_image_files(labels)]
        if si != sl:
            raise ValueError(f"image and label folders do not pair up by file name "
                             f"(first difference: {next((a, b) for a, b in zip(si + [None], sl + [None]) if a != b)})")
    meter = SegmentationMeter(num_classes, ignore_index, class_names, keep_per_sample)
    n = source_length(images)
    bar = tqdm(total=n, desc="segmentation", unit="img", disable=not progress)
    lab_iter = iter_label_batches(labels, batch_size)
    for x in iter_image_batches(images, batch_size, value_range):
        y = next(lab_iter, None)
        if y is None or y.shape[0] != x.shape[0]:
            raise ValueError("images and label maps differ in number")
        meter.update(segmenter.predict(x * 2.0 - 1.0).cpu(), y)
        bar.update(x.shape[0])
    bar.close()
    if next(lab_iter, None) is not None:
        raise ValueError("more label maps than images")
    out = meter.compute()
    if keep_per_sample:
        out["ci"] = meter.bootstrap()
    return out
