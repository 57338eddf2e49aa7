"""The latent perceptual loss (LPL) of Berrada Ifriqi et al. 2025, "Boosting latent diffusion with perceptual
objectives", section 3.2, eq. 3: compare the predicted clean latent and the true one through the intermediate
feature maps of the frozen autoencoder decoder, instead of (in addition to) the latents themselves.

For one sample, with ``phi_l`` the decoder's ``l``-th feature map of the target latent ``z0`` and ``phihat_l``
that of the prediction ``zhat0`` (eq. 2), this module computes

    L_LPL = 1[SNR >= s] * sum_l  (omega_l / C_l) * sum_c  mean_{h,w} ( rho_{l,c} * (phi'_{l,c} - phihat'_{l,c}) )^2

- ``phi'``, ``phihat'``: the maps standardised channel by channel ("cross-normalisation", below);
- ``rho_{l,c}``: a binary mask that removes the outliers of the *predicted* map ``phihat_{l,c}`` ("outlier
  detection", below); being binary, multiplying the difference or its square is the same;
- ``omega_l``: the depth weight (below); ``C_l``: the channels of map ``l`` (the inner sum is a channel mean);
- ``1[SNR >= s]``: the gate, which keeps only low-noise samples (below).

Decisions the paper leaves open, and where each constant comes from. "The example" is the research example
of the authors' loss in diffusers, ``examples/research_projects/lpl`` (``lpl_loss.py``, ``train_sdxl_lpl.py``),
described there as based on the authors' reference implementation.

**Feature maps.** ``AutoEncoder.decoder_features(z)`` (scaled latents, lowest resolution first): the middle
block's output, then each decoder level's. The example uses the same hierarchy on SDXL's decoder (mid block,
then the up blocks). ``layers`` selects some of them; all are used by default, as in the paper's main runs.

**Spatial reduction.** Eq. 3 writes a squared Euclidean norm, a *sum* over the ``H_l x W_l`` positions, which
would make a layer's term grow with its pixel count and the loss with the image size. Here the sum is divided
by ``H_l * W_l`` (a mean over all positions, masked ones counting as zero error), a fixed factor per layer.
The example averages over positions too (over the unmasked ones), and applies the authors' depth weights
(below) to those means.

**Cross-normalisation** (section 3.2, "Normalization"; ablation in section 4.3). Each channel of each map is
standardised to zero mean and unit variance, with statistics taken per sample and per channel over the spatial
positions (so one sample's loss does not depend on the rest of the batch):
``phi' = (phi - mu) / sqrt(var + NORM_EPS)``. ``normalize`` picks whose statistics:

- ``"predicted"`` (the paper, default): the predicted map's, for both maps. Then the means cancel and the term
  is ``((phi - phihat) / sigmahat)^2``: the difference is measured in units of the prediction's spread. The
  statistics stay in the autograd graph (eq. 3 does not stop their gradient). The paper reports FID 3.79 with
  them against 4.79 with separate statistics;
- ``"target"``: the target map's, for both (the example's ``"shared"`` mode, which its README recommends);
- ``"separate"``: each map its own (the paper's ablation). It cannot see a per-channel scale and shift of the
  prediction: ``phihat = a * phi + b`` (``a > 0``) standardises to the same map and costs nothing.

With the outlier mask on, the mean and variance are taken over the positions the mask keeps, so that an outlier
does not inflate the spread that scales every other position (the example gets the same effect by zeroing the
outliers before it normalises). The example's normalisation is LPIPS-style (each position's channel vector
divided by its Euclidean norm) rather than the per-channel standardisation the paper describes; this module
follows the paper's text.

**Outlier detection** (``rho`` in eq. 3; the paper names it, figure 2 "OD", without giving its constants). On the
*predicted* map, as eq. 3 writes ``rho(phihat)`` (the example computes it on the target's map instead), per
sample and channel, and without gradient:

1. keep the positions whose value lies within ``[q_lo - MARGIN * std, q_hi + MARGIN * std]``, where ``q_lo`` and
   ``q_hi`` are the channel's ``QUANTILE`` and ``1 - QUANTILE`` quantiles (order statistics of rank
   ``floor(QUANTILE * (N - 1))`` from the bottom and from the top, torch's ``"lower"``/``"higher"`` quantiles) and
   ``std`` its standard deviation. ``QUANTILE = 0.02`` and ``MARGIN = 2`` are the example's (its README: "2%
   quantiles", "adaptive thresholding based on standard deviation"). The bounds are inclusive, so a constant
   channel is kept whole;
2. a morphological *closing* of the keep-mask with a ``CLOSING_KERNEL = 3`` square (fills one-pixel holes: an
   isolated outlier position is a false alarm and is kept), then an *opening* with an ``OPENING_KERNEL = 5``
   square (removes kept islands too small to hold the kernel, merging nearby outliers into one masked region).
   The sizes and the order are the example's (``closing=3``, ``opening=5``, in that order); the example applies
   only the first half of each (a dilation, then an erosion), here both are complete operations, so a map
   without outliers keeps its mask all ones. Dilation and erosion are stride-1 max-pooling, vectorised over
   samples and channels; positions outside the map never count (``max_pool2d`` pads with ``-inf``);
3. the kernel sizes hold at the image's resolution and shrink with the map's (section 4.1: the kernels "are
   scaled to cover the same proportion of the image"): map ``l`` uses the odd size nearest to
   ``base * r_l / r_image`` (at least 1, i.e. no morphology), ``r_image`` being the highest resolution among the
   decoder's maps (the decoded image's for ``AutoEncoder``). Half resolution gives closing 1 and opening 3, the
   example's values there (it takes ``ceil(k / 2)`` and turns the closing's 2 into 1); a quarter or less gives 1.
   The quantile bounds apply at every layer (eq. 3 has ``rho`` for every ``l``; the example masks only its
   half- and full-resolution maps).

**Depth weights** (section 3.2, "Depth-specific weighting"). The paper observes that a layer's loss doubles for
each doubling of resolution and weights a layer "by the inverse of the upscaling factor w.r.t. the first
layer", printed as ``omega_l = 2^(-r_l / r_1)``. The upscaling factor is ``r_l / r_1``, so its inverse is
``omega_l = r_1 / r_l = 2^(-log2(r_l / r_1))``; the printed formula taken literally gives ``1/2`` to the
first layer and ``1/16`` (not ``1/4``) to a layer four times finer: its weights fall ever faster with
resolution instead of halving per doubling, matching neither the sentence nor the amplitude argument. This module uses ``omega_l = r_1 / r_l`` (read as
a dropped ``log2``), which is also what the example computes: ``2^(-min(i, 3))`` for SDXL's maps at
``h, 2h, 4h, 8h, 8h``. ``r_l`` is the map's height and ``r_1`` that of the decoder's *first* map (index 0),
whichever ``layers`` are selected, so a layer's weight does not depend on the others. For an ``AutoEncoder``
with three levels (maps at ``h, 2h, 4h, 4h``) the weights are ``1, 1/2, 1/4, 1/4``. ``depth_weights=False``
gives every layer weight 1 (the paper's "uniform" ablation: FID 4.38 against 3.79).

**SNR gate** (eq. 3, ``delta_{sigma_t <= tau}``; see ``LatentPerceptualLoss``).

Book chapter "Latent perceptual loss".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..nets.autoencoder import AutoEncoder
from ..train.frozen import Frozen

NORMALIZE_MODES = ("predicted", "target", "separate")
"""Whose statistics standardise the two feature maps (module docstring, "Cross-normalisation")."""

QUANTILE = 0.02
"""Lower quantile level of the outlier bounds; the upper one is ``1 - QUANTILE`` (the diffusers example)."""

MARGIN = 2.0
"""The outlier bounds lie this many channel standard deviations beyond the quantiles (the diffusers example)."""

CLOSING_KERNEL = 3
"""Side of the square that closes the keep-mask, at the image's resolution (the diffusers example)."""

