"""Real-scale datasets in their standard layouts (see ``data/README.md``), and the registry.

Every loader returns ``{"image": float32 [3, H, W] in [-1, 1], "labels": int64 [H, W],
"name": str}`` at the paper's size: images resized with antialiased bilinear, label maps
with nearest selection only. Label ids are mapped to ``0..num_classes-1`` plus the
dataset's ``ignore_index``:

* Cityscapes: ``*_gtFine_labelIds.png`` ids 0..33 -> the 19 train ids of the official
  table, everything else 255 (ignored).
* ADE20K: id 0 ("other") -> 255 (ignored), ids 1..150 -> 0..149.
* COCO-Stuff: ``stuffthingmaps`` ids 0..181 kept, 255 unlabeled (ignored).
* CamVid (SegNet): ids 0..10 kept, 11 = void (ignored).

Any other id in a file is an error that names the file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import DATA_README, SegDataset, resolve_root
from .batches import to_float
from .palettes import (ADE20K_CLASSES, ADE20K_PALETTE, CAMVID_CLASSES, CAMVID_PALETTE,
                       CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_PALETTE,
                       COCO_STUFF_CLASSES, COCO_STUFF_PALETTE)
from .toy_city import TOY_PROMPT, ToyCity
from .transforms import resize_image, resize_labels

__all__ = ["Cityscapes", "ADE20K", "COCOStuff", "CamVid", "CAMVID_DUSK_HOLDOUT", "DATASETS", "dataset_splits",
           "get_dataset", "read_image", "read_labels"]


def read_image(path: Path) -> Image.Image:
    """An RGB image, or a ValueError that names the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def read_labels(path: Path) -> np.ndarray:
    """A single-channel id map as an integer array, or a ValueError that names the file."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read label map {path}: {e}") from e
    if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"label map {path} has mode {mode}: expected a single-channel PNG of "
                         "class ids (not a colour-coded visualisation)")
    return arr


def _lut(table: dict[int, int]) -> np.ndarray:
    """id -> mapped id over 0..65535; -1 marks ids outside the label set."""
    lut = np.full(65536, -1, np.int32)
    for k, v in table.items():
        lut[k] = v
    return lut


class _FileDataset(SegDataset):
    """Pairs of image / label files found under ``root`` in a dataset's standard layout."""

    default_root = ""
    layout = ""  # human-readable expected layout, quoted in errors
    splits: dict[str, str] = {}  # accepted split name -> folder name
    id_map: dict[int, int] = {}

    def __init__(self, root=None, split: str = "train", size=None):
        self.root = resolve_root(root if root is not None else self.default_root)
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {sorted(self.splits)}")
        self.split = split
        self.size = tuple(int(s) for s in (size if size is not None else self.default_size))
        self._map = _lut(self.id_map)
        images, labels = self._find()
        self.files = self._pair(images, labels)

    # -- layout
    def _missing(self, what: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.name} not found: {what}. Expected layout under the root ({self.root}):\n"
            f"{self.layout}\nSee {DATA_README} for where to put the dataset.")

    def _find(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """key -> image path, key -> label path."""
        raise NotImplementedError

    @classmethod
    def split_folders(cls, root: Path, split: str) -> list[Path]:
        """The image and label folders of ``split`` under ``root`` in this layout, named without opening any (what
        ``scpdiff reproduce`` checks before a notebook starts); empty where the layout has alternatives."""
        return []

    def _split_folders(self) -> tuple[Path, Path]:
        """This split's image and label folders; ``FileNotFoundError`` naming the layout where one is missing."""
        img_dir, lab_dir = self.split_folders(self.root, self.split)
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise self._missing(f"{d} does not exist")
        return img_dir, lab_dir

    def _pair(self, images: dict[str, Path], labels: dict[str, Path]) -> list[tuple[str, Path, Path]]:
        if not images:
            raise self._missing(f"no images for split {self.split!r}")
        if images.keys() != labels.keys():
            no_lab = sorted(images.keys() - labels.keys())
            no_img = sorted(labels.keys() - images.keys())
            raise ValueError(
                f"{self.name} {self.split}: {len(images)} images but {len(labels)} label maps, "
                f"not one label map per image. Images without labels: {no_lab[:5]}"
                f"{' ...' if len(no_lab) > 5 else ''}; labels without images: {no_img[:5]}"
                f"{' ...' if len(no_img) > 5 else ''}. See {DATA_README}.")
        return [(self._item_name(k), images[k], labels[k]) for k in sorted(images)]

    def _item_name(self, key: str) -> str:
        return key

    # -- items
    def __len__(self) -> int:
        return len(self.files)

    def convert_labels(self, raw: np.ndarray, path="labels") -> np.ndarray:
        """Map raw file ids to ``0..K-1`` / ``ignore_index``; unknown ids raise, naming ``path``."""
        raw = np.asarray(raw)
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= len(self._map)):
            bad = np.unique(raw[(raw < 0) | (raw >= len(self._map))])[:10].tolist()
            raise ValueError(f"{path}: label ids {bad} are outside the {self.name} label set")
        out = self._map[raw]
        if (out < 0).any():
            bad = np.unique(raw[out < 0])[:10].tolist()
            raise ValueError(f"{path}: label ids {bad} are outside the {self.name} label set "
                             f"(expected {self._id_doc()})")
        return out.astype(np.uint8)

    def _id_doc(self) -> str:
        return f"ids {sorted(self.id_map)[0]}..{sorted(self.id_map)[-1]}"

    def __getitem__(self, i: int) -> dict:
        name, ip, lp = self.files[i]
        img = read_image(ip)
        lab = self.convert_labels(read_labels(lp), lp)
        if lab.shape != (img.height, img.width):
            raise ValueError(f"{lp}: label map is {lab.shape[1]}x{lab.shape[0]} but image {ip} is "
                             f"{img.width}x{img.height}")
        img = np.asarray(resize_image(img, self.size))
        lab = resize_labels(lab, self.size)
        image = to_float(img[None])[0]
        return {"image": image, "labels": torch.from_numpy(lab.astype(np.int64)), "name": name}


