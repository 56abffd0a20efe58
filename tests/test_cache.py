"""scp_core.study.cache: each image and each image's features are made once per reports folder, under a key of
everything that determines them; what comes back equals what would be made."""
import numpy as np
import pytest
import torch

from scp_core import study
from scp_core.pipeline import SCPDiffPipeline
from scp_core.study import cache, cache_files
from scp_core.study import evaluation


@pytest.fixture
def s(tmp_path):
    study.CONTEXT.clear()
    yield study.settings("toy", smoke=False, quick=False, n_ref=16, n_eval=4, steps=3, batch_size=4,
                         out_dir=str(tmp_path / "toy"))
    study.CONTEXT.clear()


@pytest.fixture
def calls(monkeypatch):
    """The label maps each pipeline call samples (one entry per call)."""
    seen, real = [], SCPDiffPipeline.__call__

    def counting(self, labels, *args, **kwargs):
        seen.append(len(labels))
        return real(self, labels, *args, **kwargs)
    monkeypatch.setattr(SCPDiffPipeline, "__call__", counting)
    return seen


def test_an_image_is_made_once_and_equals_the_uncached_one(s, calls, monkeypatch):
    priors = study.build_priors(s, save=False)
    _, labels = study.eval_set(s)
    first = study.generate(s, labels, prior=priors["joint"])
    again = study.generate(s, labels, prior=priors["joint"])
    assert calls == [4], "the second call read every image from the cache"
    assert torch.equal(first.images, again.images) and (again.mu, again.t_start) == (first.mu, first.t_start)
    assert first.mu == 0.8 and first.t_start == 334  # 3 steps: the last int(3 * 0.8) = 2 of 1000 // 3 = 333 apart
    subset = study.generate(s, labels[:2], prior=priors["joint"])  # 04's maps are the first of 03's
    assert calls == [4] and torch.equal(subset.images, first.images[:2])
    monkeypatch.setenv("SCP_CACHE", "0")
    plain = study.generate(s, labels, prior=priors["joint"])
    assert calls == [4, 4] and torch.equal(plain.images, first.images), "the cache returns what would be made"


def test_only_the_missing_samples_are_made(s, calls):
    priors = study.build_priors(s, save=False)
    _, labels = study.eval_set(s)
    study.generate(s, labels[:2], prior=priors["categorical"])
    both = study.generate(s, labels, prior=priors["categorical"])
    assert calls == [2, 2], "maps 0 and 1 came from the cache, 2 and 3 were sampled"
    elsewhere = study.settings("toy", smoke=False, quick=False, n_ref=16, n_eval=4, steps=3, batch_size=4,
                               out_dir=str(s.reports.parent / "elsewhere"))
    fresh = study.generate(elsewhere, labels, prior=priors["categorical"])
    assert int((both.images.int() - fresh.images.int()).abs().max()) <= 1  # one batch or two: the same images


def test_every_input_of_an_image_is_in_its_key(s, calls, monkeypatch):
    priors = study.build_priors(s, save=False)
    _, labels = study.eval_set(s)
    study.generate(s, labels, prior=priors["joint"])
    study.generate(s, labels, prior=priors["joint"], mu=0.5)             # mu
    study.generate(s, labels, prior=priors["spatial"])                   # the prior
    study.generate(s, labels, prior=priors["joint"], seed_offset=100)    # the seeds
    study.generate(s, labels, prior=priors["joint"], steps=2)            # the steps
    study.generate(s, labels.flip(-1), prior=priors["joint"])           # the maps
    assert calls == [4] * 6
    monkeypatch.setattr(cache, "_SOURCE", "another version of scp_core")  # a code change starts afresh
    study.generate(s, labels, prior=priors["joint"])
    assert calls == [4] * 7
    pipe = study.load_pipeline(s)
    fp = cache.stack_fingerprint(pipe)
    with torch.no_grad():
        next(pipe.controlnet.parameters()).add_(1e-3)  # other weights: another stack
    del pipe._scp_fingerprint
    assert cache.stack_fingerprint(pipe) != fp


