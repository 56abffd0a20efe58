"""Noise priors that keep each image's global factors (beyond the paper).

The SCP priors (:mod:`scp_core.priors`) draw every latent token independently, so one draw
mixes tokens of bright and dark images: a per-image global factor such as lighting averages
out. The priors here keep the correlation between all tokens of one image. Each is built in
one streaming pass with memory independent of the number of images, merges shards exactly,
and has the :class:`~scp_core.priors.Prior` interface (``distribution_map`` gives the
per-token *marginal*; ``sample`` draws the correlated latent).

* :class:`GlobalJointPrior` (``joint-global``): with ``g_i`` the per-channel mean of latent
  ``x0_i`` over positions (its "global factor"), the joint prior (Eq. 8) is fitted to the
  *residuals* ``r_i = x0_i - g_i`` and ``g`` gets a full-covariance Gaussian
  ``N(g_mean, g_cov)`` over the reference images. A draw takes one ``g ~ N(g_mean, g_cov)``
  per image and adds it to every token of a residual draw: ``x = m_r + s_r * eps + g``.
  If every image has the same ``g`` it equals the joint prior's draw.
* :class:`MixtureJointPrior` (``joint-mixture``): images are assigned to the nearest of
  ``k`` centres of their global factor (fixed before the pass: :func:`choose_centres` picks
  ``k`` by BIC on a subset of the training images); one joint prior per cluster; a draw picks
  the cluster by its frequency, once per image. With one cluster it equals the joint prior.

The signal-leak initialisation of Everaert et al., compared with these in notebook 08, is in
:mod:`.signal_leak`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .accumulator import PriorAccumulator
from .files import prior_kind
from .gaussian import GaussianAccumulator, mvn_draw
from .scp import MIN_COUNT, JointPrior, cell_lookup

__all__ = ["global_factor", "GlobalJointAccumulator", "GlobalJointPrior",
           "MixtureJointAccumulator", "MixtureJointPrior", "choose_centres", "kmeans"]


def global_factor(latents: torch.Tensor) -> torch.Tensor:
    """``g_i``: the per-channel mean of each latent over positions, ``[B, C, H, W] -> [B, C]``."""
    return latents.mean(dim=(2, 3))


def _joint_tensors(acc: PriorAccumulator, min_count: int, fallback: str):
    j = acc.joint(min_count, fallback)
    return j.mean, j.std, j.count


# --------------------------------------------------------------------------- joint + global factor
class GlobalJointAccumulator:
    """One pass for :class:`GlobalJointPrior`: the joint statistics of residuals and the Gaussian of ``g``."""

    def __init__(self, num_classes: int, latent_shape: Sequence[int], device="cpu"):
        self.residual = PriorAccumulator(num_classes, latent_shape, device)
        self.glob = GaussianAccumulator(int(latent_shape[0]), device)

    @torch.no_grad()
    def update(self, latents: torch.Tensor, labels) -> "GlobalJointAccumulator":
        g = global_factor(latents.double())
        self.residual.update(latents.double() - g[:, :, None, None], labels)
        self.glob.update(g)
        return self

    def merge(self, other: "GlobalJointAccumulator") -> "GlobalJointAccumulator":
        self.residual.merge(other.residual)
        self.glob.merge(other.glob)
        return self

    def prior(self, min_count: int = MIN_COUNT, fallback: str = "class",
              provenance: dict | None = None) -> "GlobalJointPrior":
        mean, std, count = _joint_tensors(self.residual, min_count, fallback)
        r = self.residual
        return GlobalJointPrior(mean=mean, std=std, count=count, g_mean=self.glob.mean.float(),
                                g_cov=self.glob.cov().float(), min_count=int(min_count), fallback=fallback,
                                num_classes=r.num_classes, latent_shape=r.latent_shape, num_images=r.num_images,
                                provenance=provenance or {})


@prior_kind
@dataclass(eq=False, repr=False)
class GlobalJointPrior(JointPrior):
    """The joint prior of residuals ``x0 - g`` plus one draw of the global factor ``g`` per image.

    Tensors: ``mean``, ``std`` ``[K, C, H, W]`` and ``count`` ``[K, H, W]`` (the residuals' joint
    prior, rare cells filled as in Eq. 8; the fields of :class:`JointPrior`), ``g_mean [C]`` and
    ``g_cov [C, C]``.
    """

    kind = "joint-global"
    TENSORS = JointPrior.TENSORS + ("g_mean", "g_cov")
    g_mean: torch.Tensor = None
    g_cov: torch.Tensor = None

    def expected_shapes(self):
        C = self.latent_shape[0]
        return {**super().expected_shapes(), "g_mean": (C,), "g_cov": (C, C)}

    def _map(self, labels):
        """The per-token marginal: mean ``m_r + g_mean``, variance ``s_r^2 + diag(g_cov)``."""
        mean, std = cell_lookup(self.mean, labels), cell_lookup(self.std, labels)
        g_var = torch.diagonal(self.g_cov).to(labels.device)[None, :, None, None]
        return mean + self.g_mean.to(labels.device)[None, :, None, None], (std ** 2 + g_var).sqrt()

    def sample(self, labels, generator: torch.Generator | None = None) -> torch.Tensor:
        labels = self.check_labels(labels)
        mean, std = cell_lookup(self.mean, labels), cell_lookup(self.std, labels)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        g = mvn_draw(self.g_mean.to(mean.device, mean.dtype), self.g_cov, len(labels), generator)
        return mean + std * eps + g[:, :, None, None]          # one g for every token of an image


# --------------------------------------------------------------------------- mixture of joint priors
def kmeans(v: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means (k-means++ start) of ``v [N, D]``; returns ``(centres [k, D], assignment [N])``."""
    v = v.double()
    g = torch.Generator().manual_seed(seed)
    centres = v[torch.randint(len(v), (1,), generator=g)]
    for _ in range(1, k):
        d2 = torch.cdist(v, centres).min(1).values ** 2
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / len(d2))
        centres = torch.cat([centres, v[torch.multinomial(p, 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(v, centres).argmin(1)
        new = torch.stack([v[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres, torch.cdist(v, centres).argmin(1)


def _bic(v: torch.Tensor, centres: torch.Tensor, assign: torch.Tensor) -> float:
    """BIC of a hard-assignment mixture of diagonal Gaussians (one per cluster, weights by frequency).

    ``-2 log L + p log N`` with ``p = k (2 D) + (k - 1)`` free parameters.
    """
    n, d = v.shape
    k = len(centres)
    loglik = 0.0
    for j in range(k):
        x = v[assign == j]
        if len(x) == 0:
            continue
        var = x.var(0, unbiased=False).clamp(min=1e-6 * float(v.var(0).mean()) + 1e-12)
        loglik += float(-0.5 * (((x - x.mean(0)) ** 2 / var).sum() + len(x) * (torch.log(2 * math.pi * var)).sum())
                        + len(x) * math.log(len(x) / n))
    return -2 * loglik + (k * 2 * d + k - 1) * math.log(n)


def choose_centres(g: torch.Tensor, k_max: int = 4, seed: int = 0, min_size: int = 10) -> tuple[torch.Tensor, dict]:
    """Cluster centres of global factors ``g [N, C]``; ``k`` in ``1..k_max`` by the lowest BIC.

    Candidates with a cluster of fewer than ``min_size`` images are skipped (too few to fit a
    joint prior). Fit it on a subset of the *training* images, never on the evaluation maps.

    Returns:
        ``(centres [k, C], {"k": k, "bic": {k: value}})``.
    """
    g = g.double()
    best, report = None, {}
    for k in range(1, int(k_max) + 1):
        centres, assign = kmeans(g, k, seed)
        if k > 1 and torch.bincount(assign, minlength=k).min() < min_size:
            continue
        report[k] = _bic(g, centres, assign)
        if best is None or report[k] < report[best[0]]:
            best = (k, centres)
    return best[1].float(), {"k": best[0], "bic": report}


class MixtureJointAccumulator:
    """One pass for :class:`MixtureJointPrior`: a :class:`PriorAccumulator` per cluster of global factors.

    Args:
        centres: ``[k, C]`` cluster centres fixed before the pass (:func:`choose_centres`);
            shards built with the same centres merge exactly.
        n_fit: with ``centres=None``, the first ``n_fit`` images of the pass choose them
            (:func:`choose_centres` with ``k_max`` and ``seed``): they are held in a buffer of at
            most ``n_fit`` latents, then counted like every later image. Memory stays
            independent of the number of images.
    """

    def __init__(self, num_classes: int, latent_shape: Sequence[int], centres: torch.Tensor | None = None,
                 n_fit: int = 128, k_max: int = 4, seed: int = 0, device="cpu"):
        self.num_classes, self.latent_shape, self.device = num_classes, tuple(latent_shape), device
        self.n_fit, self.k_max, self.seed = int(n_fit), int(k_max), int(seed)
        self.choice: dict = {"k": None, "bic": {}, "fitted_on": 0}
        self._buffer: list = []
        self.centres, self.parts = None, []
        if centres is not None:
            self._set_centres(centres)

    def _set_centres(self, centres) -> None:
        self.centres = torch.as_tensor(centres, dtype=torch.float64).reshape(-1, int(self.latent_shape[0]))
        self.parts = [PriorAccumulator(self.num_classes, self.latent_shape, self.device)
                      for _ in range(len(self.centres))]
        self.choice["k"] = len(self.centres)

    def _fit_from_buffer(self) -> None:
        x = torch.cat([b[0] for b in self._buffer])
        centres, info = choose_centres(global_factor(x), self.k_max, self.seed)
        self._set_centres(centres)
        self.choice.update(info, fitted_on=len(x))
        buffered, self._buffer = self._buffer, []
        for lat, lab in buffered:
            self._add(lat, lab)

    def assign(self, latents: torch.Tensor) -> torch.Tensor:
        """The cluster of each latent: the nearest centre of its global factor."""
        return torch.cdist(global_factor(latents.double()), self.centres.to(latents.device)).argmin(1)

    def _add(self, latents, labels) -> None:
        which = self.assign(latents)
        for j, acc in enumerate(self.parts):
            sel = which == j
            if sel.any():
                acc.update(latents[sel], labels[sel.to(labels.device)])

    @torch.no_grad()
    def update(self, latents: torch.Tensor, labels) -> "MixtureJointAccumulator":
        labels = torch.as_tensor(labels)
        if self.centres is not None:
            self._add(latents, labels)
            return self
        self._buffer.append((latents.detach().cpu(), labels.cpu()))
        if sum(len(b[0]) for b in self._buffer) >= self.n_fit:
            self._fit_from_buffer()
        return self

    def merge(self, other: "MixtureJointAccumulator") -> "MixtureJointAccumulator":
        if self.centres is None or other.centres is None:
            raise ValueError("merge needs fixed cluster centres on both sides: build every shard with "
                             "MixtureJointAccumulator(..., centres=choose_centres(...)[0])")
        if not torch.equal(self.centres, other.centres.to(self.centres.device)):
            raise ValueError("cannot merge mixture statistics built with different cluster centres; "
                             "build every shard with the same choose_centres(...) result")
        for a, b in zip(self.parts, other.parts):
            a.merge(b)
        return self

    def prior(self, min_count: int = MIN_COUNT, fallback: str = "class",
              provenance: dict | None = None) -> "MixtureJointPrior":
        if self.centres is None and self._buffer:  # fewer images than n_fit: choose on all of them
            self._fit_from_buffer()
        used = [acc for acc in self.parts if acc.num_images > 0]
        if not used:
            raise ValueError("the accumulator is empty: call update(latents, labels) before asking for a prior")
        tensors = [_joint_tensors(acc, min_count, fallback) for acc in used]
        n = torch.tensor([float(acc.num_images) for acc in used])
        first = used[0]
        kept = [i for i, a in enumerate(self.parts) if a.num_images > 0]
        return MixtureJointPrior(mean=torch.stack([t[0] for t in tensors]), std=torch.stack([t[1] for t in tensors]),
                                 count=torch.stack([t[2] for t in tensors]), weights=n / n.sum(),
                                 centres=self.centres[kept].float(),
                                 min_count=int(min_count), fallback=fallback, num_classes=first.num_classes,
                                 latent_shape=first.latent_shape, num_images=int(n.sum()),
                                 provenance={**(provenance or {}), "clusters": self.choice})


@prior_kind
@dataclass(eq=False, repr=False)
class MixtureJointPrior(JointPrior):
    """``k`` joint priors, one per cluster of images' global factors, mixed by cluster frequency.

    Tensors: ``mean``, ``std`` ``[k, K, C, H, W]``, ``count [k, K, H, W]`` (a :class:`JointPrior`'s
    per cluster), ``weights [k]`` and the clusters' ``centres [k, C]``.
    """

    kind = "joint-mixture"
    TENSORS = JointPrior.TENSORS + ("weights", "centres")
    weights: torch.Tensor = None
    centres: torch.Tensor = None

    def expected_shapes(self):
        k = len(self.weights)
        shapes = {name: (k, *shape) for name, shape in super().expected_shapes().items()}
        return {**shapes, "weights": (k,), "centres": (k, self.latent_shape[0])}

    def _parts(self, labels):
        return ([cell_lookup(m, labels) for m in self.mean], [cell_lookup(s, labels) for s in self.std])

    def _map(self, labels):
        """The per-token marginal of the mixture: ``sum w m``, ``sum w (s^2 + m^2) - mean^2``."""
        means, stds = self._parts(labels)
        w = self.weights.to(labels.device)
        mean = sum(wj * m for wj, m in zip(w, means))
        second = sum(wj * (s ** 2 + m ** 2) for wj, m, s in zip(w, means, stds))
        return mean, (second - mean ** 2).clamp(min=0).sqrt()

    def sample(self, labels, generator: torch.Generator | None = None) -> torch.Tensor:
        labels = self.check_labels(labels)
        B, H, W = labels.shape
        eps = torch.randn(B, self.mean.shape[2], H, W, generator=generator, device=labels.device, dtype=self.mean.dtype)
        which = torch.multinomial(self.weights.double().cpu(), B, replacement=True, generator=generator)
        return (_cluster_lookup(self.mean, which, labels)            # one cluster for every token of an image
                + _cluster_lookup(self.std, which, labels) * eps)


def _cluster_lookup(table: torch.Tensor, which: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``table [k, K, C, H, W]`` read at ``(which[b], labels[b, y, x], :, y, x)``: ``[B, C, H, W]``.

    :func:`cell_lookup` of cluster ``which[b]`` for image ``b``, without looking up the other clusters.
    """
    B, H, W = labels.shape
    t = table.to(labels.device).permute(0, 1, 3, 4, 2)  # [k, K, H, W, C]
    bb = which.to(labels.device)[:, None, None].expand(B, H, W)
    yy = torch.arange(H, device=labels.device)[None, :, None].expand(B, H, W)
    xx = torch.arange(W, device=labels.device)[None, None, :].expand(B, H, W)
    return t[bb, labels, yy, xx].permute(0, 3, 1, 2).contiguous()
