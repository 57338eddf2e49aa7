"""One solid disc per image: a toy image distribution whose validity can be checked exactly.

The self-perceptual-loss paper (Lin & Yang, "Diffusion Model with Perceptual Loss", section 2.1 and
figure 2a) illustrates with images that always hold one solid circle why a diffusion model trained
with MSE can sample outside its data distribution: from a few examples it may well draw two circles.
``shapes`` draws that distribution and ``shapes_validity`` checks each image analytically (no neural
network), so the fraction of valid samples measures the effect directly.

Geometry (pixel ``(i, j)`` covers ``[j, j+1] x [i, i+1]``, its centre is ``(j + 0.5, i + 0.5)``):

- radius ``r ~ U(size/5, size/3)`` pixels (3.2 to 5.3 px at size 16, 6.4 to 10.7 px at size 32);
- centre coordinates ``~ U(r + 1, size - r - 1)``: the disc keeps a 1-pixel margin, so the outermost
  ring of pixels is always background;
- a pixel is inside the disc when its centre is within ``r`` of the disc's centre (hard edge);
- colour: a random RGB direction scaled so that its brightest channel lies in ``[0.2, 1]``, i.e. at
  least 1.2 away from the black background ``-1`` (the foreground threshold 0.6 is half of that).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _validate

BACKGROUND = -1.0
"""Value of every background pixel in every channel (black)."""

RADIUS_RANGE = (1 / 5, 1 / 3)
"""Disc radius as a fraction of the image size, drawn uniformly."""

MARGIN = 1.0
"""Pixels of background kept between the disc and the image border."""

MIN_SIZE = 12
"""Smallest image size ``shapes`` draws; from it on, every image drawn passes ``shapes_validity``."""


def _pixel_centres(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    return torch.arange(size, dtype=dtype, device=device) + 0.5


def _squared_distances(cy: torch.Tensor, cx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, height, width]``: squared distance of every pixel centre from the point ``(cx, cy)``."""
    dy2 = (_pixel_centres(height, cy.device, cy.dtype)[None, :, None] - cy[:, None, None]) ** 2
    dx2 = (_pixel_centres(width, cy.device, cy.dtype)[None, None, :] - cx[:, None, None]) ** 2
    return dy2 + dx2


