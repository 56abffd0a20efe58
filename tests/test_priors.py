"""Tests of scp_core.priors: statistics (Eqs. 5, 7, 8), fallback, merge, sampling, Eq. 6, files."""
import math

import numpy as np
import pytest
import torch

from scp_core.priors import definitions as ref
from scp_core.labels import downsample_labels, label_batch, map_ignore
from scp_core.priors import KINDS, NormalPrior, PriorAccumulator, load_prior
from scp_core.priors.files import FORMAT_VERSION
from scp_core.sampling import noise_to_step

K, C, H, W = 3, 4, 3, 5


def _data(n, seed=0, k=K, shape=(C, H, W)):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(n, *shape, generator=g, dtype=torch.float64) * 2 + 1
    lab = torch.randint(0, k, (n, *shape[1:]), generator=g)
    return lat, lab


# ----------------------------------------------------------------------------- downsampling
def test_downsample_labels_is_nearest_and_never_invents_ids():
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(0, 7, (2, 64, 128), generator=g)
    lab[:, :, :40] = 3  # a region with one id
    out = downsample_labels(lab, (8, 16))
    assert out.shape == (2, 8, 16) and out.dtype == torch.int64
    assert set(out.unique().tolist()) <= set(lab.unique().tolist())
    # centre selection: cell (i, j) copies pixel (8 i + 4, 8 j + 4)
    assert torch.equal(out, lab[:, 4::8, 4::8])
    # a [H, W] map and a numpy input work too; square size as one int
    assert downsample_labels(lab[0].numpy(), 4).shape == (4, 4)


def test_downsample_two_ids_never_produces_the_mean_id():
    lab = torch.zeros(1, 16, 16, dtype=torch.long)
    lab[:, :, 8:] = 10  # bilinear would invent ids in between on the boundary
    out = downsample_labels(lab, (5, 5))
    assert set(out.unique().tolist()) == {0, 10}


def test_map_ignore():
    lab = torch.tensor([[0, 255], [18, 1]])
    out = map_ignore(lab, 255, to=19)
    assert out.tolist() == [[0, 19], [18, 1]]
    assert map_ignore(lab, 255).max() == 19


# ----------------------------------------------------------------------------- statistics
def test_categorical_and_spatial_equal_their_definitions():
    """The streaming accumulator against the brute-force definitions of Eqs. 5 and 7."""
    lat, lab = _data(37)
    acc = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    x, m = lat.numpy(), lab.numpy()
    sp_mean, sp_std = ref.spatial_prior(x)
    sp = acc.spatial()
    np.testing.assert_allclose(sp.mean.numpy(), sp_mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sp.std.numpy(), sp_std, rtol=0, atol=1e-5)
    n, mean, var = acc.spatial_moments()
    np.testing.assert_allclose(mean.numpy(), sp_mean, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), sp_std ** 2, atol=1e-12)
    assert torch.all(n == 37)
    cat_mean, cat_std, cat_count = ref.categorical_prior(x, m, K)
    n, mean, var = acc.categorical_moments()
    np.testing.assert_array_equal(n.numpy(), cat_count)
    np.testing.assert_allclose(mean.numpy(), cat_mean, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), cat_std ** 2, atol=1e-12)


def test_joint_equals_its_definition_per_cell():
    lat, lab = _data(50, seed=3)
    acc = PriorAccumulator(K, (C, H, W)).update(lat[:20], lab[:20]).update(lat[20:], lab[20:])
    mean, std, count = ref.joint_prior(lat.numpy(), lab.numpy(), K, min_count=1)
    n, m, var = acc.joint_moments()
    np.testing.assert_array_equal(n.numpy(), count)
    seen = count > 0
    np.testing.assert_allclose(m.numpy().transpose(0, 2, 3, 1)[seen], mean.transpose(0, 2, 3, 1)[seen], atol=1e-12)
    np.testing.assert_allclose(var.numpy().transpose(0, 2, 3, 1)[seen], std.transpose(0, 2, 3, 1)[seen] ** 2,
                               atol=1e-12)


