"""Class names, official colour palettes and id tables of every dataset the study uses.

The colour-coded label map (palette colour / 255) is the paper's ControlNet conditioning,
so each dataset keeps its *official* palette where one exists:

* Cityscapes: the 19 train ids with the colours of ``cityscapesscripts.helpers.labels``
  (the full 34-id table is embedded below and checked against that package by the tests).
* ADE20K (SceneParsing, 150 classes): the palette of the CSAIL / mmsegmentation code,
  which ControlNet's own segmentation annotator uses. It gives "road" (5) and "skyscraper"
  (48) the same colour (140, 140, 140); kept as is, since that is the conditioning the
  published models saw (use :func:`one_hot` where the two must differ).
* COCO-Stuff (182 ids, things + stuff): there is no official colour map for thing+stuff
  label maps, so ids ``0..181`` take the PASCAL VOC bit-interleaved colour map of
  ``id + 1`` (the ``labelcolormap`` SPADE uses for COCO-Stuff); black stays "unlabeled".
* CamVid (SegNet's 11 classes): the SegNet tutorial colours.
* toy-city: a 10-class subset of Cityscapes, in Cityscapes train-id order, Cityscapes colours.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "CityscapesLabel", "CITYSCAPES_LABELS", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE",
    "CITYSCAPES_ID_TO_TRAINID", "ADE20K_CLASSES", "ADE20K_PALETTE", "COCO_STUFF_CLASSES",
    "COCO_STUFF_PALETTE", "COCO_STUFF_UNUSED_IDS", "CAMVID_CLASSES", "CAMVID_PALETTE",
    "TOY_CLASSES", "TOY_PALETTE", "voc_colormap",
]


def _palette(rows) -> np.ndarray:
    out = np.asarray(rows, dtype=np.uint8).reshape(-1, 3)
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------- Cityscapes
class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    color: tuple[int, int, int]


# The official table (cityscapesscripts/helpers/labels.py): name, labelId, trainId, colour.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in [
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
])

_train = sorted((l for l in CITYSCAPES_LABELS if 0 <= l.train_id < 255), key=lambda l: l.train_id)
CITYSCAPES_CLASSES: list[str] = [l.name for l in _train]
CITYSCAPES_PALETTE = _palette([l.color for l in _train])
# labelId (0..33) -> trainId (0..18, 255 ignored). license plate (-1) never occurs in the PNGs.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {l.id: l.train_id for l in CITYSCAPES_LABELS if l.id >= 0}
del _train

# ------------------------------------------------------------------------------- ADE20K
ADE20K_CLASSES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]
ADE20K_PALETTE = _palette([
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
    [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
    [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
    [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
    [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
    [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
    [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
    [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133],
    [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0],
    [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
    [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
    [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255],
    [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255],
    [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255],
    [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255],
    [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
    [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255],
    [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0],
    [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255],
    [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
])


# --------------------------------------------------------------------------- COCO-Stuff
def voc_colormap(n: int) -> np.ndarray:
    """The PASCAL VOC colour map: the bits of ``i`` interleaved into R, G, B (``[n, 3]`` uint8)."""
    i = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = i.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)


# stuffthingmaps ids 0..181 (COCO category id - 1); things 0..90, stuff 91..181.
COCO_STUFF_CLASSES: list[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror",
    "dining table", "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
]
# The 11 COCO thing ids that were never annotated (they never occur in the maps).
COCO_STUFF_UNUSED_IDS: tuple[int, ...] = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_PALETTE = _palette(voc_colormap(len(COCO_STUFF_CLASSES) + 1)[1:])

# ------------------------------------------------------------------------------- CamVid
CAMVID_CLASSES: list[str] = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol",
                             "fence", "car", "pedestrian", "bicyclist"]
CAMVID_PALETTE = _palette([
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
])

# ----------------------------------------------------------------------------- toy-city
TOY_CLASSES: list[str] = ["road", "sidewalk", "building", "pole", "traffic sign", "vegetation",
                          "terrain", "sky", "person", "car"]
_CS = {name: color for name, _, t, color in CITYSCAPES_LABELS if 0 <= t < 255}
TOY_PALETTE = _palette([_CS[name] for name in TOY_CLASSES])
del _CS

assert len(CITYSCAPES_CLASSES) == 19 and len(ADE20K_CLASSES) == 150 == len(ADE20K_PALETTE)
assert len(COCO_STUFF_CLASSES) == 182 == len(COCO_STUFF_PALETTE) and len(CAMVID_PALETTE) == 11