def shapes(n: int, size: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images ``[n, 3, size, size]`` in ``[-1, 1]``, each one solid disc on a black background.

    Radius, centre and colour are drawn independently per image (ranges in the module docstring);
    the disc lies fully inside the image with a 1-pixel margin and has a hard edge. All images are
    drawn at once from one ``torch.rand`` call, so a seeded ``generator`` reproduces them exactly.
    """
    _validate.positive_int("n", n)
    _validate.positive_int("size", size)
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} for a recognisable disc, got {size}")
    u = torch.rand(n, 7, generator=generator)
    lo, hi = RADIUS_RANGE
    r = size * (lo + (hi - lo) * u[:, 0])
    low = r + MARGIN
    cy = low + (size - 2 * low) * u[:, 1]
    cx = low + (size - 2 * low) * u[:, 2]
    direction = u[:, 3:6] / u[:, 3:6].amax(1, keepdim=True).clamp_min(1e-6)
    brightness = 0.6 + 0.4 * u[:, 6:7]  # brightest channel in [0.6, 1] before mapping to [-1, 1]
    colour = 2 * direction * brightness - 1
    mask = _squared_distances(cy, cx, size, size) <= (r**2)[:, None, None]
    return torch.where(mask[:, None], colour[:, :, None, None], torch.tensor(BACKGROUND))


def _grow(region: torch.Tensor) -> torch.Tensor:
    """Dilate a ``[B, H, W]`` boolean map by one pixel in all 8 directions (a 3x3 square)."""
    rows = region.clone()
    rows[:, 1:] |= region[:, :-1]
    rows[:, :-1] |= region[:, 1:]
    grown = rows.clone()
    grown[:, :, 1:] |= rows[:, :, :-1]
    grown[:, :, :-1] |= rows[:, :, 1:]
    return grown


def _erode(region: torch.Tensor) -> torch.Tensor:
    """Pixels of ``region`` whose 8 neighbours (inside the image) are all in ``region``."""
    return ~_grow(~region) & region


def _flood_fill(seed: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Pixels of ``allowed`` 8-connected to ``seed`` (all ``[B, H, W]`` bool), for the whole batch.

    Grows the seed one pixel per iteration, restricted to ``allowed``, until nothing changes; a path
    inside an ``H x W`` image is at most ``H * W`` pixels long, which bounds the iterations.
    """
    filled = seed & allowed
    for _ in range(allowed.shape[-2] * allowed.shape[-1]):
        grown = _grow(filled) & allowed
        if torch.equal(grown, filled):
            break
        filled = grown
    return filled


def _euler_number(region: torch.Tensor) -> torch.Tensor:
    """Components minus holes of each ``[B, H, W]`` boolean map (8-connected foreground), ``[B]``.

    Gray's bit-quad formula: over all 2x2 windows of the zero-padded map,
    ``E = (n1 - n3 - 2 nd) / 4`` with ``n1``/``n3`` the windows holding exactly 1/3 foreground pixels
    and ``nd`` those holding exactly the two pixels of one diagonal (S. B. Gray, "Local properties of
    binary images in two dimensions", IEEE Trans. Computers, 1971).
    """
    p = F.pad(region.to(torch.int8), (1, 1, 1, 1))
    a, b, c, d = p[:, :-1, :-1], p[:, :-1, 1:], p[:, 1:, :-1], p[:, 1:, 1:]
    count = a + b + c + d
    diagonal = (count == 2) & (a == d)
    n1, n3, nd = (count == 1).sum((1, 2)), (count == 3).sum((1, 2)), diagonal.sum((1, 2))
    return (n1 - n3 - 2 * nd) // 4


def _disc_fit_iou(mask: torch.Tensor) -> torch.Tensor:
    """IoU ``[B]`` between each ``[B, H, W]`` mask and the digital disc fitted from its moments.

    The fitted disc is centred on the mask's centroid and holds the ``area`` pixels nearest to it
    (ties included): the digital disc with the mask's own centre and pixel count.
    """
    weights = mask.double()
    area = mask.sum((1, 2))
    total = area.clamp_min(1).double()
    height, width = mask.shape[-2:]
    cy = (weights.sum(2) * _pixel_centres(height, mask.device, torch.float64)).sum(1) / total
    cx = (weights.sum(1) * _pixel_centres(width, mask.device, torch.float64)).sum(1) / total
    d2 = _squared_distances(cy, cx, height, width)
    kth = d2.flatten(1).sort(1).values.gather(1, (area - 1).clamp_min(0)[:, None])
    fitted = d2 <= kth[:, :, None]
    return (fitted & mask).sum((1, 2)).double() / (fitted | mask).sum((1, 2)).clamp_min(1).double()


def _masked_mean(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-channel mean ``[B, C, 1, 1]`` of ``x`` over the pixels of ``region`` (``[B, H, W]``)."""
    w = region[:, None].to(x.dtype)
    return (x * w).sum((2, 3), keepdim=True) / w.sum((2, 3), keepdim=True).clamp_min(1)


def shapes_validity(images: torch.Tensor, tol: float = 0.1, *, fg_threshold: float = 0.6,
                    iou_threshold: float = 0.88, min_radius: float = 1.5) -> torch.Tensor:
    """``BoolTensor [B]``: is each image exactly one solid disc on the background of ``shapes``?

    The check is analytic and vectorised over the batch. An image is valid when all of these hold:

    1. foreground = pixels whose largest channel distance from the background ``-1`` exceeds
       ``fg_threshold`` (0.6, half the smallest colour distance ``shapes`` draws);
    2. the foreground is one 8-connected component (a batched flood fill from one of its pixels
       reaches all of it) and has no hole: its Euler number (components minus holes; 0 when the
       foreground is empty) is 1;
    3. the foreground does not touch the outermost pixel ring (``shapes`` keeps a 1-pixel margin, so
       a disc cut by the border is rejected);
    4. solid colour: in the disc's interior (the foreground eroded by one pixel, so that soft edges of
       a generated image do not count), every channel's standard deviation is at most ``tol``;
    5. clean background: on background pixels not adjacent to the disc, every channel's RMS distance
       from ``-1`` is at most ``tol``;
    6. round: the fitted radius ``sqrt(area / pi)`` is at least ``min_radius`` pixels, and the mask
       overlaps with IoU at least ``iou_threshold`` the digital disc fitted from its own moments: the
       ``area`` pixels nearest to the mask's centroid.

    Tolerances, tuned on 4,000 images per size and on the failures in ``tests/test_data_images.py``:
    ``tol=0.1`` accepts per-channel noise of std 0.05 on colours off by a few hundredths, and blur
    confined to the one-pixel edge band; it rejects noise of std 0.2 (and about 97% of images at
    0.1), and colour gradients across the disc. ``iou_threshold=0.88`` accepts every ``shapes`` image
    at sizes 12 to 64 (the worst digital disc at size 16 scores 0.90: a small disc whose outline has
    one-pixel spikes), and rejects ellipses of aspect 2 (IoU about 0.6-0.7) and squares (about
    0.82-0.87). The limit of the resolution: a square of side 9 px scores 0.906, as it differs from
    the digital disc of radius 5 by only 8 corner pixels; the check accepts it, as no check tolerant
    of generated images could tell the two apart. Squares of side 3 to 5 px are digital discs.
    """
    _validate.tensor("images", images, ndim=4)
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [-1, 1], got dtype {images.dtype}")
    x = images.float()
    mask = (x - BACKGROUND).abs().amax(1) > fg_threshold
    area = mask.sum((1, 2))

    flat = mask.flatten(1)
    seed = torch.zeros_like(flat)
    seed[torch.arange(len(flat)), flat.to(torch.uint8).argmax(1)] = True
    one_component = _flood_fill(seed.view_as(mask), mask).sum((1, 2)) == area

    off_border = ~(mask[:, [0, -1]].any((1, 2)) | mask[:, :, [0, -1]].any((1, 2)))
    no_hole = _euler_number(mask) == 1  # components - holes; 0 for an empty mask

    interior = _erode(mask)
    interior = torch.where(interior.any((1, 2))[:, None, None], interior, mask)
    colour_std = _masked_mean((x - _masked_mean(x, interior)) ** 2, interior).sqrt().amax(1).flatten()
    solid = colour_std <= tol
    background_rms = _masked_mean((x - BACKGROUND) ** 2, ~_grow(mask)).sqrt().amax(1).flatten()
    clean_background = background_rms <= tol

    round_ = (_disc_fit_iou(mask) >= iou_threshold) & (area >= math.pi * min_radius**2)

    return one_component & no_hole & off_border & solid & clean_background & round_