@pytest.mark.parametrize("fallback", ["class", "spatial"])
@pytest.mark.parametrize("min_count", [1, 4, 9])
def test_joint_prior_with_fallback_equals_its_definition(min_count, fallback):
    lat, lab = _data(30, seed=5, k=4)
    joint = PriorAccumulator(4, (C, H, W)).update(lat, lab).joint(min_count=min_count, fallback=fallback)
    mean, std, count = ref.joint_prior(lat.numpy(), lab.numpy(), 4, min_count=min_count, fallback=fallback)
    np.testing.assert_array_equal(joint.count.numpy(), count)
    np.testing.assert_allclose(joint.mean.numpy(), mean, atol=1e-5)
    np.testing.assert_allclose(joint.std.numpy(), std, atol=1e-5)
    assert joint.fallback_mask.any() or min_count == 1


def test_joint_recovers_known_gaussians_within_sampling_error():
    g = torch.Generator().manual_seed(7)
    k, c, h, w, n = 2, 4, 2, 3, 4000
    true_mu = torch.randn(k, c, h, w, generator=g, dtype=torch.float64) * 3
    true_sd = torch.rand(k, c, h, w, generator=g, dtype=torch.float64) * 1.5 + 0.3
    lab = torch.randint(0, k, (n, h, w), generator=g)
    eps = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mu_sel = true_mu.permute(0, 2, 3, 1)[lab, yy, xx].permute(0, 3, 1, 2)
    sd_sel = true_sd.permute(0, 2, 3, 1)[lab, yy, xx].permute(0, 3, 1, 2)
    lat = mu_sel + sd_sel * eps
    acc = PriorAccumulator(k, (c, h, w))
    for i in range(0, n, 512):
        acc.update(lat[i:i + 512], lab[i:i + 512])
    joint = acc.joint(min_count=1)
    cnt = joint.count[:, None].double()
    # 5-sigma bounds of the estimators' sampling error
    assert torch.all((joint.mean.double() - true_mu).abs() <= 5 * true_sd / cnt.sqrt())
    assert torch.all((joint.std.double() - true_sd).abs() <= 5 * true_sd / (2 * cnt).sqrt())


def test_merge_of_shards_equals_single_pass():
    lat, lab = _data(90, seed=11)
    whole = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    shards = [PriorAccumulator(K, (C, H, W)).update(lat[i:j], lab[i:j])
              for i, j in [(0, 7), (7, 50), (50, 51), (51, 90)]]
    merged = shards[0]
    for s in shards[1:]:
        merged.merge(s)
    assert merged.num_images == whole.num_images == 90
    assert torch.equal(merged.count, whole.count)
    assert torch.allclose(merged.mean, whole.mean, rtol=0, atol=1e-10)
    assert torch.allclose(merged.m2, whole.m2, rtol=0, atol=1e-10)
    # an empty shard is neutral
    merged.merge(PriorAccumulator(K, (C, H, W)))
    assert torch.allclose(merged.m2, whole.m2, rtol=0, atol=1e-10)


def test_state_dict_round_trip():
    lat, lab = _data(10)
    acc = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    again = PriorAccumulator.from_state_dict(acc.state_dict())
    assert again.num_images == 10 and torch.equal(again.m2, acc.m2)


def test_memory_is_independent_of_the_number_of_images():
    acc = PriorAccumulator(K, (C, H, W))
    before = [t.numel() for t in acc.state_dict().values()]
    lat, lab = _data(300)
    acc.update(lat, lab)
    assert [t.numel() for t in acc.state_dict().values()] == before


