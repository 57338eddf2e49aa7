"""Precision, recall, density and coverage of generated samples from k-nearest-neighbour balls.

Real and generated samples are compared in a feature space (e.g. Inception pool3). A real sample's ball
has the radius of its k-th nearest real neighbour; the union of the balls estimates the real manifold
(the same with the generated samples for recall).

- Precision (Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing generative
  models", eqs. 1-2): the fraction of generated samples inside some real ball (fidelity).
- Recall (same paper, eq. 3): the fraction of real samples inside some generated ball (diversity).
- Density (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models", section
  3): how many real balls contain each generated sample, divided by k, averaged; 1 when the two
  distributions match, robust to real outliers, can exceed 1.
- Coverage (same section): the fraction of real balls that contain at least one generated sample.

Book chapter "Evaluating generative models". "Inside" is a strict ``<``, as in the reference ``prdc``
package. Distances are computed in float64 with ``torch.cdist`` on the features' device, a block of rows
at a time, so memory stays bounded for 50,000 x 50,000 comparisons.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import _validate

_BLOCK_ELEMENTS = 1 << 24  # distances held at once (128 MiB in float64)


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


class DensityCoverage(NamedTuple):
    density: float
    coverage: float


def _check(real_feats, fake_feats, k):
    _validate.positive_int("k", k)
    _validate.tensor("real_feats", real_feats, ndim=2)
    _validate.tensor("fake_feats", fake_feats, ndim=2)
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(f"real_feats and fake_feats must have the same dimension, got {real_feats.shape[1]} "
                         f"and {fake_feats.shape[1]}")
    for name, feats in (("real_feats", real_feats), ("fake_feats", fake_feats)):
        if feats.shape[0] <= k:
            raise ValueError(f"{name} needs more than k={k} samples, got {feats.shape[0]}")
    device = real_feats.device
    return real_feats.detach().to(device, torch.float64), fake_feats.detach().to(device, torch.float64)


def _row_blocks(rows: torch.Tensor, n_cols: int):
    """Split ``rows`` so that each block times ``n_cols`` distances fits in ``_BLOCK_ELEMENTS``."""
    return rows.split(max(1, _BLOCK_ELEMENTS // max(n_cols, 1)))


def knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``feats`` [N, D] to its k-th nearest other row (itself excluded)."""
    return torch.cat([torch.cdist(block, feats).topk(k + 1, dim=1, largest=False).values[:, k]
                      for block in _row_blocks(feats, len(feats))])


def _balls_containing(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point, the number of balls B(centres[i], radii[i]) that contain it (strictly)."""
    return torch.cat([(torch.cdist(block, centres) < radii).sum(1)
                      for block in _row_blocks(points, len(centres))])


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake_feats`` [M, D] against
    ``real_feats`` [N, D] with k-th-nearest-neighbour balls (the paper uses k = 3). Returns
    ``PrecisionRecall(precision, recall)``, both in [0, 1]."""
    real, fake = _check(real_feats, fake_feats, k)
    precision = (_balls_containing(fake, real, knn_radii(real, k)) > 0).double().mean()
    recall = (_balls_containing(real, fake, knn_radii(fake, k)) > 0).double().mean()
    return PrecisionRecall(float(precision), float(recall))


def density_coverage(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 5) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020) of ``fake_feats`` [M, D] against ``real_feats`` [N, D],
    with balls around the real samples only (the paper uses k = 5). Returns
    ``DensityCoverage(density, coverage)``; coverage is in [0, 1], density in [0, N / k]."""
    real, fake = _check(real_feats, fake_feats, k)
    radii = knn_radii(real, k)
    density = _balls_containing(fake, real, radii).double().mean() / k
    nearest_fake = torch.cat([torch.cdist(block, fake).min(1).values for block in _row_blocks(real, len(fake))])
    coverage = (nearest_fake < radii).double().mean()
    return DensityCoverage(float(density), float(coverage))