OPENING_KERNEL = 5
"""Side of the square that opens the keep-mask, at the image's resolution (the diffusers example)."""

NORM_EPS = 1e-6
"""Added to each channel's variance before the square root (this module's choice: a guard for flat channels)."""

DEFAULT_SNR_THRESHOLD = 3.07
"""The default gate ``SNR >= 3.07``: the authors' public code applies LPL at ``t < 200`` of 1000 steps of
latent diffusion's quadratic schedule, where ``SNR(199) = 3.086`` and ``SNR(200) = 3.060``
(``LatentPerceptualLoss`` docstring)."""


# ------------------------------------------------------------------------------------------------ helpers
def depth_weights(resolutions: Sequence[int]) -> list[float]:
    """``omega_l = r_1 / r_l`` for maps of resolutions ``r_1, r_2, ...`` (first = the decoder's first map):
    the inverse of each map's upscaling factor relative to the first (module docstring, "Depth weights")."""
    resolutions = [_validate.positive_int("each resolution", r) for r in resolutions]
    if not resolutions:
        raise ValueError("depth_weights needs at least one resolution")
    return [resolutions[0] / r for r in resolutions]


def scaled_kernel(base: int, scale: float) -> int:
    """The odd kernel size nearest to ``base * scale`` (ties round up), at least 1: a morphological kernel of
    side ``base`` at the image's resolution, used on a map ``scale`` times as fine (module docstring, step 3)."""
    _validate.positive_int("base", base)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    return max(1, 2 * math.floor((base * scale - 1) / 2 + 0.5) + 1)


