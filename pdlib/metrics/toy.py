"""Distances between 2D point clouds, for measuring toy samplers without a neural network.

Book: chapter "DDIM and fast sampling" (quality against the number of steps).
"""

from __future__ import annotations

import torch

from .. import _validate


def _check_pair(x, y):
    _validate.tensor("x", x, ndim=2)
    _validate.tensor("y", y, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def _quantiles(sorted_proj: torch.Tensor, k: int) -> torch.Tensor:
    """Values of each column's empirical quantile function at the k levels (i + 0.5)/k."""
    n = sorted_proj.shape[0]
    pos = ((torch.arange(k, dtype=sorted_proj.dtype) + 0.5) / k * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo)[:, None]
    return sorted_proj[lo] * (1 - w) + sorted_proj[hi] * w


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011): sqrt of the mean over random unit
    directions u of W2^2 between the 1D projections u.x and u.y, computed from sorted samples.

    Samples of different sizes are compared through their quantile functions.
    """
    _check_pair(x, y)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    dirs = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    if len(px) != len(py):
        k = max(len(px), len(py))
        px, py = _quantiles(px, k), _quantiles(py, k)
    return float(((px - py) ** 2).mean().sqrt())


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) with a sum of RBF
    kernels ``k(a, b) = exp(-||a - b||^2 / (2 h^2))`` over the ``bandwidths`` h. Near 0 (it can be
    slightly negative) when x and y come from the same distribution."""
    _check_pair(x, y)
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd needs at least 2 samples on each side")
    h2 = torch.tensor(bandwidths, dtype=torch.float64) ** 2

    def kernel(a, b):
        d2 = torch.cdist(a, b).pow(2)[..., None]
        return torch.exp(-d2 / (2 * h2)).sum(-1)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())