# ----------------------------------------------------------------------------- fallback
@pytest.mark.parametrize("fallback", ["class", "spatial"])
def test_fallback_cells_take_the_fallback_statistics_exactly(fallback):
    lat, lab = _data(12, seed=5)
    acc = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    joint = acc.joint(min_count=5, fallback=fallback)
    n, mu, var = acc.joint_moments()
    rare = joint.fallback_mask
    assert rare.any() and (~rare).any(), "the fixture must have both rare and frequent cells"
    if fallback == "class":
        ref = acc.categorical()
        fb_mu = ref.mean[:, :, None, None].expand_as(joint.mean)
        fb_sd = ref.std[:, :, None, None].expand_as(joint.mean)
    else:
        ref = acc.spatial()
        fb_mu = ref.mean[None].expand_as(joint.mean)
        fb_sd = ref.std[None].expand_as(joint.mean)
    m = rare[:, None].expand_as(joint.mean)
    assert torch.equal(joint.mean[m], fb_mu[m]) and torch.equal(joint.std[m], fb_sd[m])
    assert torch.equal(joint.mean[~m], mu.float()[~m])
    assert torch.equal(joint.std[~m], var.sqrt().float()[~m])


def test_unseen_class_gets_global_statistics():
    lat, lab = _data(20, k=2)
    acc = PriorAccumulator(3, (C, H, W)).update(lat, lab)  # class 2 never appears
    cat = acc.categorical()
    x = lat.numpy().transpose(0, 2, 3, 1).reshape(-1, C)
    np.testing.assert_allclose(cat.mean[2].numpy(), x.mean(0), atol=1e-5)
    np.testing.assert_allclose(cat.std[2].numpy(), x.std(0), atol=1e-5)
    joint = acc.joint(min_count=1)
    assert joint.fallback_mask[2].all()


# ----------------------------------------------------------------------------- maps, sampling, Eq. 6
def test_distribution_maps_index_the_right_statistics():
    lat, lab = _data(30)
    acc = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    q = lab[:4]
    cat, joint, sp = acc.categorical(), acc.joint(min_count=1), acc.spatial()
    m, s = cat.distribution_map(q)
    assert m.shape == s.shape == (4, C, H, W)
    assert torch.equal(m[1, :, 2, 3], cat.mean[q[1, 2, 3]])
    m, s = joint.distribution_map(q)
    assert torch.equal(m[2, :, 1, 4], joint.mean[q[2, 1, 4], :, 1, 4])
    assert torch.equal(s[2, :, 1, 4], joint.std[q[2, 1, 4], :, 1, 4])
    m, s = sp.distribution_map(q)
    assert torch.equal(m[3], sp.mean) and torch.equal(s[0], sp.std)
    m, s = NormalPrior(latent_channels=C).distribution_map(q)
    assert torch.all(m == 0) and torch.all(s == 1) and m.shape == (4, C, H, W)