def _check_kernel(k) -> int:
    _validate.positive_int("kernel size", k)
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd (a window centred on each position), got {k}")
    return k


def _as_planes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    _validate.tensor("mask", mask, min_ndim=2)
    shape = mask.shape
    return mask.reshape(-1, 1, *shape[-2:]).to(torch.float32), shape


def _dilate(m: torch.Tensor, k: int) -> torch.Tensor:
    return m if k == 1 else F.max_pool2d(m, k, stride=1, padding=k // 2)


def _erode(m: torch.Tensor, k: int) -> torch.Tensor:
    return m if k == 1 else -F.max_pool2d(-m, k, stride=1, padding=k // 2)


def binary_closing(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Morphological closing (dilation, then erosion) of a binary ``mask`` ``[..., H, W]`` by a
    ``kernel x kernel`` square, each ``H x W`` plane on its own; returns a bool tensor of the same shape.
    Fills holes the square does not fit in (a one-pixel hole for ``kernel >= 3``). Positions outside the map
    count neither as set nor as unset."""
    m, shape = _as_planes(mask)
    k = _check_kernel(kernel)
    return (_erode(_dilate(m, k), k) > 0.5).reshape(shape)


def binary_opening(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """Morphological opening (erosion, then dilation) of a binary ``mask`` ``[..., H, W]`` by a
    ``kernel x kernel`` square, each plane on its own; returns a bool tensor. Removes set regions the square
    does not fit in (an isolated set pixel for ``kernel >= 3``)."""
    m, shape = _as_planes(mask)
    k = _check_kernel(kernel)
    return (_dilate(_erode(m, k), k) > 0.5).reshape(shape)


def quantile_bounds(features: torch.Tensor, quantile: float = QUANTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-plane order statistics of ``features`` ``[..., H, W]``: the values of rank
    ``floor(quantile * (N - 1))`` from the bottom and from the top of each plane's ``N = H * W`` values
    (``torch.quantile`` with ``interpolation="lower"`` at ``quantile`` and ``"higher"`` at ``1 - quantile``,
    computed with ``kthvalue``, which has no size limit). Returns ``(low, high)``, each of shape ``[...]``."""
    _validate.tensor("features", features, min_ndim=2)
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 <= quantile < 0.5:
        raise ValueError(f"quantile must be a number in [0, 0.5), got {quantile!r}")
    flat = features.flatten(-2)
    n = flat.shape[-1]
    if n == 0:
        raise ValueError(f"features must have at least one position, got shape {tuple(features.shape)}")
    rank = math.floor(quantile * (n - 1))
    low = flat.kthvalue(rank + 1, dim=-1).values
    high = flat.kthvalue(n - rank, dim=-1).values
    return low, high


@torch.no_grad()
def outlier_mask(features: torch.Tensor, kernel_scale: float = 1.0, *, quantile: float = QUANTILE,
                 margin: float = MARGIN, closing: int = CLOSING_KERNEL, opening: int = OPENING_KERNEL
                 ) -> torch.Tensor:
    """The keep-mask ``rho`` of eq. 3 for a feature map ``[B, C, H, W]``: a bool tensor of the same shape,
    False at the outliers (module docstring, "Outlier detection").

    Per sample and channel, positions within ``[q_lo - margin * std, q_hi + margin * std]`` are kept
    (``quantile_bounds``; ``std`` the population standard deviation over the positions); the mask is then
    closed with a ``scaled_kernel(closing, kernel_scale)`` square and opened with a
    ``scaled_kernel(opening, kernel_scale)`` one. ``kernel_scale`` is the map's resolution over the image's
    (1 for a full-resolution map). Computed in float32 (at least) and without gradient."""
    _validate.tensor("features", features, ndim=4)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    x = features.detach()
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    low, high = quantile_bounds(x, quantile)
    spread = margin * x.flatten(-2).std(-1, correction=0)
    keep = (x >= (low - spread)[..., None, None]) & (x <= (high + spread)[..., None, None])
    keep = binary_closing(keep, scaled_kernel(closing, kernel_scale))
    return binary_opening(keep, scaled_kernel(opening, kernel_scale))


# ------------------------------------------------------------------------------------------------ the loss
class LatentPerceptualLoss(nn.Module):
    """The latent perceptual loss (Berrada Ifriqi et al. 2025, eq. 3; module docstring):
    ``forward(z_pred, z_target, snr=None)`` returns the per-sample loss ``Tensor[B]``.

    Args:
        decoder: the latent model's ``pdlib.nets.AutoEncoder`` (or any ``nn.Module`` with a
            ``decoder_features(z)`` method returning a list of ``[B, C_l, H_l, W_l]`` maps, lowest resolution
            first). It is wrapped in ``pdlib.train.Frozen`` (unless it already is one), which freezes it *in
            place*: eval mode, ``requires_grad=False`` on its weights, absent from the ``parameters()`` and
            ``state_dict()`` of whatever holds this loss. Gradients flow through it to ``z_pred`` only.
        layers: indices into the list of ``decoder_features`` (0 = the lowest resolution); None for all.
        normalize: ``"predicted"`` (the paper), ``"target"`` or ``"separate"`` statistics.
        depth_weights: weight map ``l`` by ``r_1 / r_l`` (True) or by 1 (False).
        snr_threshold: the gate; a sample counts where ``snr >= snr_threshold`` (None: no gate).
        outlier_mask: mask the predicted map's outliers (True) or compare every position (False).

    SNR gate. Eq. 3 multiplies the loss by ``delta_{sigma_t <= tau}``: the loss is applied only at low noise,
    which also saves the decoder passes at the other timesteps. For a VP process
    ``z_t = alpha_t z_0 + sigma_t eps`` (DDPM: ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``),
    dividing by ``alpha_t`` gives ``z_0`` plus noise of level ``sigma_t / alpha_t = 1 / sqrt(SNR_t)``, with
    ``SNR_t = alpha_t^2 / sigma_t^2 = abar_t / (1 - abar_t)`` (``GaussianDiffusion.snr``). A threshold ``tau``
    on that level is the threshold ``SNR >= 1 / tau^2`` here. (``sigma_t`` itself never exceeds 1 for a VP
    process, so the paper's thresholds, best "between three and six" in figure 6 on an axis up to 20, only
    make sense on the ``sigma_t / alpha_t`` scale; they were also scaled with the image resolution, section
    4.1.) The authors' public code instead gates on the timestep, LPL at ``t < 200`` of 1000 steps of SDXL's
    schedule, latent diffusion's quadratic one (``pdlib.schedules.beta_schedule("quadratic", 1000)``), where
    ``SNR(199) = 3.086`` and ``SNR(200) = 3.060``.

    Default: ``DEFAULT_SNR_THRESHOLD = 3.07``, which reproduces that gate exactly on that schedule (noise level
    ``sigma_t / alpha_t <= 0.571``). It is chosen over the paper's ``tau`` range (``SNR >= 1/36 .. 1/9``, which
    on the same schedule admits ``t < 835 .. 674``) because it is stated without ambiguity, is what the
    released code runs, and costs decoder work on a fifth of uniformly drawn timesteps instead of two thirds
    or more. On other schedules the same threshold admits other steps (T = 1000: ``t < 163`` linear,
    ``t < 324`` cosine); for the flow-matching OT path (``alpha = 1 - t``, ``sigma = t``) it means
    ``t <= 1 / (1 + sqrt(3.07)) = 0.363``. Pass ``snr_threshold=1 / tau**2`` for the paper's form.

    Gated-out samples get exactly 0 and are never decoded: ``forward`` runs the decoder on the gated-in rows
    only (so a non-finite ``z_pred`` there, e.g. an ``x0`` estimate at zero terminal SNR, does no harm), and
    the loss of a gated-in sample equals its ungated value (statistics and masks are per sample).
    ``z_target`` is a constant: its features are computed without gradient.
    """

    def __init__(self, decoder: nn.Module, layers: Iterable[int] | None = None, normalize: str = "predicted",
                 depth_weights: bool = True, snr_threshold: float | None = DEFAULT_SNR_THRESHOLD,
                 outlier_mask: bool = True):
        super().__init__()
        net = decoder.net if isinstance(decoder, Frozen) else decoder
        if not isinstance(net, nn.Module) or not callable(getattr(net, "decoder_features", None)):
            hint = (" (an AutoEncoder's .decoder works on unscaled latents; pass the AutoEncoder itself)"
                    if isinstance(net, nn.Module) and callable(getattr(net, "features", None)) else "")
            raise TypeError("decoder must be an nn.Module with a decoder_features(z) method, such as "
                            f"pdlib.nets.AutoEncoder; got {type(net).__name__}{hint}")
        _validate.choice("normalize", normalize, NORMALIZE_MODES)
        for name, value in (("depth_weights", depth_weights), ("outlier_mask", outlier_mask)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if snr_threshold is not None:
            if isinstance(snr_threshold, bool) or not isinstance(snr_threshold, (int, float)):
                raise TypeError(f"snr_threshold must be a number or None, got {type(snr_threshold).__name__}")
            if not snr_threshold >= 0:
                raise ValueError(f"snr_threshold must be >= 0 (or None for no gate), got {snr_threshold}")
            snr_threshold = float(snr_threshold)
        # The number of maps is known in advance for an AutoEncoder; for another decoder it is checked in forward.
        self.num_maps = len(net.channel_mult) + 1 if isinstance(net, AutoEncoder) else None
        self.layers = self._check_layers(layers, self.num_maps)
        self.decoder = decoder if isinstance(decoder, Frozen) else Frozen(decoder)
        self.normalize = normalize
        self.use_depth_weights = depth_weights
        self.snr_threshold = snr_threshold
        self.use_outlier_mask = outlier_mask

    @staticmethod
    def _check_layers(layers, num_maps: int | None) -> tuple[int, ...] | None:
        if layers is None:
            return None
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise TypeError(f"layers must be None or a sequence of map indices, got {type(layers).__name__}")
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must name at least one map (or be None for all of them)")
        for i in layers:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"layers must hold ints, got {i!r} ({type(i).__name__})")
            if i < 0 or (num_maps is not None and i >= num_maps):
                top = f"{num_maps - 1}" if num_maps is not None else "len(decoder_features(z)) - 1"
                raise ValueError(f"layer index {i} is out of range: the decoder has maps 0..{top}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must not repeat an index, got {layers}")
        return layers

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, normalize={self.normalize!r}, depth_weights={self.use_depth_weights}, "
                f"snr_threshold={self.snr_threshold}, outlier_mask={self.use_outlier_mask}")

    # ------------------------------------------------------------------------------------------ checks
    @staticmethod
    def _check_latents(z_pred, z_target) -> None:
        for name, z in (("z_pred", z_pred), ("z_target", z_target)):
            _validate.tensor(name, z, ndim=4)
            if not z.is_floating_point():
                raise TypeError(f"{name} must be a float tensor of latents [B, C, h, w], got dtype {z.dtype}")
        if z_pred.shape != z_target.shape:
            raise ValueError(f"z_pred and z_target must have the same shape, got {tuple(z_pred.shape)} and "
                             f"{tuple(z_target.shape)}")

    def gate(self, snr: torch.Tensor | None, batch: int | None = None) -> torch.Tensor | None:
        """``BoolTensor[B]``, True where a sample's loss counts (``snr >= snr_threshold``), or None when nothing
        is gated (no ``snr`` given, or ``snr_threshold=None``). ``snr`` must be a real ``[B]`` tensor without
        NaN (``batch``, when given, is the expected ``B``)."""
        if snr is None:
            return None
        _validate.tensor("snr", snr, ndim=1)
        if snr.dtype == torch.bool or snr.is_complex():
            raise TypeError(f"snr must be a real tensor [B], got dtype {snr.dtype}")
        if batch is not None and snr.shape[0] != batch:
            raise ValueError(f"snr must have shape [B] = [{batch}] (one value per latent), got {tuple(snr.shape)}")
        if snr.is_floating_point() and bool(torch.isnan(snr).any()):
            raise ValueError("snr has NaN values; pass the signal-to-noise ratio of each sample's timestep")
        if self.snr_threshold is None:
            return None
        return snr.detach() >= self.snr_threshold

    # ------------------------------------------------------------------------------------------ the terms
    def _maps(self, z_pred: torch.Tensor, z_target: torch.Tensor):
        pred = list(self.decoder.decoder_features(z_pred))
        with torch.no_grad():
            target = list(self.decoder.decoder_features(z_target))
        if not pred or any(not isinstance(m, torch.Tensor) or m.ndim != 4 for m in pred):
            raise ValueError("decoder_features must return a non-empty list of [B, C, H, W] tensors")
        if self.layers is not None and max(self.layers) >= len(pred):
            raise ValueError(f"layer index {max(self.layers)} is out of range: the decoder has maps "
                             f"0..{len(pred) - 1}")
        return pred, target

    def _stats(self, f: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-channel mean and ``sqrt(var + NORM_EPS)`` over the (kept) positions."""
        if keep is None:
            mean = f.mean((-2, -1), keepdim=True)
            var = f.var((-2, -1), keepdim=True, correction=0)
        else:
            count = keep.sum((-2, -1), keepdim=True).clamp_min(1)
            mean = torch.where(keep, f, 0.0).sum((-2, -1), keepdim=True) / count
            var = torch.where(keep, (f - mean).square(), 0.0).sum((-2, -1), keepdim=True) / count
        return mean, (var + NORM_EPS).sqrt()

    def _term(self, pred: torch.Tensor, target: torch.Tensor, kernel_scale: float) -> torch.Tensor:
        """The unweighted term of one map: channel mean of the spatial mean of the masked squared difference
        of the standardised maps, ``Tensor[B]``."""
        dtype = torch.promote_types(pred.dtype, torch.float32)
        pred, target = pred.to(dtype), target.to(dtype)
        keep = outlier_mask(pred, kernel_scale) if self.use_outlier_mask else None
        if self.normalize == "separate":
            (mp, sp), (mt, st) = self._stats(pred, keep), self._stats(target, keep)
        else:
            mp, sp = self._stats(pred if self.normalize == "predicted" else target, keep)
            mt, st = mp, sp
        sq = ((target - mt) / st - (pred - mp) / sp).square()
        if keep is not None:
            sq = torch.where(keep, sq, 0.0)
        return sq.mean((-2, -1)).mean(1)

    def layer_losses(self, z_pred: torch.Tensor, z_target: torch.Tensor) -> tuple[list[torch.Tensor], list[float]]:
        """The selected maps' unweighted terms (each ``Tensor[B]``, before ``omega_l``) and their depth weights
        ``omega_l`` (all 1 with ``depth_weights=False``), for every sample: no gate. ``forward`` without
        ``snr`` returns ``sum(w * term)``."""
        self._check_latents(z_pred, z_target)
        pred, target = self._maps(z_pred, z_target)
        heights = [m.shape[-2] for m in pred]
        top = max(heights)
        omegas = depth_weights(heights) if self.use_depth_weights else [1.0] * len(pred)
        chosen = self.layers if self.layers is not None else range(len(pred))
        terms = [self._term(pred[i], target[i], heights[i] / top) for i in chosen]
        return terms, [omegas[i] for i in chosen]

    def forward(self, z_pred: torch.Tensor, z_target: torch.Tensor, snr: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Per-sample LPL ``Tensor[B]`` between predicted and target *scaled* latents ``[B, C, h, w]`` (what the
        latent model diffuses; the ``AutoEncoder`` divides by its ``scale_factor``). ``snr``: the ``[B]``
        signal-to-noise ratios of the samples' timesteps; samples below ``snr_threshold`` get exactly 0 and are
        not decoded. The result is float32 (float64 for float64 latents)."""
        self._check_latents(z_pred, z_target)
        batch = z_pred.shape[0]
        keep = self.gate(snr, batch)
        dtype = torch.promote_types(z_pred.dtype, torch.float32)
        out = torch.zeros(batch, dtype=dtype, device=z_pred.device)
        if batch == 0:
            return out
        if keep is not None and not bool(keep.all()):
            index = keep.nonzero().squeeze(1).to(z_pred.device)
            if index.numel() == 0:
                return out
            z_pred, z_target = z_pred.index_select(0, index), z_target.index_select(0, index)
        else:
            index = None
        terms, omegas = self.layer_losses(z_pred, z_target)
        loss = sum(w * t for w, t in zip(omegas, terms)).to(dtype)
        return loss if index is None else out.index_copy(0, index, loss)


class MapsAsLatents(nn.Module):
    """A stand-in decoder whose only feature map is its input: ``LatentPerceptualLoss(MapsAsLatents())`` is the
    loss of one layer (eq. 3's standardisation, mask and channel mean) on given feature maps, for checking and
    teaching that term apart from a decoder."""

    def decoder_features(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [z]


__all__ = ["CLOSING_KERNEL", "DEFAULT_SNR_THRESHOLD", "LatentPerceptualLoss", "MARGIN", "MapsAsLatents",
           "NORMALIZE_MODES", "NORM_EPS", "OPENING_KERNEL", "QUANTILE", "binary_closing", "binary_opening", "depth_weights",
           "outlier_mask", "quantile_bounds", "scaled_kernel"]
