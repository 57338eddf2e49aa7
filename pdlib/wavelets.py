"""The one-level 2D Haar wavelet transform, orthonormal, as used by wavelet diffusion.

Wavelet diffusion (Phung et al. 2023, "Wavelet diffusion models are fast and scalable image generators",
section 3; WDDGAN) runs a denoising diffusion GAN on the Haar subbands of the image: an image
``[B, C, H, W]`` becomes ``[B, 4C, H/2, W/2]``, the low-pass band LL and the three detail bands LH, HL, HH
concatenated along channels (12 channels for RGB), which makes the networks work at half resolution.

For each 2x2 block of pixels ::

    a b
    c d

(``a`` at even row and even column, ``b`` to its right, ``c`` below it), the orthonormal Haar transform is

- ``LL = (a + b + c + d) / 2``  the local average times 2;
- ``LH = (a + b - c - d) / 2``  top row minus bottom row: low-pass along the width, high-pass along the
  height, so it responds to *horizontal* edges (a change from one row to the next);
- ``HL = (a - b + c - d) / 2``  left column minus right column: responds to *vertical* edges;
- ``HH = (a - b - c + d) / 2``  the diagonal difference.

These are PyWavelets' ``pywt.dwt2(x, "haar")`` bands ``cA, (cH, cV, cD)`` in that order and with those
signs (PyWavelets' Haar detail filter gives ``(first - second) / sqrt(2)`` along each axis). The 4x4 matrix
of the transform is symmetric and orthogonal, so it is its own inverse: ``haar_idwt`` applies the same
combinations to the bands, and the transform preserves the sum of squares. Book chapter "Denoising
diffusion GANs" (wavelet variant).
"""

from __future__ import annotations

import torch

from . import _validate


def _combine(p: torch.Tensor, q: torch.Tensor, r: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(p+q+r+s, p+q-r-s, p-q+r-s, p-q-r+s) / 2``: the symmetric orthogonal Haar matrix applied to the
    four entries, pixels ``(a, b, c, d) -> (LL, LH, HL, HH)`` and, being its own inverse, bands back to pixels."""
    sum_pq, diff_pq, sum_rs, diff_rs = p + q, p - q, r + s, r - s
    return ((sum_pq + sum_rs) / 2, (sum_pq - sum_rs) / 2, (diff_pq + diff_rs) / 2, (diff_pq - diff_rs) / 2)


def _check(name: str, x) -> None:
    _validate.tensor(name, x, ndim=4)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal 2D Haar transform: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` with channels
    ``[LL (C), LH (C), HL (C), HH (C)]`` (module docstring for the formulas and signs). H and W must be even."""
    _check("x", x)
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"haar_dwt needs an even height and width, got {x.shape[-2]}x{x.shape[-1]}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat(_combine(a, b, c, d), dim=1)


def haar_idwt(y: torch.Tensor) -> torch.Tensor:
    """The exact inverse of ``haar_dwt``: ``[B, 4C, h, w] -> [B, C, 2h, 2w]``, the channels read as
    ``[LL, LH, HL, HH]``, C channels each."""
    _check("y", y)
    if y.shape[1] % 4:
        raise ValueError(f"haar_idwt needs 4 C channels ([LL, LH, HL, HH]), got {y.shape[1]}")
    ll, lh, hl, hh = y.chunk(4, dim=1)
    a, b, c, d = _combine(ll, lh, hl, hh)
    bsz, ch, hgt, wid = a.shape
    top = torch.stack([a, b], dim=-1).reshape(bsz, ch, hgt, 2 * wid)  # a b a b ... along the width
    bottom = torch.stack([c, d], dim=-1).reshape(bsz, ch, hgt, 2 * wid)
    return torch.stack([top, bottom], dim=-2).reshape(bsz, ch, 2 * hgt, 2 * wid)


__all__ = ["haar_dwt", "haar_idwt"]
