"""A vector Gaussian estimated in one streaming pass (full covariance), and its draws."""
from __future__ import annotations

import torch

__all__ = ["GaussianAccumulator", "cov_root", "mvn_draw"]


class GaussianAccumulator:
    """Exact streaming mean and covariance of vectors ``[B, D]`` (Welford; Chan et al. to merge), float64."""

    def __init__(self, dim: int, device="cpu"):
        self.dim = int(dim)
        self.count = 0.0
        self.mean = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)

    def update(self, v: torch.Tensor) -> "GaussianAccumulator":
        v = v.detach().to(self.mean.device, torch.float64).reshape(len(v), -1)
        if v.shape[1] != self.dim:
            raise ValueError(f"vectors have {v.shape[1]} entries, this accumulator was made for {self.dim}")
        if len(v) == 0:
            return self
        mean_b = v.mean(0)
        d = v - mean_b
        return self._combine(float(len(v)), mean_b, d.T @ d)

    def _combine(self, n_b, mean_b, m2_b) -> "GaussianAccumulator":
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (self.count * n_b / n)
        self.count = n
        return self

    def merge(self, other: "GaussianAccumulator") -> "GaussianAccumulator":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge Gaussian statistics of dimension {other.dim} into {self.dim}")
        if other.count == 0:
            return self
        return self._combine(other.count, other.mean.to(self.mean.device), other.m2.to(self.mean.device))

    def cov(self) -> torch.Tensor:
        """The maximum-likelihood covariance ``M2 / n``."""
        return self.m2 / max(self.count, 1.0)

    def state_dict(self) -> dict:
        return {"count": torch.tensor(self.count, dtype=torch.float64), "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> "GaussianAccumulator":
        self.count = float(state["count"])
        self.mean = state["mean"].to(self.mean.device, torch.float64).clone()
        self.m2 = state["m2"].to(self.mean.device, torch.float64).clone()
        return self


def cov_root(cov: torch.Tensor) -> torch.Tensor:
    """The symmetric square root ``root = V diag(sqrt(lambda)) V^T`` of ``cov = V diag(lambda) V^T``.

    ``cov`` is PSD, possibly singular, so an eigen-decomposition, not Cholesky. The symmetric root
    (rather than ``V diag(sqrt(lambda))``) does not depend on the signs LAPACK gives the eigenvectors,
    nor on the basis it picks inside a repeated eigenvalue: two machines whose libraries disagree
    there draw the same samples from the same ``z`` (the non-symmetric root made a draw's values
    depend on the library build). ``root @ root.T = cov`` either way.

    Cached on the tensor itself (keyed by its storage and version), so a prior pays the decomposition
    once, not at every draw.
    """
    key = (cov.data_ptr(), cov._version)
    cached = getattr(cov, "_scp_root", None)
    if cached is None or cached[0] != key:
        evals, evecs = torch.linalg.eigh(cov.double())
        cached = (key, (evecs * evals.clamp(min=0).sqrt()) @ evecs.T)
        cov._scp_root = cached
    return cached[1]


def mvn_draw(mean: torch.Tensor, cov: torch.Tensor, n: int, generator) -> torch.Tensor:
    """``n`` draws of ``N(mean, cov)``: ``mean + z root^T`` with ``z ~ N(0, I)``."""
    root = cov_root(cov).to(mean.device, mean.dtype)
    z = torch.randn(n, len(mean), generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + z @ root.T
