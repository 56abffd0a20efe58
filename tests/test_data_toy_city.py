"""toy-city: determinism, layout as designed, per-image variation, the on-disk cache, the Dataset."""
import json

import numpy as np
import pytest
import torch

import scp_core  # noqa: F401  (before anything that may import torchvision)
from scp_core.data import (CITYSCAPES_LABELS, REPO_ROOT, TOY_CLASSES, TOY_PALETTE, ToyCity,
                           ensure_toy_city, generate_toy_city, get_dataset, resolve_root)
from scp_core.data import toy_city

K = len(TOY_CLASSES)
C = {name: i for i, name in enumerate(TOY_CLASSES)}


@pytest.fixture(scope="module")
def scenes():
    """200 daylight scenes, shared by the statistics tests (about half a second)."""
    return generate_toy_city(200, seed=0)


def test_classes_are_cityscapes_like_with_cityscapes_colours():
    assert len(TOY_CLASSES) >= 8 and len(set(TOY_CLASSES)) == K
    for name in ("sky", "building", "road", "sidewalk", "vegetation", "car", "person", "pole"):
        assert name in TOY_CLASSES
    assert TOY_PALETTE.dtype == np.uint8 and TOY_PALETTE.shape == (K, 3)
    official = {l.name: l.color for l in CITYSCAPES_LABELS}
    for name, color in zip(TOY_CLASSES, TOY_PALETTE):
        assert tuple(int(c) for c in color) == official[name]


def test_shapes_dtypes_and_ids(scenes):
    images, labels = scenes
    assert images.shape == (200, 64, 128, 3) and images.dtype == np.uint8
    assert labels.shape == (200, 64, 128) and labels.dtype == np.uint8
    assert labels.max() < K
    im, lab = generate_toy_city(3, seed=1, size=(40, 96))
    assert im.shape == (3, 40, 96, 3) and lab.shape == (3, 40, 96)