def _glob(folder: Path, pattern: str, strip: str) -> dict[str, Path]:
    return {str(p.relative_to(folder))[: -len(strip)]: p for p in sorted(folder.glob(pattern))}


class Cityscapes(_FileDataset):
    """Cityscapes fine annotations, 19 train ids (255 ignored), 512 x 1024 by default."""

    name = "cityscapes"
    default_root = "data/cityscapes"
    layout = ("  leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png\n"
              "  gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png")
    splits = {"train": "train", "val": "val", "test": "test"}
    id_map = CITYSCAPES_ID_TO_TRAINID
    class_names = list(CITYSCAPES_CLASSES)
    palette = CITYSCAPES_PALETTE
    num_classes = 19
    ignore_index = 255
    prompt = "City road scenes"
    default_size = size = (512, 1024)

    @classmethod
    def split_folders(cls, root, split):
        return [Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split]

    def _find(self):
        img_dir, lab_dir = self._split_folders()
        return (_glob(img_dir, "*/*_leftImg8bit.png", "_leftImg8bit.png"),
                _glob(lab_dir, "*/*_gtFine_labelIds.png", "_gtFine_labelIds.png"))

    def _item_name(self, key):
        return key.split("/")[-1]

    def _id_doc(self):
        return "Cityscapes labelIds 0..33 (use *_gtFine_labelIds.png, not trainIds or colour PNGs)"