def test_sample_has_requested_moments_and_is_deterministic():
    lat, lab = _data(30)
    joint = PriorAccumulator(K, (C, H, W)).update(lat, lab).joint(min_count=1)
    q = lab[:1].expand(20000, H, W)
    x = joint.sample(q, generator=torch.Generator().manual_seed(0))
    mean, std = joint.distribution_map(q[:1])
    assert torch.allclose(x.mean(0), mean[0], atol=5 * std[0].max() / math.sqrt(20000) + 1e-6)
    assert torch.allclose(x.std(0), std[0], atol=0.03 * std[0].max() + 1e-6)
    a = joint.sample(lab[:3], generator=torch.Generator().manual_seed(4))
    b = joint.sample(lab[:3], generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_noise_to_step_mean_and_variance():
    x = torch.full((200000,), 2.0)
    a = 0.3
    xt = noise_to_step(x, a, generator=torch.Generator().manual_seed(0))
    assert abs(xt.mean().item() - math.sqrt(a) * 2.0) < 0.01
    assert abs(xt.var().item() - (1 - a)) < 0.01
    assert torch.equal(noise_to_step(x, 1.0), x)
    with pytest.raises(ValueError, match="alpha_bar_t"):
        noise_to_step(x, 1.5)


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", ["normal", "spatial", "categorical", "joint"])
def test_save_load_round_trip(tmp_path, kind):
    lat, lab = _data(25)
    acc = PriorAccumulator(K, (C, H, W)).update(lat.float(), lab)
    prov = {"vae": "toy", "scale_factor": 0.18215, "label_set": "test"}
    prior = {"normal": lambda: NormalPrior(latent_channels=C),
             "spatial": lambda: acc.spatial(provenance=prov),
             "categorical": lambda: acc.categorical(provenance=prov),
             "joint": lambda: acc.joint(min_count=3, fallback="spatial", provenance=prov)}[kind]()
    path = prior.save(tmp_path / "p.safetensors")
    again = load_prior(path)
    assert type(again) is type(prior) and again.kind == kind
    assert again.num_classes == prior.num_classes and again.latent_shape == prior.latent_shape
    assert again.num_images == prior.num_images and again.provenance == prior.provenance
    m1, s1 = prior.distribution_map(lab[:2])
    m2, s2 = again.distribution_map(lab[:2])
    assert torch.equal(m1, m2) and torch.equal(s1, s2)
    if kind == "joint":
        assert again.min_count == 3 and again.fallback == "spatial"
    assert not list(tmp_path.glob(".p.safetensors*")), "no temporary file left behind"


def test_load_refuses_mismatch_and_says_what_differs(tmp_path):
    lat, lab = _data(5)
    path = PriorAccumulator(K, (C, H, W)).update(lat, lab).joint().save(tmp_path / "j.safetensors")
    with pytest.raises(ValueError, match=r"num_classes: prior has 3, requested 20"):
        load_prior(path, num_classes=20)
    with pytest.raises(ValueError, match=r"latent_shape: prior has \(4, 3, 5\), requested \(4, 8, 16\)"):
        load_prior(path, latent_shape=(4, 8, 16))
    prior = load_prior(path, num_classes=K, latent_shape=(C, H, W))
    with pytest.raises(ValueError, match="downsample_labels"):
        prior.distribution_map(torch.zeros(1, 6, 10, dtype=torch.long))


def test_load_rejects_corrupt_truncated_and_foreign_files(tmp_path):
    lat, lab = _data(5)
    path = PriorAccumulator(K, (C, H, W)).update(lat, lab).joint().save(tmp_path / "j.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_prior(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_prior(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an SCP prior"):
        load_prior(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load_prior(tmp_path / "missing.safetensors")



def _every_kind():
    """One prior of every kind in KINDS, built from the same small data."""
    from scp_core.priors.global_factor import GlobalJointAccumulator, MixtureJointAccumulator
    from scp_core.priors.signal_leak import SignalLeakAccumulator
    lat, lab = _data(30)
    lat = lat.float()
    acc = PriorAccumulator(K, (C, H, W)).update(lat, lab)
    prov = {"label_set": "test"}
    centres = torch.stack([lat[:15].mean((0, 2, 3)), lat[15:].mean((0, 2, 3))])
    return lab, {
        "normal": NormalPrior(latent_channels=C),
        "spatial": acc.spatial(prov), "categorical": acc.categorical(prov),
        "joint": acc.joint(min_count=2, fallback="spatial", provenance=prov),
        "joint-global": GlobalJointAccumulator(K, (C, H, W)).update(lat, lab).prior(min_count=2, provenance=prov),
        "joint-mixture": MixtureJointAccumulator(K, (C, H, W), centres).update(lat, lab).prior(2, provenance=prov),
        "signal-leak": SignalLeakAccumulator((C, H, W), grid=(3, 1)).update(lat).prior(num_classes=K, provenance=prov),
    }


def test_the_kinds_table_holds_every_prior_class():
    from scp_core.priors import (CategoricalPrior, GlobalJointPrior, JointPrior, MixtureJointPrior, SignalLeakPrior,
                                 SpatialPrior)
    classes = (NormalPrior, SpatialPrior, CategoricalPrior, JointPrior, GlobalJointPrior, MixtureJointPrior,
               SignalLeakPrior)
    assert KINDS == {cls.kind: cls for cls in classes}
    assert set(_every_kind()[1]) == set(KINDS), "the round-trip test below must build every kind"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_round_trips_at_the_current_format_version(tmp_path, kind):
    from safetensors import safe_open
    lab, priors = _every_kind()
    prior = priors[kind]
    path = prior.save(tmp_path / f"{kind}.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format_version"] == FORMAT_VERSION and f.metadata()["kind"] == kind
    back = load_prior(path, num_classes=K if kind != "normal" else None, latent_shape=(C, H, W))
    assert type(back) is type(prior) and back.metadata() == prior.metadata()
    for name in prior.TENSORS:
        assert torch.equal(getattr(back, name), getattr(prior, name)), name
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(back.sample(lab[:2], g()), prior.sample(lab[:2], g()))


def _with_metadata(path, out, **changes):
    """A copy of the prior file ``path`` at ``out`` with metadata keys changed (``None``: removed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(out), metadata={k: v for k, v in meta.items() if v is not None})
    return out


def test_a_newer_format_version_is_refused_saying_what_to_do(tmp_path):
    lat, lab = _data(5)
    path = PriorAccumulator(K, (C, H, W)).update(lat, lab).joint().save(tmp_path / "j.safetensors")
    newer = _with_metadata(path, tmp_path / "newer.safetensors", format_version=str(int(FORMAT_VERSION) + 1))
    with pytest.raises(ValueError) as err:
        load_prior(newer)
    msg = str(err.value)
    for part in ("newer.safetensors", f"format_version '{int(FORMAT_VERSION) + 1}'",
                 f"reads format_version '{FORMAT_VERSION}'", "newer scp_core", "update scp_core", "scpdiff priors"):
        assert part in msg, (part, msg)
    odd = _with_metadata(path, tmp_path / "odd.safetensors", format_version="1.5-beta")
    with pytest.raises(ValueError, match=r"odd.safetensors has format_version '1.5-beta'.*update scp_core"):
        load_prior(odd)


def test_a_prior_file_without_a_format_version_reads_as_version_1(tmp_path):
    lat, lab = _data(5)
    prior = PriorAccumulator(K, (C, H, W)).update(lat, lab).joint()
    bare = _with_metadata(prior.save(tmp_path / "j.safetensors"), tmp_path / "bare.safetensors", format_version=None)
    assert torch.equal(load_prior(bare).mean, prior.mean)


def test_label_batch_gives_checked_int64_batches():
    one = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    out = label_batch(one)
    assert out.shape == (1, 2, 2) and out.dtype == torch.int64 and out.tolist() == [one.tolist()]
    batch = torch.zeros(3, 4, 5, dtype=torch.int32)
    assert label_batch(batch).shape == (3, 4, 5) and label_batch(batch).dtype == torch.int64
    assert label_batch(torch.zeros(0, 4, 5, dtype=torch.long)).shape == (0, 4, 5)
    with pytest.raises(ValueError, match=r"maps must be \[B, H, W\] \(or one \[H, W\] map\), got shape \(1, 1, 4, 5\)"):
        label_batch(torch.zeros(1, 1, 4, 5, dtype=torch.long), name="maps")
    with pytest.raises(ValueError, match="integer class ids"):
        label_batch(torch.zeros(4, 5))

# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    acc = PriorAccumulator(K, (C, H, W))
    with pytest.raises(ValueError, match="accumulator is empty"):
        acc.joint()
    lat, lab = _data(2)
    bad = lab.clone()
    bad[0, 0, 0] = 255
    bad[1, 0, 0] = -1
    with pytest.raises(ValueError, match=r"outside \[0, 3\): -1, 255.*map_ignore"):
        acc.update(lat, bad)
    with pytest.raises(ValueError, match="labels must be"):
        acc.update(lat, lab[:, :2])
    with pytest.raises(ValueError, match="latent_shape"):
        acc.update(lat[:, :3], lab)
    nan = lat.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        acc.update(nan, lab)
    with pytest.raises(ValueError, match="integer class ids"):
        acc.update(lat, lab.float())
    assert acc.num_images == 0, "failed updates must not change the state"
    acc.update(lat, lab)
    with pytest.raises(ValueError, match="fallback must be one of"):
        acc.joint(fallback="nearest")
    with pytest.raises(ValueError, match="min_count"):
        acc.joint(min_count=0)
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(PriorAccumulator(K + 1, (C, H, W)))
    with pytest.raises(ValueError, match="num_classes"):
        PriorAccumulator(0, (C, H, W))