def test_features_are_extracted_once_per_image_and_a_broken_entry_is_made_again(s, monkeypatch):
    made = []
    real = evaluation.extract_features

    def counting(images, extractor, batch):
        made.append(len(images))
        return real(images, extractor, batch)
    monkeypatch.setattr(evaluation, "extract_features", counting)
    imgs = torch.randint(0, 256, (5, 64, 128, 3), dtype=torch.uint8)
    f1 = evaluation._features(s, imgs)
    study.CONTEXT.clear()  # a new kernel: only the disk cache is left
    f2 = evaluation._features(s, imgs[[4, 0]])
    assert made == [5] and torch.equal(f2, f1[[4, 0]]) and f1.dtype == torch.float64
    key = cache.feature_keys(imgs[4:], cache.extractor_fingerprint(study.feature_extractor(s)))[0]
    entry = cache._path(s, "features", key)
    entry.write_bytes(b"not an array")  # image 4's entry
    study.CONTEXT.clear()
    with pytest.warns(cache_files.CacheEntryWarning, match=f"features/{key} .* removed, computed again"):
        f3 = evaluation._features(s, imgs)
    # one image alone or in a batch of five: the same features up to float rounding of the batched convolutions
    assert made == [5, 1] and torch.allclose(f3, f1, rtol=1e-5, atol=1e-6) and torch.equal(f3[:4], f1[:4])
    monkeypatch.setenv("SCP_CACHE", "0")
    study.CONTEXT.clear()
    assert torch.equal(evaluation._features(s, imgs), f1) and made == [5, 1, 5]


def test_smoke_runs_never_use_the_cache(tmp_path):
    smoke = study.settings("toy", smoke=True, out_dir=str(tmp_path))
    assert not cache.enabled(smoke)
    assert cache.enabled(study.settings("toy", smoke=False, quick=True, out_dir=str(tmp_path)))
    assert not np.any([p.name == "cache" for p in tmp_path.iterdir()])


def test_reference_latents_are_encoded_once_and_give_the_same_priors(s, monkeypatch):
    encoded = []
    real = SCPDiffPipeline.encode

    def counting(self, images, *args, **kwargs):
        encoded.append(len(images))
        return real(self, images, *args, **kwargs)
    monkeypatch.setattr(SCPDiffPipeline, "encode", counting)
    first = study.build_priors(s, save=False)
    assert sum(encoded) == 16
    (s.priors_dir / "reference_statistics.safetensors").unlink()  # statistics gone: the latents are still kept
    study.CONTEXT.clear()
    again = study.build_priors(s, save=False)
    assert sum(encoded) == 16, "the second build read the latents"
    for k in ("spatial", "categorical", "joint"):
        assert torch.equal(first[k].mean, again[k].mean) and torch.equal(first[k].std, again[k].std)
    monkeypatch.setenv("SCP_CACHE", "0")
    (s.priors_dir / "reference_statistics.safetensors").unlink()
    study.CONTEXT.clear()
    plain = study.build_priors(s, save=False)
    assert sum(encoded) == 32 and torch.equal(plain["joint"].mean, first["joint"].mean)


def test_fresh_and_cached_reference_latents_are_the_same_tensor_layout_and_sum_alike(s):
    """The VAE returns channels-last latents; read back from the cache they are contiguous. Sums over them ran in
    another order, so the mixture prior notebook 08 fitted while encoding (a cold batch) differed in its last digits
    from the one fitted on cached latents (a warm batch), its digest too, and a warm batch sampled its images again.
    The encoder now returns the fresh latents as a later read gives them."""
    from scp_core.priors.global_factor import global_factor
    from scp_core.reference import reference_batches

    pipe, ds = study.load_pipeline(s), study.load_data(s, "train")
    encode = cache.reference_encoder(s, pipe, s.seed)
    fresh = [x0 for _, x0, _ in reference_batches(pipe, ds, 16, encode=encode)]
    cached = [x0 for _, x0, _ in reference_batches(pipe, ds, 16, encode=encode)]
    raw = [x0 for _, x0, _ in reference_batches(pipe, ds, 16)]  # the VAE's own output, not cached
    for f, c, r in zip(fresh, cached, raw):
        assert torch.equal(f, r) and f.stride() == c.stride() == r.stride()
        assert torch.equal(global_factor(f), global_factor(c))


