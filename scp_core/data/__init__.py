"""Datasets of the study: toy-city (the embedded default) and the real-scale loaders.

See ``data/README.md`` for where each real dataset goes and its expected layout.
"""
from .palettes import (ADE20K_CLASSES, ADE20K_PALETTE, CAMVID_CLASSES, CAMVID_PALETTE,
                       CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_LABELS,
                       CITYSCAPES_PALETTE, COCO_STUFF_CLASSES, COCO_STUFF_PALETTE, TOY_CLASSES,
                       TOY_PALETTE)
from .batches import images_labels, to_float, to_uint8
from .transforms import colorize, control_map, one_hot, resize_image, resize_labels
from .base import REPO_ROOT, SegDataset, resolve_root
from .toy_city import GENERATOR_VERSION, ToyCity, ensure_toy_city, generate_toy_city
from .datasets import (ADE20K, CAMVID_DUSK_HOLDOUT, DATASETS, CamVid, Cityscapes, COCOStuff, dataset_at_size,
                       dataset_splits, get_dataset)

__all__ = [
    "TOY_CLASSES", "TOY_PALETTE", "generate_toy_city", "ensure_toy_city", "ToyCity",
    "GENERATOR_VERSION", "Cityscapes", "ADE20K", "COCOStuff", "CamVid", "CAMVID_DUSK_HOLDOUT", "DATASETS",
    "get_dataset", "dataset_splits", "dataset_at_size",
    "images_labels", "to_float", "to_uint8", "control_map", "one_hot", "colorize", "resize_image", "resize_labels",
    "SegDataset", "REPO_ROOT", "resolve_root",
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "CITYSCAPES_LABELS", "CITYSCAPES_ID_TO_TRAINID",
    "ADE20K_CLASSES", "ADE20K_PALETTE", "COCO_STUFF_CLASSES", "COCO_STUFF_PALETTE",
    "CAMVID_CLASSES", "CAMVID_PALETTE",
]
