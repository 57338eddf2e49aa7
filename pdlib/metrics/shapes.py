"""How close generated one-disc images are to the ``shapes`` distribution, beyond being valid.

``shapes_validity`` says whether each image is one solid disc; it does not see a model that draws only
small red discs in the middle. ``disc_attributes`` reads the six numbers ``shapes`` draws each image from
(radius, centre row and column, colour in three channels) off the foreground of any image, and
``disc_attribute_distance`` compares their distribution over the valid samples with that of data images:
the Frechet distance between Gaussians fitted to the two sets of attributes (Heusel et al. 2017, eq. 6, in
this 6-dimensional space instead of Inception features), a measure of coverage and bias among valid discs.
"""

from __future__ import annotations

import math

import torch

from .. import _validate
from ..data.shapes import BACKGROUND, _erode, _masked_mean, _pixel_centres, shapes, shapes_validity
from .frechet import feature_statistics, frechet_distance

ATTRIBUTES = ("radius", "centre_y", "centre_x", "red", "green", "blue")
FG_THRESHOLD = 0.6  #: foreground threshold of ``shapes_validity``


def disc_attributes(images: torch.Tensor) -> torch.Tensor:
    """``[B, 6]``: radius ``sqrt(area / pi)`` and centroid (row, column) of each image's foreground, in
    pixels, and its mean colour in [-1, 1] over the foreground's interior (eroded by one pixel, so a soft
    edge does not count; the whole foreground when nothing is left). The foreground is as in
    ``shapes_validity``: pixels whose largest channel distance from the black background exceeds 0.6.
    Images without foreground get NaN."""
    _validate.tensor("images", images, ndim=4)
    if images.shape[1] != 3:
        raise ValueError(f"images must be RGB [B, 3, H, W] like pdlib.data.shapes, got {tuple(images.shape)}")
    x = images.float()
    mask = (x - BACKGROUND).abs().amax(1) > FG_THRESHOLD
    area = mask.sum((1, 2)).double()
    weights = mask.double()
    height, width = mask.shape[-2:]
    cy = (weights.sum(2) * _pixel_centres(height, x.device, torch.float64)).sum(1) / area
    cx = (weights.sum(1) * _pixel_centres(width, x.device, torch.float64)).sum(1) / area
    interior = _erode(mask)
    interior = torch.where(interior.any((1, 2))[:, None, None], interior, mask)
    colour = _masked_mean(x, interior).flatten(1).double()
    out = torch.cat([(area / math.pi).sqrt()[:, None], cy[:, None], cx[:, None], colour], 1)
    out[area == 0] = float("nan")
    return out.float()


def disc_attribute_distance(samples: torch.Tensor, n_reference: int = 5000, seed: int = 0) -> dict:
    """Frechet distance between the disc attributes of the *valid* ``samples`` and those of
    ``n_reference`` fresh ``shapes`` images of the same size (module docstring). Returns ``{"frechet",
    "n_valid", "floor"}`` (the distances None with fewer than 2 valid samples), where ``floor`` is the distance between a second set of ``n_valid`` data images
    and the reference: what a perfect model would score with that many valid samples."""
    _validate.positive_int("n_reference", n_reference)
    size = samples.shape[-1]
    valid = samples[shapes_validity(samples)]
    if len(valid) < 2:
        return {"frechet": None, "n_valid": len(valid), "floor": None}
    g = torch.Generator().manual_seed(seed)
    ref = feature_statistics(disc_attributes(shapes(n_reference, size, generator=g)).double())
    fresh = feature_statistics(disc_attributes(shapes(len(valid), size, generator=g)).double())
    got = feature_statistics(disc_attributes(valid).double())
    return {"frechet": round(frechet_distance(got.mu, got.sigma, ref.mu, ref.sigma), 4), "n_valid": len(valid),
            "floor": round(frechet_distance(fresh.mu, fresh.sigma, ref.mu, ref.sigma), 4)}


__all__ = ["ATTRIBUTES", "disc_attribute_distance", "disc_attributes"]