def test_deterministic_and_image_i_independent_of_n():
    a_img, a_lab = generate_toy_city(6, seed=3)
    b_img, b_lab = generate_toy_city(6, seed=3)
    c_img, c_lab = generate_toy_city(2, seed=3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    np.testing.assert_array_equal(a_img[:2], c_img)
    np.testing.assert_array_equal(a_lab[:2], c_lab)
    d_img, d_lab = generate_toy_city(6, seed=4)
    assert not np.array_equal(a_lab, d_lab) and not np.array_equal(a_img, d_img)
    assert len({a_lab[i].tobytes() for i in range(6)}) == 6  # no two scenes alike


def test_global_variation_changes_light_not_layout():
    img0, lab0 = generate_toy_city(4, seed=2, global_variation=0.0)
    img1, lab1 = generate_toy_city(4, seed=2, global_variation=1.0)
    np.testing.assert_array_equal(lab0, lab1)
    assert np.abs(img0.astype(int) - img1.astype(int)).mean() > 5


def test_every_class_present_across_a_split(scenes):
    _, labels = scenes
    counts = np.bincount(labels.ravel(), minlength=K)
    assert (counts > 0).all(), dict(zip(TOY_CLASSES, counts.tolist()))
    per_image = np.stack([(labels == c).any(axis=(1, 2)) for c in range(K)], 1)
    # the scene classes appear in (nearly) every image, objects in many but not all
    for name in ("road", "building", "sky", "vegetation"):
        assert per_image[:, C[name]].mean() > 0.95, name
    for name in ("car", "person", "pole"):
        assert 0.3 < per_image[:, C[name]].mean() < 1.0, name


def _frac(labels, cls):
    return float((labels == cls).mean())


def _class_under(labels, cls):
    """Class frequencies of the pixel just below the lowest ``cls`` pixel of each column."""
    found = []
    for lab in labels:
        m = lab == cls
        for c in np.nonzero(m.any(0))[0]:
            r = np.nonzero(m[:, c])[0].max()
            if r + 1 < lab.shape[0]:
                found.append(lab[r + 1, c])
    return np.bincount(found, minlength=K) / max(len(found), 1)


def test_layout_statistics_as_designed(scenes):
    _, labels = scenes
    H, W = labels.shape[1:]
    top, bottom = labels[:, : H // 8], labels[:, -H // 8:]
    # sky above: the most frequent class in the top rows, absent from the lower half
    assert _frac(top, C["sky"]) > 0.4
    assert np.bincount(top.ravel(), minlength=K).argmax() == C["sky"]
    assert _frac(labels[:, H // 2:], C["sky"]) == 0.0
    # road below: the most frequent class in the bottom rows, never in the top third
    assert _frac(bottom, C["road"]) > 0.5
    assert np.bincount(bottom.ravel(), minlength=K).argmax() == C["road"]
    assert _frac(labels[:, : H // 3], C["road"]) == 0.0
    # sidewalks beside the road: in the bottom rows, more at the sides than in the middle
    assert _frac(bottom, C["sidewalk"]) > 0.05
    sides = np.concatenate([bottom[..., : W // 8], bottom[..., -W // 8:]], -1)
    assert _frac(sides, C["sidewalk"]) > 2 * _frac(bottom[..., 3 * W // 8: 5 * W // 8], C["sidewalk"])
    # buildings at the sides, sky in the middle of the upper half
    upper = labels[:, : H // 3]
    assert _frac(upper[..., : W // 8], C["building"]) > 2 * _frac(upper[..., 7 * W // 16: 9 * W // 16], C["building"])
    assert _frac(upper[..., 7 * W // 16: 9 * W // 16], C["sky"]) > 0.5
    # cars stand on the road and people on the sidewalks: the pixel under an object column
    under = {name: _class_under(labels, C[name]) for name in ("car", "person")}
    assert under["car"][C["road"]] > 0.85
    assert under["person"].argmax() == C["sidewalk"] and under["person"][C["sidewalk"]] > 0.5
    assert _frac(labels[:, : H // 4], C["car"]) == 0.0

def test_real_variation_in_layout_and_appearance(scenes):
    images, labels = scenes
    # layout: the per-pixel class is far from constant over images
    freq = np.stack([(labels == c).mean(0) for c in range(K)])  # [K, H, W]
    assert (freq.max(0) < 0.9).mean() > 0.5
    # appearance: building and car colours differ between images at one lighting regime
    for name in ("building", "car"):
        means = [images[i][labels[i] == C[name]].mean(0) for i in range(len(images))
                 if (labels[i] == C[name]).sum() > 30]
        assert len(means) > 30 and np.std(means, axis=0).mean() > 12, name
    # within an image, facades are textured (windows), not flat
    stds = [images[i][labels[i] == C["building"]].std() for i in range(20)]
    assert np.median(stds) > 10


def test_global_variation_adds_global_lighting_factor():
    img0, _ = generate_toy_city(120, seed=5, global_variation=0.0)
    img1, _ = generate_toy_city(120, seed=5, global_variation=1.0)
    b0 = img0.reshape(120, -1).mean(1) / 255
    b1 = img1.reshape(120, -1).mean(1) / 255
    assert b0.std() < 0.06  # one regime
    assert b1.std() > 2.5 * b0.std() and b1.std() > 0.1  # day / dusk / night, fog, exposure
    assert (b1 < 0.15).mean() > 0.15  # night scenes exist


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="global_variation"):
        generate_toy_city(1, global_variation=1.5)
    with pytest.raises(ValueError):
        generate_toy_city(1, seed=-1)


# ------------------------------------------------------------------------ on-disk cache
def test_ensure_generates_once_then_reuses_and_regenerates(tmp_path, monkeypatch):
    root = tmp_path / "tc"
    kw = dict(n_train=12, n_val=4, size=(32, 64))
    assert ensure_toy_city(root, **kw) == root
    files = toy_city.toy_city_files(root, **kw)
    meta = json.loads(files["meta"].read_text())
    assert meta["generator_version"] == toy_city.GENERATOR_VERSION
    assert meta["n_train"] == 12 and meta["size"] == [32, 64] and meta["global_variation"] == 0.0
    with np.load(files["train"]) as z:
        assert z["images"].shape == (12, 32, 64, 3) and z["labels"].shape == (12, 32, 64)
        np.testing.assert_array_equal(z["labels"], generate_toy_city(12, seed=0, size=(32, 64))[1])
    with np.load(files["val"]) as z:  # validation scenes come from another seed
        np.testing.assert_array_equal(z["labels"], generate_toy_city(4, seed=1, size=(32, 64))[1])
    stamp = files["train"].stat().st_mtime_ns

    ensure_toy_city(root, **kw)  # same parameters: reused
    assert files["train"].stat().st_mtime_ns == stamp

    ensure_toy_city(root, **{**kw, "n_train": 10})  # changed parameters: files of their own
    with np.load(toy_city.toy_city_files(root, **{**kw, "n_train": 10})["train"]) as z:
        assert len(z["labels"]) == 10
    assert files["train"].stat().st_mtime_ns == stamp  # the first parameters' files are untouched

    monkeypatch.setattr(toy_city, "GENERATOR_VERSION", "test-bump")
    bumped = toy_city.toy_city_files(root, **kw)
    assert bumped["train"] != files["train"]  # a new generator version: new files, the old ones untouched
    ensure_toy_city(root, **kw)
    assert json.loads(bumped["meta"].read_text())["generator_version"] == "test-bump"
    assert files["train"].stat().st_mtime_ns == stamp
    assert not list(root.glob(".*"))  # no temporary files left behind


def test_cache_is_keyed_and_never_rewritten_in_place(tmp_path):
    """Another size gets files of its own; the default size keeps the plain names (issue 22)."""
    root = tmp_path / "tc"
    default = toy_city.toy_city_files(root)
    assert [default[k].name for k in ("train", "val", "meta")] == ["train.npz", "val.npz", "meta.json"]
    small = dict(n_train=4000, n_val=500, size=(16, 32))  # default counts, another size
    ensure_toy_city(root, n_train=3, n_val=2, size=(16, 32))
    ensure_toy_city(root, n_train=3, n_val=2, size=(16, 24))
    a = ToyCity(root=root, n_train=3, n_val=2, size=(16, 32))
    b = ToyCity(root=root, n_train=3, n_val=2, size=(16, 24))
    assert a.images.shape == (3, 16, 32, 3) and b.images.shape == (3, 16, 24, 3)
    assert len(list(root.glob("train*.npz"))) == 2 and not (root / "train.npz").exists()
    assert toy_city.toy_city_files(root, **small)["train"].name.startswith("train-")
    # the default counts in a folder whose meta.json describes another generator version: new files too
    (root / "meta.json").write_text(json.dumps({**toy_city._params(4000, 500, (64, 128), 0.0, 0),
                                                "generator_version": "old"}))
    assert toy_city.toy_city_files(root)["train"].name != "train.npz"


def test_damaged_cache_files_are_named_with_the_fix(tmp_path):
    root = tmp_path / "tc"
    kw = dict(n_train=3, n_val=2, size=(16, 32))
    ensure_toy_city(root, **kw)
    path = toy_city.toy_city_files(root, **kw)["train"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="damaged or truncated") as e:
        ToyCity(root=root, **kw)
    assert str(path) in str(e.value) and "delete" in str(e.value)
    images, _ = generate_toy_city(3, size=(16, 32))
    np.savez(path, images=images)  # no labels
    with pytest.raises(ValueError, match="holds no 'labels' array") as e:
        ToyCity(root=root, **kw)
    assert str(path) in str(e.value) and "regenerated on next use" in str(e.value)


def test_ensure_recovers_from_damaged_folder(tmp_path):
    root = tmp_path / "tc"
    ensure_toy_city(root, n_train=3, n_val=2, size=(16, 32))
    files = toy_city.toy_city_files(root, n_train=3, n_val=2, size=(16, 32))
    files["meta"].write_text("{not json")
    ensure_toy_city(root, n_train=3, n_val=2, size=(16, 32))
    assert json.loads(files["meta"].read_text())["n_val"] == 2
    files["val"].unlink()
    ensure_toy_city(root, n_train=3, n_val=2, size=(16, 32))
    assert files["val"].is_file()


def test_relative_roots_resolve_against_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_root("data/toy-city") == REPO_ROOT / "data" / "toy-city"
    assert (REPO_ROOT / "scp_core" / "priors" / "__init__.py").is_file()
    assert resolve_root(tmp_path / "x") == tmp_path / "x"


# ------------------------------------------------------------------------------ Dataset
def test_toy_city_dataset_items_and_attributes(tmp_path):
    ds = ToyCity(root=tmp_path / "tc", split="train", n_train=8, n_val=3, size=(32, 64))
    assert len(ds) == 8 and ds.size == (32, 64)
    assert ds.num_classes == K and ds.ignore_index is None and ds.class_names == TOY_CLASSES
    assert ds.prompt == "City road scenes" and ds.palette.shape == (K, 3)
    item = ds[5]
    assert set(item) == {"image", "labels", "name"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 64)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (32, 64)
    np.testing.assert_array_equal(item["labels"].numpy(), ds.labels[5])
    np.testing.assert_allclose((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5, ds.images[5], atol=1e-3)
    assert ds.images.shape == (8, 32, 64, 3) and ds.labels.dtype == np.uint8
    assert isinstance(item["name"], str) and item["name"] != ds[4]["name"]
    assert ds[-1]["name"] == ds[7]["name"]
    with pytest.raises(IndexError):
        ds[8]
    val = ToyCity(root=tmp_path / "tc", split="val", n_train=8, n_val=3, size=(32, 64))
    assert len(val) == 3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 64) and batch["labels"].shape == (4, 32, 64)
    with pytest.raises(ValueError, match="split"):
        ToyCity(root=tmp_path / "tc", split="test")


def test_registry_gives_both_toy_settings(tmp_path):
    kw = dict(n_train=4, n_val=2, size=(32, 64))
    day = get_dataset("toy-city", root=tmp_path / "a", **kw)
    gv = get_dataset("toy-city-gv", root=tmp_path / "b", **kw)
    assert isinstance(day, ToyCity) and isinstance(gv, ToyCity)
    assert day.global_variation == 0.0 and gv.global_variation == 1.0
    np.testing.assert_array_equal(day.labels, gv.labels)
    assert not np.array_equal(day.images, gv.images)
    meta = toy_city.toy_city_files(tmp_path / "b", global_variation=1.0, **kw)["meta"]
    assert json.loads(meta.read_text())["global_variation"] == 1.0


def test_control_map_of_toy_labels_and_sample_grid(tmp_path):
    import warnings

    from scp_core.data import control_map, one_hot
    from scp_core.data.figures import save_toy_city_samples, toy_city_sample_grid

    ds = ToyCity(root=tmp_path / "tc", n_train=3, n_val=1, size=(16, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cached arrays are read-only: no tensor warning
        cm = control_map(ds.labels, ds.palette)
    assert cm.shape == (3, 3, 16, 32)
    assert torch.allclose(cm.permute(0, 2, 3, 1), torch.from_numpy(ds.palette[ds.labels.astype(int)]).float() / 255)
    assert torch.equal(one_hot(ds.labels, K).argmax(1), torch.from_numpy(ds.labels.astype(np.int64)))
    grid = toy_city_sample_grid(n=3, cols=2, scale=1, size=(16, 32))
    assert grid.dtype == np.uint8 and grid.shape[1] == 2 * (2 * 32 + 4)
    out = save_toy_city_samples(tmp_path / "fig" / "s.png", n=2, scale=1, size=(16, 32))
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