def test_a_settings_resampled_draws_are_computed_once_and_equal_the_uncached_ones(s, monkeypatch):
    """The intervals' draws (Frechet and KID, 2048-D Inception-sized features through the Gram path) are kept per
    setting: a second comparison solves no eigenvalue problem, adding a setting computes only that one, and every
    value equals the uncached computation exactly."""
    from scp_core.metrics import resampling

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(12, 2048))
    index = resampling.draw_indices(8, 20, 0)
    gen = {"a": rng.normal(size=(8, 2048)), "b": rng.normal(0.3, 1.0, size=(8, 2048))}
    seen = []

    def make(subset):
        seen.append(sorted(subset))
        return resampling.frechet_draws(subset, ref, index, ref_maps=8, seed=0, kid=True)
    fd, kd = cache.frechet_draws(s, gen, ref, index, ref_maps=8, seed=0, kid=True, make=make)
    plain_fd, plain_kd = resampling.frechet_draws(gen, ref, index, ref_maps=8, seed=0, kid=True)
    for got, want in ((fd, plain_fd), (kd, plain_kd)):
        for k in gen:
            assert got[k].value == want[k].value and np.array_equal(got[k].draws, want[k].draws)
    fd2, _ = cache.frechet_draws(s, gen, ref, index, ref_maps=8, seed=0, kid=True, make=make)
    assert seen == [["a", "b"]] and np.array_equal(fd2["b"].draws, fd["b"].draws)
    cache.frechet_draws(s, {**gen, "c": gen["a"] + 1}, ref, index, ref_maps=8, seed=0, kid=True, make=make)
    assert seen[-1] == ["c"], "only the new setting is resampled"
    cache.frechet_draws(s, gen, ref, index[:, ::-1].copy(), ref_maps=8, seed=0, kid=True, make=make)
    assert seen[-1] == ["a", "b"], "other resampled maps: a new key"
    fd_only, none = cache.frechet_draws(s, gen, ref, index, ref_maps=8, seed=0, kid=False,
                                        make=lambda sub: resampling.frechet_draws(sub, ref, index, ref_maps=8, seed=0))
    assert none is None and fd_only["a"].value == fd["a"].value


def test_a_comparison_reads_its_intervals_from_the_cache_and_gives_the_same_rows(s, monkeypatch):
    real, labels = study.eval_set(s)
    rows = []
    for cached in ("1", "1", "0"):
        monkeypatch.setenv("SCP_CACHE", cached)
        comp = evaluation.Comparison(s, labels, n_boot=30, judge_b=False)
        comp.add("real", real)
        comp.add("flipped", real.flip(2))
        rows.append(comp.rows())
    assert rows[0] == rows[1] == rows[2]
    assert list((s.reports / "cache" / "draws").rglob("*.entry")), "the draws were kept"


def test_the_first_entry_written_is_kept_and_a_later_maker_scores_it(s):
    """Two notebooks that make the same sample in batches of other sizes can differ by a grey level: the cache keeps
    the first entry, and the second maker gets those bytes back (so a cold and a warm batch score the same ones)."""
    keys = ["k1", "k2"]
    first = np.zeros((2, 4, 4, 3), np.uint8)
    other = np.ones((2, 4, 4, 3), np.uint8)  # the "same" samples, one grey level apart
    got, _, _ = cache.generated(s, "call-a", keys, lambda todo: (first[todo], 0.8, 751))
    assert np.array_equal(got, first)
    # another notebook, which found no entry when it looked, made its own and now stores it
    again = cache_files.keep_first(cache._path(s, "images", "k1"), other[0])
    assert np.array_equal(again, first[0])
    assert np.array_equal(cache_files.load(cache._path(s, "images", "k1")), first[0])
    # an unreadable entry is replaced by the new one; no temporary file is left behind
    broken = cache._path(s, "images", "k2")
    broken.write_bytes(b"not an array")
    with pytest.warns(cache_files.CacheEntryWarning, match="images/k2 .* holds no digest"):
        assert np.array_equal(cache_files.keep_first(broken, other[1]), other[1])
    assert np.array_equal(cache_files.load(broken), other[1])
    assert not [p for p in broken.parent.iterdir() if p.name.startswith(".")]


def test_confusion_matrices_are_made_once_per_image_and_map_and_equal_the_uncached_ones(s, monkeypatch):
    """mIoU's per-image counts: the segmenter runs once per (image, map, segmenter) in a reports folder; another
    map for the same image is another entry; the cached counts are the uncached ones exactly (integers)."""
    real, labels = study.eval_set(s)
    seg, ds = study.load_segmenter(s), study.load_data(s, "val")
    predicted = []
    real_predict = type(seg).predict

    def counting(self, x):
        predicted.append(len(x))
        return real_predict(self, x)
    monkeypatch.setattr(type(seg), "predict", counting)
    first = evaluation._confusions(s, seg, ds, real, labels)
    again = evaluation._confusions(s, seg, ds, real[[2, 0]], labels[[2, 0]])
    assert predicted == [len(real)] and np.array_equal(again, first[[2, 0]]) and first.dtype.kind == "i"
    moved = evaluation._confusions(s, seg, ds, real[:1], labels[1:2])  # image 0 on map 1: a new key
    assert predicted == [len(real), 1] and moved[0].sum() == first[1].sum()
    monkeypatch.setenv("SCP_CACHE", "0")
    assert np.array_equal(evaluation._confusions(s, seg, ds, real, labels), first)
    assert predicted == [len(real), 1, len(real)]