class ADE20K(_FileDataset):
    """ADE20K SceneParsing (ADEChallengeData2016): 150 classes, 0 = other -> 255 ignored."""

    name = "ade20k"
    default_root = "data/ade20k"
    layout = ("  ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg\n"
              "  ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_%08d.png\n"
              "  (root may also be the ADEChallengeData2016 folder itself)")
    splits = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
    id_map = {0: 255, **{i: i - 1 for i in range(1, 151)}}
    class_names = list(ADE20K_CLASSES)
    palette = ADE20K_PALETTE
    num_classes = 150
    ignore_index = 255
    prompt = "Photorealistic and diverse images depicting various scenes"
    default_size = size = (512, 512)

    @classmethod
    def split_folders(cls, root, split):
        base = Path(root) / "ADEChallengeData2016"
        base = base if base.is_dir() else Path(root)
        return [base / "images" / cls.splits[split], base / "annotations" / cls.splits[split]]

    def _find(self):
        img_dir, lab_dir = self._split_folders()
        return _glob(img_dir, "*.jpg", ".jpg"), _glob(lab_dir, "*.png", ".png")

    def _id_doc(self):
        return "ids 0..150 (0 = other)"


class COCOStuff(_FileDataset):
    """COCO-Stuff 164k with ``stuffthingmaps`` (ids 0..181, 255 unlabeled), 384 x 512."""

    name = "coco-stuff"
    default_root = "data/coco-stuff"
    layout = ("  images/{train2017,val2017}/%012d.jpg       (or {train2017,val2017}/ directly under the root)\n"
              "  annotations/{train2017,val2017}/%012d.png  (stuffthingmaps_trainval2017.zip unpacked; the\n"
              "                                              folder may also be named stuffthingmaps_trainval2017)")
    splits = {"train": "train2017", "train2017": "train2017", "val": "val2017", "val2017": "val2017"}
    id_map = {**{i: i for i in range(182)}, 255: 255}
    class_names = list(COCO_STUFF_CLASSES)
    palette = COCO_STUFF_PALETTE
    num_classes = 182
    ignore_index = 255
    prompt = "high quality, detailed"
    default_size = size = (384, 512)

    def _find(self):
        sub = self.splits[self.split]
        img_dirs = [self.root / "images" / sub, self.root / sub]
        lab_dirs = [self.root / "annotations" / sub, self.root / "stuffthingmaps_trainval2017" / sub,
                    self.root / "stuffthingmaps" / sub]
        img_dir = next((d for d in img_dirs if d.is_dir()), None)
        lab_dir = next((d for d in lab_dirs if d.is_dir()), None)
        if img_dir is None:
            raise self._missing(f"none of {[str(d) for d in img_dirs]} exists")
        if lab_dir is None:
            raise self._missing(f"none of {[str(d) for d in lab_dirs]} exists")
        return _glob(img_dir, "*.jpg", ".jpg"), _glob(lab_dir, "*.png", ".png")

    def _id_doc(self):
        return "ids 0..181 and 255 (unlabeled)"


# The last 12 frames (by frame number) of the dusk sequence 0001TP, held out of every training
# and prior set by the camvid profile (they serve the global-factor study together with val).
CAMVID_DUSK_HOLDOUT = ("0001TP", 12)


