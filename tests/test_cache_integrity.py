"""scp_core.study.cache_files: the cache believes only what matches its digest (issue 47).

Every kind of entry the cache holds is corrupted (a third of its bytes inverted), truncated, replaced (by another
entry's sound file, or by a plain ``.npy`` of the format before digests): each bad entry is reported once, removed
and computed again, and what comes back equals a clean run's."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scp_core import study
from scp_core.metrics.resampling import Draws
from scp_core.study import cache, cache_files
import test_cache

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
MAPS = torch.from_numpy(RNG.integers(0, 3, (3, 8, 8)))
CMS = RNG.integers(0, 50, (3, 3, 4))
s = test_cache.s  # the fixture: toy settings in a fresh reports folder
FEATURES = {"a": RNG.normal(size=(4, 6)), "b": RNG.normal(size=(4, 6))}


def _images(s, made):
    out = []
    for shift, call in enumerate(("call-a", "call-b")):  # two calls: two entries of kind "runs"
        def make(todo, shift=shift):
            made.append(len(todo))
            return IMAGES[todo] + shift, 0.8 + shift / 10, 751 - shift
        out.append(cache.generated(s, call, [f"{call}-{i}" for i in range(3)], make))
    return out


def _features(s, made):
    def make(images):
        made.append(len(images))
        return images.reshape(len(images), -1)[:, :16].double() / 255
    return cache.features(s, torch.from_numpy(IMAGES), "an extractor", make)


def _confusions(s, made):
    def make(todo):
        made.append(len(todo))
        return CMS[todo]
    return cache.confusions(s, torch.from_numpy(IMAGES), MAPS, "a segmenter", make)


def _latents(s, made):
    encode = cache.reference_encoder(s, SimpleNamespace(_scp_fingerprint="a stack", device="cpu"), seed=0)

    def make(b):
        made.append(1)
        return torch.arange(24, dtype=torch.float32).view(1, 4, 2, 3) * (b + 1)
    return [encode(b, torch.from_numpy(IMAGES[b:b + 1]), lambda b=b: make(b)) for b in range(2)]


def _draws(s, made):
    def make(subset):
        made.append(len(subset))
        stat = {k: Draws(float(i + 1), np.linspace(0, 1, 5) + i) for i, k in enumerate(sorted(subset))}
        return stat, {k: Draws(d.value / 10, d.draws / 10) for k, d in stat.items()}
    fd, kd = cache.frechet_draws(s, FEATURES, np.ones((5, 6)), np.zeros((5, 4), int), ref_maps=4, seed=0, kid=True,
                                 make=make)
    return [(k, d.value, d.draws, kd[k].value, kd[k].draws) for k, d in sorted(fd.items())]


KINDS = {"images": _images, "runs": _images, "features": _features, "confusions": _confusions,
         "latents": _latents, "draws": _draws}


def _equal(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def _invert_a_third(p):
    data = bytearray(p.read_bytes())
    for i in range(2 * len(data) // 3, len(data)):  # the last third: the array's bytes, its .npy header intact
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


def _tamper(entries, mode):
    if mode == "corrupted":
        for p in entries:
            _invert_a_third(p)
    elif mode == "truncated":
        for p in entries:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif mode == "replaced":  # each entry gets the next one's sound file: well formed, digest and all
        held = [p.read_bytes() for p in entries]
        for p, data in zip(entries, held[1:] + held[:1]):
            p.write_bytes(data)
    elif mode == "without a digest":  # the format before digests: a plain .npy, here of other values
        for p in entries:
            array, _ = cache_files.decode(p.stem, p.read_bytes())
            with open(p, "wb") as f:
                np.save(f, (array + 1).astype(array.dtype))


def _run(fn, s):
    made = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fn(s, made)
    return result, sum(made), [str(w.message) for w in seen if issubclass(w.category, cache_files.CacheEntryWarning)]


@pytest.mark.parametrize("mode", ["corrupted", "truncated", "replaced", "without a digest"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_bad_entry_of_any_kind_is_reported_once_removed_and_made_again(s, kind, mode):
    fn = KINDS[kind]
    clean, made, said = _run(fn, s)
    assert made and not said
    entries = sorted((s.reports / "cache" / kind).rglob(f"*{cache_files.SUFFIX}"))
    assert len(entries) >= 2, "every kind is exercised with two entries or more"
    _tamper(entries, mode)
    again, made, said = _run(fn, s)
    assert _equal(again, clean), "the result equals a clean run's"
    assert made == len(entries), "each bad entry, and only those, was computed again"
    assert sorted(said) == sorted(set(said)) and len(said) == len(entries), "one warning per bad entry"
    for p in entries:
        assert any(f"{kind}/{p.stem} " in w and "removed, computed again" in w for w in said), p.stem
    third, made, said = _run(fn, s)  # the rewritten entries are sound: read, not made, nothing to report
    assert _equal(third, clean) and made == 0 and not said


def test_an_entry_is_its_array_under_its_key_and_nothing_else():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = cache_files.encode("k", a)
    got, problem = cache_files.decode("k", data)
    assert np.array_equal(got, a) and got.dtype == a.dtype and problem == ""
    assert cache_files.decode("another key", data)[0] is None, "another entry's file is not this entry"
    flipped = bytearray(data)
    flipped[-1] ^= 1  # one bit of the array
    assert "does not match its digest" in cache_files.decode("k", bytes(flipped))[1]
    assert "does not match its digest" in cache_files.decode("k", data[:len(cache_files.MAGIC) + 5])[1]
    assert "holds no digest" in cache_files.decode("k", data[len(cache_files.MAGIC) + 32:])[1]  # the bare .npy


def test_inverted_images_in_a_real_run_are_made_again_and_score_as_before(s):
    """The hostile run of issue 47: notebook 00's path (sample, then score mIoU per image) with a third of the
    bytes of the cached images inverted gave other mIoUs and no complaint; now each image is made again."""
    from scp_core.study import evaluation

    priors = study.build_priors(s, save=False)
    real, labels = study.eval_set(s)
    seg, ds = study.load_segmenter(s), study.load_data(s, "val")

    def run():
        study.CONTEXT.clear()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            gen = study.generate(s, labels, prior=priors["joint"])
            cms = evaluation._confusions(s, seg, ds, gen.images, labels)
        return gen.images, cms, [w for w in seen if issubclass(w.category, cache_files.CacheEntryWarning)]
    images, cms, said = run()
    entries = sorted((s.reports / "cache" / "images").rglob(f"*{cache_files.SUFFIX}"))
    assert len(entries) == len(labels) and not said
    for p in entries:  # all of them, so they are made again in one batch of the same size, bit for bit
        _invert_a_third(p)
    again, cms_again, said = run()
    assert len(said) == len(entries) and torch.equal(again, images) and np.array_equal(cms_again, cms)
