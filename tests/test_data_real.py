"""Real-dataset loaders on tiny fixtures in each dataset's exact layout, and the mask transforms."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import scp_core  # noqa: F401  (before anything that may import torchvision)
from scp_core.data import (ADE20K, CITYSCAPES_LABELS, COCOStuff, CamVid, Cityscapes, ToyCity,
                           colorize, control_map, get_dataset, one_hot, resize_image, resize_labels)
from scp_core.labels import downsample_labels

H, W = 12, 16
rng = np.random.default_rng(0)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _jpg(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def _rgb(h=H, w=W):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ids(values, h=H, w=W):
    """A label map holding every id in ``values`` (cycled over the pixels)."""
    v = np.asarray(values, np.uint8)
    return np.resize(v, h * w).reshape(h, w)


# --------------------------------------------------------------------------- Cityscapes
CS_IDS = list(range(34))
CS_NAMES = [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"), ("bochum", "bochum_000000_000313")]


def _cityscapes(root: Path, split="train", ids=CS_IDS):
    for k, (city, stem) in enumerate(CS_NAMES):
        _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _rgb())
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", np.roll(_ids(ids), k))
        # the other gtFine files of the official release sit beside it and must be ignored
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", _rgb())
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", _ids([0]))
    return root


def test_cityscapes_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = [(l.name, l.id, l.trainId, tuple(l.color)) for l in labels.labels]
    ours = [(l.name, l.id, l.train_id, tuple(l.color)) for l in CITYSCAPES_LABELS]
    assert ours == official
    train = sorted((l for l in labels.labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)
    assert Cityscapes.class_names == [l.name for l in train]
    assert [tuple(c) for c in Cityscapes.palette.tolist()] == [tuple(l.color) for l in train]


def test_cityscapes_loader_converts_label_ids_to_train_ids(tmp_path):
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    root = _cityscapes(tmp_path / "cityscapes")
    ds = Cityscapes(root, "train", size=(H, W))
    assert len(ds) == 3 and ds.num_classes == 19 and ds.ignore_index == 255
    assert [name for name, _, _ in ds.files] == sorted(stem for _, stem in CS_NAMES)
    id2train = {l.id: (255 if l.trainId in (-1, 255) else l.trainId) for l in labels.labels if l.id >= 0}
    for i, (name, _, lp) in enumerate(ds.files):
        item = ds[i]
        raw = np.asarray(Image.open(lp))
        expected = np.vectorize(id2train.get)(raw)
        assert item["name"] == name
        np.testing.assert_array_equal(item["labels"].numpy(), expected)
        assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
        assert item["labels"].dtype == torch.int64
    assert set(np.unique(ds[0]["labels"].numpy())) == set(range(19)) | {255}


def test_cityscapes_default_size_and_resizing(tmp_path):
    root = _cityscapes(tmp_path / "cs")
    ds = Cityscapes(root, "train")
    assert ds.size == Cityscapes.size == (512, 1024)
    item = ds[0]
    assert item["image"].shape == (3, 512, 1024) and item["labels"].shape == (512, 1024)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    small = Cityscapes(root, "train", size=(6, 8))[0]["labels"].numpy()
    assert set(np.unique(small)) <= set(np.unique(Cityscapes(root, "train", size=(H, W))[0]["labels"].numpy()))


# ------------------------------------------------------------------------------- ADE20K
def _ade(root: Path, sub="training", prefix="ADE_train", ids=(0, 1, 2, 13, 149, 150)):
    base = root / "ADEChallengeData2016"
    for k in (1, 2):
        _jpg(base / "images" / sub / f"{prefix}_{k:08d}.jpg", _rgb())
        _png(base / "annotations" / sub / f"{prefix}_{k:08d}.png", _ids(ids))
    return root


def test_ade20k_loader_maps_other_to_ignore(tmp_path):
    root = _ade(tmp_path / "ade20k")
    ds = ADE20K(root, "train", size=(H, W))
    assert len(ds) == 2 and ds.num_classes == 150 and ds.ignore_index == 255
    item = ds[0]
    assert item["name"] == "ADE_train_00000001"
    expected = _ids((255, 0, 1, 12, 148, 149))
    np.testing.assert_array_equal(item["labels"].numpy(), expected)
    assert ds.class_names[0] == "wall" and ds.class_names[149] == "flag"
    # the root may also be the ADEChallengeData2016 folder itself; "val" is "validation"
    _ade(tmp_path / "ade20k", "validation", "ADE_val")
    assert len(ADE20K(root / "ADEChallengeData2016", "val", size=(H, W))) == 2
    assert ADE20K(root, "train").size == (512, 512)


# --------------------------------------------------------------------------- COCO-Stuff
def test_coco_stuff_loader_keeps_ids_and_unlabeled(tmp_path):
    root = tmp_path / "coco-stuff"
    ids = (0, 1, 90, 91, 123, 181, 255)
    for stem in ("000000000139", "000000000285"):
        _jpg(root / "images" / "val2017" / f"{stem}.jpg", _rgb())
        _png(root / "annotations" / "val2017" / f"{stem}.png", _ids(ids))
    ds = COCOStuff(root, "val", size=(H, W))
    assert len(ds) == 2 and ds.num_classes == 182 and ds.ignore_index == 255
    assert ds[1]["name"] == "000000000285"
    np.testing.assert_array_equal(ds[0]["labels"].numpy(), _ids(ids))
    assert ds.size == (H, W) and COCOStuff.size == (384, 512)
    assert (len({tuple(c) for c in ds.palette.tolist()}) == 182
            and (0, 0, 0) not in {tuple(c) for c in ds.palette.tolist()})
    # the COCO download layout: val2017/ and stuffthingmaps_trainval2017/val2017/
    alt = tmp_path / "coco2"
    _jpg(alt / "val2017" / "000000000139.jpg", _rgb())
    _png(alt / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png", _ids(ids))
    assert len(COCOStuff(alt, "val", size=(H, W))) == 1


# ------------------------------------------------------------------------------- CamVid
def _camvid(root: Path):
    for split in ("train", "val", "test"):
        for stem in ("0001TP_006690", "Seq05VD_f00000"):
            _png(root / split / f"{stem}.png", _rgb(36, 48))
            _png(root / f"{split}annot" / f"{stem}.png", _ids(range(12), 36, 48))
    return root


def test_camvid_loader_segnet_layout(tmp_path):
    root = _camvid(tmp_path / "camvid")
    for split in ("train", "val", "test"):
        ds = CamVid(root, split, size=(36, 48))
        assert len(ds) == 2 and ds.num_classes == 11 and ds.ignore_index == 11
        np.testing.assert_array_equal(ds[0]["labels"].numpy(), _ids(range(12), 36, 48))
    assert ds[0]["name"] == "0001TP_006690"
    assert CamVid(root, "train").size == (384, 512)
    assert CamVid(root, "train")[0]["image"].shape == (3, 384, 512)


# ------------------------------------------------------------------------------- errors
LAYOUT_HINT = {"cityscapes": "leftImg8bit", "ade20k": "ADEChallengeData2016",
               "coco-stuff": "stuffthingmaps", "camvid": "trainannot"}


@pytest.mark.parametrize("name", sorted(LAYOUT_HINT))
def test_missing_root_names_layout_and_readme(tmp_path, name):
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(name, root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "data/README.md" in msg and LAYOUT_HINT[name] in msg and str(tmp_path / "nowhere") in msg


def test_image_label_count_mismatch(tmp_path):
    root = _cityscapes(tmp_path / "cs")
    _png(root / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000999_leftImg8bit.png", _rgb())
    with pytest.raises(ValueError, match=r"4 images but 3 label maps.*bochum_000000_000999"):
        Cityscapes(root, "train")
    root = _camvid(tmp_path / "camvid")
    (root / "val" / "Seq05VD_f00000.png").unlink()
    with pytest.raises(ValueError, match=r"1 images but 2 label maps.*Seq05VD_f00000"):
        CamVid(root, "val")


def test_empty_split_is_reported(tmp_path):
    (tmp_path / "cs" / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        Cityscapes(tmp_path / "cs", "val")


def test_unreadable_file_is_named(tmp_path):
    root = _camvid(tmp_path / "camvid")
    bad = root / "trainannot" / "0001TP_006690.png"
    bad.write_bytes(b"this is not a png")
    ds = CamVid(root, "train", size=(36, 48))
    with pytest.raises(ValueError, match="0001TP_006690.png"):
        ds[0]
    (root / "train" / "Seq05VD_f00000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cannot read image .*Seq05VD_f00000.png"):
        ds[1]


@pytest.mark.parametrize("cls,bad_id", [(Cityscapes, 34), (ADE20K, 151), (COCOStuff, 182), (CamVid, 12)])
def test_ids_outside_the_label_set(tmp_path, cls, bad_id):
    root = tmp_path / "d"
    if cls is Cityscapes:
        _cityscapes(root, ids=[7, bad_id])
        split = "train"
    elif cls is ADE20K:
        _ade(root, ids=(1, bad_id))
        split = "train"
    elif cls is COCOStuff:
        _jpg(root / "images" / "train2017" / "000000000009.jpg", _rgb())
        _png(root / "annotations" / "train2017" / "000000000009.png", _ids((3, bad_id)))
        split = "train"
    else:
        _camvid(root)
        _png(root / "trainannot" / "0001TP_006690.png", _ids((1, bad_id), 36, 48))
        split = "train"
    ds = cls(root, split, size=(8, 8))
    i = 0 if cls is not CamVid else [n for n, _, _ in ds.files].index("0001TP_006690")
    with pytest.raises(ValueError, match=rf"\[{bad_id}\].*outside the {cls.name} label set") as e:
        ds[i]
    assert str(ds.files[i][2]) in str(e.value)


def test_colour_label_png_is_rejected(tmp_path):
    root = _camvid(tmp_path / "camvid")
    _png(root / "testannot" / "0001TP_006690.png", _rgb(36, 48))
    with pytest.raises(ValueError, match="single-channel"):
        CamVid(root, "test")[0]


def test_unknown_split_and_dataset():
    with pytest.raises(ValueError, match="split"):
        Cityscapes("/nonexistent", "training")
    with pytest.raises(ValueError, match="known: toy-city"):
        get_dataset("pascal-voc")


def test_every_dataset_has_the_common_attributes():
    expected = {Cityscapes: (19, 255, "City road scenes", (512, 1024)),
                ADE20K: (150, 255, "Photorealistic and diverse images depicting various scenes", (512, 512)),
                COCOStuff: (182, 255, "high quality, detailed", (384, 512)),
                CamVid: (11, 11, "City road scenes", (384, 512)),
                ToyCity: (10, None, "City road scenes", (64, 128))}
    for cls, (k, ignore, prompt, size) in expected.items():
        assert (cls.num_classes, cls.ignore_index, cls.prompt, cls.size) == (k, ignore, prompt, size), cls
        assert len(cls.class_names) == k and cls.palette.shape == (k, 3) and cls.palette.dtype == np.uint8
        colours = [tuple(c) for c in cls.palette.tolist()]
        dup = {c for c in colours if colours.count(c) > 1}
        # the official ADE20K palette repeats one grey for road (6) and skyscraper (48)
        assert dup == ({(140, 140, 140)} if cls is ADE20K else set()), cls.name
    assert ADE20K.class_names[6] == "road" and ADE20K.class_names[48] == "skyscraper"


# --------------------------------------------------------------------------- transforms
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), oh=st.integers(1, 40), ow=st.integers(1, 40),
       k=st.integers(1, 256), seed=st.integers(0, 2**16))
def test_nearest_resizing_never_creates_an_id(h, w, oh, ow, k, seed):
    r = np.random.default_rng(seed)
    lab = r.integers(0, k, (h, w)).astype(np.uint8)
    out = resize_labels(lab, (oh, ow))
    assert out.shape == (oh, ow) and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(lab))
    t = resize_labels(torch.from_numpy(lab).long()[None], (oh, ow))
    assert t.shape == (1, oh, ow) and t.dtype == torch.int64
    np.testing.assert_array_equal(t[0].numpy(), out)
    np.testing.assert_array_equal(out, downsample_labels(lab, (oh, ow)).numpy())
    pil = resize_labels(Image.fromarray(lab), (oh, ow))
    np.testing.assert_array_equal(np.asarray(pil), out)


def test_resize_labels_picks_cell_centres():
    lab = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_labels(lab, (2, 2)), [[5, 7], [13, 15]])
    np.testing.assert_array_equal(resize_labels(lab[:2, :2], (4, 4)), np.kron([[0, 1], [4, 5]], np.ones((2, 2))))


def test_resize_image_is_antialiased_bilinear():
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, -1)
    small = resize_image(img, (8, 8))
    assert small.shape == (8, 8, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(int) - 127.5).max() <= 2  # antialiased: the checkerboard averages out
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
    ts = resize_image(t, (8, 8))
    assert ts.shape == (3, 8, 8) and ts.abs().max() < 0.02
    assert resize_image(t[None], (8, 8)).shape == (1, 3, 8, 8)
    pil = resize_image(Image.fromarray(img), (8, 16))
    assert isinstance(pil, Image.Image) and pil.size == (16, 8)
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.float64), (16, 1)).astype(np.uint8)
    up = resize_image(np.repeat(smooth[..., None], 3, -1), (16, 128))[..., 0].astype(int)
    assert (np.diff(up[8]) >= -1).all()  # a ramp stays a ramp


def test_control_map_one_hot_and_colorize():
    pal = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    lab = torch.tensor([[[0, 1], [2, 255]], [[2, 2], [1, 0]]])
    cm = control_map(lab, pal, ignore_index=255)
    assert cm.shape == (2, 3, 2, 2) and cm.dtype == torch.float32
    assert torch.equal(cm[0, :, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(cm[0, :, 1, 0], torch.tensor([0.0, 0, 1]))
    assert torch.equal(cm[0, :, 1, 1], torch.zeros(3))  # ignored: black
    assert control_map(lab[1].numpy(), pal).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="255"):
        control_map(lab, pal)  # 255 without ignore_index is an error
    oh = one_hot(lab, 3, ignore_index=255)
    assert oh.shape == (2, 3, 2, 2)
    assert torch.equal(oh.sum(1), torch.tensor([[[1.0, 1], [1, 0]], [[1, 1], [1, 1]]]))
    assert torch.equal(oh.argmax(1)[1], lab[1])
    assert one_hot(lab[1], 3).shape == (3, 2, 2)
    with pytest.raises(ValueError):
        one_hot(lab, 3)
    rgb = colorize(lab, pal)
    assert rgb.shape == (2, 2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 1].tolist() == [0, 255, 0] and rgb[0, 1, 1].tolist() == [0, 0, 0]


def test_real_dataset_control_maps_use_the_official_palette(tmp_path):
    ds = Cityscapes(_cityscapes(tmp_path / "cs"), "train", size=(H, W))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    cm = control_map(batch["labels"], ds.palette, ds.ignore_index)
    assert cm.shape == (3, 3, H, W)
    road = batch["labels"] == 0
    assert torch.allclose(cm.permute(0, 2, 3, 1)[road], torch.tensor([128, 64, 128]) / 255.0)
    assert (cm.permute(0, 2, 3, 1)[batch["labels"] == 255] == 0).all()