class CamVid(_FileDataset):
    """CamVid in the SegNet layout: 11 classes, 11 = void (ignored); 384 x 512 by default.

    The native 360 x 480 is not a multiple of 64 (SD's UNet halves the 1/8 latent three
    times), so the default is 384 x 512: the same 3:4 aspect, 6.7 % larger.

    Args:
        holdout: ``(sequence, n)``: the last ``n`` frames (by frame number, the digits after
            ``<sequence>_``) of that training sequence are removed from ``split="train"`` and
            form ``split="holdout"`` (e.g. :data:`CAMVID_DUSK_HOLDOUT`). ``None``: no hold-out.
    """

    name = "camvid"
    default_root = "data/camvid"
    layout = ("  train/<name>.png  trainannot/<name>.png   (label PNGs: ids 0..10, 11 = void)\n"
              "  val/<name>.png    valannot/<name>.png\n"
              "  test/<name>.png   testannot/<name>.png")
    splits = {"train": "train", "val": "val", "test": "test", "holdout": "train"}
    id_map = {i: i for i in range(12)}
    class_names = list(CAMVID_CLASSES)
    palette = CAMVID_PALETTE
    num_classes = 11
    ignore_index = 11
    prompt = "City road scenes"
    default_size = size = (384, 512)

    def __init__(self, root=None, split: str = "train", size=None, holdout: tuple[str, int] | None = None):
        if split == "holdout" and not holdout:
            raise ValueError("camvid: split 'holdout' needs holdout=(sequence, n), e.g. CAMVID_DUSK_HOLDOUT")
        self.holdout = (str(holdout[0]), int(holdout[1])) if holdout else None
        super().__init__(root=root, split=split, size=size)

    def held_out(self, names) -> set[str]:
        """The keys of ``names`` held out: the last ``n`` frames of the hold-out sequence."""
        if not self.holdout:
            return set()
        seq, n = self.holdout
        frames = sorted((int(m.group(1)), k) for k in names if (m := re.fullmatch(rf"{re.escape(seq)}_(\d+)", k)))
        return {k for _, k in frames[-n:]} if n > 0 else set()

    @classmethod
    def split_folders(cls, root, split):
        folder = cls.splits[split]  # the hold-out is frames of train/
        return [Path(root) / folder, Path(root) / f"{folder}annot"]

    def _find(self):
        img_dir, lab_dir = self._split_folders()
        images, labels = _glob(img_dir, "*.png", ".png"), _glob(lab_dir, "*.png", ".png")
        if self.split in ("train", "holdout") and self.holdout:
            out = self.held_out(images)
            if self.split == "holdout" and len(out) < self.holdout[1]:
                raise self._missing(f"only {len(out)} frames of sequence {self.holdout[0]} in {img_dir}, "
                                    f"{self.holdout[1]} are held out")
            keep = (lambda k: k in out) if self.split == "holdout" else (lambda k: k not in out)  # noqa: E731
            images = {k: v for k, v in images.items() if keep(k)}
            labels = {k: v for k, v in labels.items() if keep(k)}
        return images, labels

    def _id_doc(self):
        return "ids 0..11 (11 = void)"


def _toy_gv(root=None, split="train", **kw):
    kw.setdefault("global_variation", 1.0)
    return ToyCity(root=root, split=split, **kw)


DATASETS = {
    "toy-city": ToyCity,
    "toy-city-gv": _toy_gv,
    "cityscapes": Cityscapes,
    "ade20k": ADE20K,
    "coco-stuff": COCOStuff,
    "camvid": CamVid,
}
assert ToyCity.prompt == TOY_PROMPT


def _factory(name: str):
    if not isinstance(name, str):
        raise ValueError(f"the dataset name must be a string, got {name!r}; known: {', '.join(DATASETS)}")
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def get_dataset(name: str, root=None, split: str = "train", **kw) -> SegDataset:
    """A dataset by registry name: toy-city, toy-city-gv (global variation 1.0, in
    ``data/toy-city-gv``), cityscapes, ade20k, coco-stuff, camvid. Extra keywords go to the class
    (e.g. ``size=`` for the real ones, ``n_train=`` for toy-city)."""
    return _factory(name)(root=root, split=split, **kw)


def dataset_splits(name: str) -> list[str]:
    """The split names ``get_dataset(name, split=...)`` accepts, read without opening the dataset (camvid's
    ``holdout`` also needs its ``holdout`` option, which the camvid profile gives)."""
    factory = _factory(name)
    return list((ToyCity if factory is _toy_gv else factory).splits)


def dataset_at_size(name: str, root, split: str, size, options: dict | None = None) -> SegDataset:
    """A dataset's split at ``size`` (a pipeline's image size ``(H, W)``; ``None``: its own) unless ``options``
    name a size.

    The one rule the study and the sharded commands read real datasets by: the file datasets resize to any
    size, so a pipeline fine-tuned at 512 x 1024 reads Cityscapes at 512 x 1024; the generated ones (toy-city)
    keep the size they are generated at. ``options``: keywords of the dataset class (CamVid's hold-out).
    """
    options = dict(options or {})
    ds = get_dataset(name, root=root, split=split, **options)
    if size is not None and "size" not in options and hasattr(ds, "files") and tuple(ds.size) != tuple(size):
        ds = get_dataset(name, root=root, split=split, **options, size=tuple(size))
    return ds
