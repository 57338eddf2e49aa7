"""Radially averaged power spectrum of images: how much of their energy lies at each spatial frequency.

The LPL paper (Berrada Ifriqi et al. 2025, "Boosting latent diffusion with perceptual objectives", section 4.2,
Figures 4-5) compares the average power spectrum of generated and real images and finds more
high-frequency power in samples of models trained with the latent perceptual loss. Book chapter
"Latent perceptual loss".
"""

from __future__ import annotations

import torch

from .. import _validate

_FFT_CHUNK = 64  # images transformed at once, to bound the FFT's memory


def power_spectrum(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of ``images`` [B, C, H, W], averaged over batch and channels.

    Each channel's 2-D DFT is taken with orthonormal scaling, ``P(k) = |FFT(x)(k)|^2 / (H W)``, so that
    ``sum_k P(k) = sum_pixels x^2`` (Parseval) and white noise of variance s^2 has ``P = s^2`` at every
    frequency. Frequencies are pooled by radius ``|k| = sqrt(ky^2 + kx^2)`` in cycles per pixel, into
    bins of width ``1 / min(H, W)`` centred on multiples of it (for an N x N image, bin f holds the
    frequencies of f cycles per image, rounded). Bins run from 0 to the corner frequency ``sqrt(1/2)``,
    so the corners beyond the Nyquist radius 1/2 are kept and Parseval holds over all bins.

    Returns ``(frequencies, power)``: bin centres in cycles per pixel [R] and the mean of ``P`` over each
    bin [R] (float64). Multiply ``frequencies`` by the image size for cycles per image. Plot ``power`` on
    a log scale; compare image sets of the same size.
    """
    _validate.tensor("images", images, ndim=4)
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor, got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    b, c, h, w = images.shape
    total = torch.zeros(h, w, dtype=torch.float64, device=images.device)
    for chunk in images.detach().split(_FFT_CHUNK):
        total += torch.fft.fft2(chunk.double(), norm="ortho").abs().square().sum((0, 1))
    mean_power = total / (b * c)

    n = min(h, w)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=images.device)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=images.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    bins = torch.round(radius * n).long().flatten()
    counts = torch.bincount(bins)
    sums = torch.bincount(bins, weights=mean_power.flatten())
    keep = counts > 0
    frequencies = torch.arange(len(counts), dtype=torch.float64, device=images.device) / n
    return frequencies[keep].cpu(), (sums[keep] / counts[keep]).cpu()
