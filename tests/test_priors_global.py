"""Priors that keep global factors (scp_core.priors_global): exact streaming, degradation to the joint prior,
correlated draws, cluster choice, signal leak, and persistence."""
from __future__ import annotations

import pytest
import torch

from scp_core.priors import JointPrior, PriorAccumulator, load_prior
from scp_core.priors.gaussian import GaussianAccumulator
from scp_core.priors.global_factor import (GlobalJointAccumulator, GlobalJointPrior, MixtureJointAccumulator,
                                           MixtureJointPrior, choose_centres, global_factor)
from scp_core.priors.signal_leak import SignalLeakAccumulator, SignalLeakPrior

K, SHAPE = 3, (2, 6, 8)


def _data(n=60, seed=0, brightness=1.0):
    """Latents with a per-image offset ``b_i ~ N(0, brightness^2)`` on every token (a global factor)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (n, *SHAPE[1:]), generator=g)
    class_mean = torch.tensor([[-1.0, 0.5], [0.0, 1.0], [1.5, -0.5]])
    x = class_mean[labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, *SHAPE, generator=g)
    x = x + brightness * torch.randn(n, 1, 1, 1, generator=g)
    return x, labels


def test_gaussian_accumulator_is_exact_in_batches_and_shards():
    v = torch.randn(101, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 2
    a, b = GaussianAccumulator(5), GaussianAccumulator(5)
    for i in range(0, 60, 7):
        a.update(v[i:min(i + 7, 60)])
    b.update(v[60:])
    a.merge(b)
    assert a.count == 101
    torch.testing.assert_close(a.mean, v.mean(0))
    torch.testing.assert_close(a.cov(), torch.cov(v.T, correction=0))


def test_global_joint_equals_the_joint_prior_without_a_global_factor():
    x, labels = _data(brightness=0.0)
    x = x - global_factor(x)[:, :, None, None] + torch.tensor([0.2, -0.1])[None, :, None, None]  # same g everywhere
    joint = PriorAccumulator(K, SHAPE).update(x, labels).joint(min_count=2)
    glob = GlobalJointAccumulator(K, SHAPE).update(x, labels).prior(min_count=2)
    assert float(glob.g_cov.abs().max()) < 1e-10
    m = labels[:4]
    torch.testing.assert_close(glob.sample(m, torch.Generator().manual_seed(3)),
                               joint.sample(m, torch.Generator().manual_seed(3)), atol=1e-5, rtol=1e-5)
    for a, b in zip(glob.distribution_map(m), joint.distribution_map(m)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_global_joint_keeps_the_spread_of_per_image_means_that_the_joint_prior_averages_away():
    x, labels = _data(n=200, brightness=1.0)
    real = float(global_factor(x).mean(1).std())
    joint = PriorAccumulator(K, SHAPE).update(x, labels).joint(min_count=2)
    glob = GlobalJointAccumulator(K, SHAPE).update(x[:100], labels[:100])
    glob.merge(GlobalJointAccumulator(K, SHAPE).update(x[100:], labels[100:]))  # shards
    glob = glob.prior(min_count=2)
    m = labels[:200]
    spread = lambda s: float(global_factor(s).mean(1).std())  # noqa: E731
    s_glob, s_joint = (spread(glob.sample(m, torch.Generator().manual_seed(0))),
                       spread(joint.sample(m, torch.Generator().manual_seed(0))))
    assert abs(s_glob / real - 1) < 0.2                      # per-image brightness kept
    assert s_joint < 0.3 * real                              # the joint prior's draws average it out
    # the marginal per token is unchanged: same variance as the joint prior's, within sampling error
    _, std_g = glob.distribution_map(m)
    _, std_j = joint.distribution_map(m)
    assert abs(float(std_g.mean() / std_j.mean()) - 1) < 0.1


def test_mixture_with_one_cluster_equals_the_joint_prior_and_merges_exactly():
    x, labels = _data()
    joint = PriorAccumulator(K, SHAPE).update(x, labels).joint(min_count=2)
    one = MixtureJointAccumulator(K, SHAPE, centres=torch.zeros(1, 2)).update(x, labels).prior(min_count=2)
    m = labels[:5]
    torch.testing.assert_close(one.sample(m, torch.Generator().manual_seed(4)),
                               joint.sample(m, torch.Generator().manual_seed(4)))
    centres = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    full = MixtureJointAccumulator(K, SHAPE, centres).update(x, labels)
    a = MixtureJointAccumulator(K, SHAPE, centres).update(x[:25], labels[:25])
    a.merge(MixtureJointAccumulator(K, SHAPE, centres).update(x[25:], labels[25:]))
    pa, pf = a.prior(min_count=2), full.prior(min_count=2)
    torch.testing.assert_close(pa.mean, pf.mean)
    torch.testing.assert_close(pa.weights, pf.weights)
    with pytest.raises(ValueError, match="different cluster centres"):
        a.merge(MixtureJointAccumulator(K, SHAPE, centres + 1))


def test_mixture_draws_one_cluster_per_image_by_its_frequency():
    x, labels = _data(n=300, brightness=2.0)
    centres, info = choose_centres(global_factor(x[:150]), k_max=3)   # fitted on a training subset
    prior = MixtureJointAccumulator(K, SHAPE, centres).update(x, labels).prior(min_count=2)
    draws = prior.sample(labels[:300], torch.Generator().manual_seed(0))
    real, drawn = global_factor(x).mean(1).std(), global_factor(draws).mean(1).std()
    assert info["k"] >= 2 and float(drawn / real) > 0.6


def test_choose_centres_finds_two_separated_groups_and_one_gaussian():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(200, 3, generator=g)
    two = torch.cat([torch.randn(100, 3, generator=g) - 4, torch.randn(100, 3, generator=g) + 4])
    assert choose_centres(one, k_max=4)[1]["k"] == 1
    centres, info = choose_centres(two, k_max=4)
    assert info["k"] == 2 and sorted(centres[:, 0].round().tolist()) == [-4.0, 4.0]


def test_signal_leak_fits_the_low_frequencies_and_ignores_the_map():
    x, labels = _data(n=400, brightness=1.0)
    acc = SignalLeakAccumulator(SHAPE, grid=(2, 2)).update(x[:200])
    acc.merge(SignalLeakAccumulator(SHAPE, grid=(2, 2)).update(x[200:]))
    prior = acc.prior(num_classes=K)
    d1 = prior.sample(labels[:400], torch.Generator().manual_seed(0))
    d2 = prior.sample(torch.zeros_like(labels[:400]), torch.Generator().manual_seed(0))
    torch.testing.assert_close(d1, d2)                        # no use of the label map
    spread = lambda s: float(global_factor(s).mean(1).std())  # noqa: E731
    assert abs(spread(d1) / spread(x) - 1) < 0.15             # the per-image offset is a low frequency


@pytest.mark.parametrize("make", ["global", "mixture", "leak"])
def test_new_priors_save_and_load_with_their_metadata(tmp_path, make):
    x, labels = _data()
    if make == "global":
        prior = GlobalJointAccumulator(K, SHAPE).update(x, labels).prior(min_count=3, provenance={"n": 60})
    elif make == "mixture":
        prior = MixtureJointAccumulator(K, SHAPE, torch.tensor([[-1.0, -1.0], [1.0, 1.0]])).update(x, labels).prior(3)
    else:
        prior = SignalLeakAccumulator(SHAPE, grid=(3, 2)).update(x).prior(num_classes=K)
    path = prior.save(tmp_path / "p.safetensors")
    back = load_prior(path, num_classes=K, latent_shape=SHAPE)
    assert type(back) is type(prior) and back.metadata() == prior.metadata()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.testing.assert_close(back.sample(labels[:2], g()), prior.sample(labels[:2], g()))
    assert isinstance(back, (GlobalJointPrior, MixtureJointPrior, SignalLeakPrior))


def test_a_prior_file_with_inconsistent_shapes_is_refused(tmp_path):
    x, labels = _data()
    prior = GlobalJointAccumulator(K, SHAPE).update(x, labels).prior()
    prior.g_cov = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="g_cov"):
        load_prior(prior.save(tmp_path / "bad.safetensors"))


def test_joint_prior_unchanged_by_the_registry(tmp_path):
    x, labels = _data()
    joint = PriorAccumulator(K, SHAPE).update(x, labels).joint()
    back = load_prior(joint.save(tmp_path / "j.safetensors"))
    assert isinstance(back, JointPrior) and back.min_count == joint.min_count


def test_mixture_chooses_its_centres_from_the_first_images_of_the_pass():
    x, labels = _data(n=300, brightness=2.0)
    streamed = MixtureJointAccumulator(K, SHAPE, n_fit=100, k_max=3)
    for i in range(0, 300, 32):
        streamed.update(x[i:i + 32], labels[i:i + 32])
    centres, info = choose_centres(global_factor(x[:128]), k_max=3)  # the buffer filled at 128 images
    fixed = MixtureJointAccumulator(K, SHAPE, centres).update(x, labels)
    a, b = streamed.prior(min_count=2), fixed.prior(min_count=2)
    torch.testing.assert_close(a.mean, b.mean)
    assert a.provenance["clusters"]["k"] == info["k"] and a.provenance["clusters"]["fitted_on"] == 128
    few = MixtureJointAccumulator(K, SHAPE, n_fit=1000).update(x[:50], labels[:50]).prior(min_count=2)
    assert few.num_images == 50


def test_cluster_lookup_reads_each_image_from_its_own_cluster():
    from scp_core.priors import cell_lookup
    from scp_core.priors.global_factor import _cluster_lookup

    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 4, 2, 5, 6, generator=g)           # k=3 clusters, K=4 classes, C=2
    labels = torch.randint(0, 4, (5, 5, 6), generator=g)
    which = torch.tensor([2, 0, 1, 1, 2])
    got = _cluster_lookup(table, which, labels)
    want = torch.stack([cell_lookup(table[j], labels[i:i + 1])[0] for i, j in enumerate(which.tolist())])
    assert torch.equal(got, want)


def test_covariance_root_is_cached_and_follows_in_place_changes():
    from scp_core.priors.gaussian import cov_root as _cov_root

    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(1))
    cov = a @ a.T
    root = _cov_root(cov)
    assert _cov_root(cov) is root                              # decomposed once
    torch.testing.assert_close(root @ root.T, cov.double(), rtol=1e-5, atol=1e-5)
    cov.mul_(4.0)                                              # an in-place change invalidates the cache
    torch.testing.assert_close(_cov_root(cov) @ _cov_root(cov).T, cov.double(), rtol=1e-5, atol=1e-5)


def test_covariance_root_does_not_depend_on_eigenvector_signs(monkeypatch):
    """Another LAPACK build may return -v for an eigenvector v: the draws must not change (the root is
    symmetric). The old root V diag(sqrt(lambda)) changed sign with v, and so did every draw's component."""
    from scp_core.priors import gaussian

    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    cov = a @ a.T
    root = gaussian.cov_root(cov).clone()
    torch.testing.assert_close(root, root.T)
    eigh = torch.linalg.eigh

    def flipped(m):
        evals, evecs = eigh(m)
        return evals, evecs * torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0], dtype=evecs.dtype)

    monkeypatch.setattr(gaussian.torch.linalg, "eigh", flipped)
    other = cov.clone()
    torch.testing.assert_close(gaussian.cov_root(other), root, rtol=0, atol=1e-12)
