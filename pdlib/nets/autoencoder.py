"""The image autoencoder of latent models, and the patch discriminator that trains it.

LDDGAN (Trinh & Hamagami 2024, section 4.2) runs its denoising-diffusion GAN on the 2D latents of a
pretrained autoencoder built like VQGAN's (Esser et al. 2021, "Taming Transformers", section 3.2) and
latent diffusion's (Rombach et al. 2022, section 3 and appendix G), without the vector quantiser and,
by default, without a KL penalty: the LDDGAN ablation (Table 7) finds the unregularised latent space
better for a GAN denoiser. The KL-regularised variant, latent diffusion's "KL-f" autoencoders, is an
option (``kl=True``).

Architecture (the ``Encoder``/``Decoder`` of latent diffusion's ``model.py``):

- encoder: 3x3 convolution; per resolution level ``num_res_blocks`` residual blocks and a strided
  downsampling (none after the last level); a middle block (residual block, self-attention, residual
  block); group norm, SiLU and a 3x3 convolution to ``latent_channels`` channels (twice that with
  ``kl=True``: the mean and the log-variance of a diagonal Gaussian posterior);
- decoder: the mirror image, with ``num_res_blocks + 1`` residual blocks per level and
  nearest-neighbour-plus-convolution upsampling, ending in group norm, SiLU and a 3x3 convolution to
  the image channels (no output nonlinearity).

Latent diffusion's 1x1 ``quant_conv``/``post_quant_conv`` around the latent are left out: with as many
latent channels as the encoder outputs they are one more linear map after (before) a convolution.

Scale factor: a latent model diffuses ``z = scale_factor * latent`` (latent diffusion, section 4.3.2:
``scale_factor = 1 / std`` of the latents of a training batch, so that ``z`` has unit variance); ``encode``
applies it and ``decode`` undoes it, so ``decode(encode(x))`` does not depend on it. It is a buffer, saved
in the state dict with the weights.

Book chapters "Latent diffusion GAN" (LDDGAN) and "Latent perceptual loss" (``decoder_features``).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .unet import AttentionBlock, Downsample, GroupNorm32, Upsample

#: Configurations for ``AutoEncoder.from_preset``.
AUTOENCODER_PRESETS: dict[str, dict] = {
    # LDDGAN's CIFAR-10 autoencoder: f=2, 16x16x4 latents (the seed's Table 1). Widths and depths are this
    # project's choice, modelled on latent diffusion's KL-f4 / VQ-f4 configs (base 128 channels, 2 residual
    # blocks per level) with one level less; the authors' exact numbers are not in the paper.
    "lddgan-cifar10": dict(in_channels=3, latent_channels=4, channels=128, channel_mult=(1, 2), num_res_blocks=2,
                           norm_groups=32),
    # LDDGAN's CelebA-HQ 256 autoencoder: f=4, 64x64x4 latents; latent diffusion's KL-f4 layout
    # (channel_mult (1, 2, 4), 2 residual blocks) with 4 latent channels.
    "lddgan-celeba256": dict(in_channels=3, latent_channels=4, channels=128, channel_mult=(1, 2, 4),
                             num_res_blocks=2, norm_groups=32),
    # CPU chapters: 16x16x3 images (shapes) to 8x8x4 latents; 8 groups on the 32- and 64-channel maps.
    "cpu-f2": dict(in_channels=3, latent_channels=4, channels=32, channel_mult=(1, 2), num_res_blocks=1,
                   norm_groups=8),
    # CPU chapters: 1-channel 16x16 digits to 8x8x2 latents.
    "cpu-digits": dict(in_channels=1, latent_channels=2, channels=32, channel_mult=(1, 2), num_res_blocks=1,
                       norm_groups=8),
}

FACTORS = (2, 4, 8)
"""The downsampling factors ``2 ** (len(channel_mult) - 1)`` an ``AutoEncoder`` may have."""

LOGVAR_RANGE = (-30.0, 20.0)
"""Bounds of the posterior log-variance (latent diffusion's ``DiagonalGaussianDistribution`` clamps there)."""


def gaussian_sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """A draw from ``N(mean, exp(logvar))``, elementwise: ``mean + exp(logvar / 2) * eps`` (the
    reparameterisation of Kingma & Welling 2014, so gradients reach ``mean`` and ``logvar``)."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


class ResidualBlock(nn.Module):
    """``x -> GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3``, added to ``x`` (through a 1x1 convolution when
    the channel count changes): latent diffusion's ``ResnetBlock`` without a timestep embedding."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = GroupNorm32(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = GroupNorm32(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _middle(ch: int, groups: int) -> nn.Sequential:
    """The middle block of encoder and decoder: residual block, self-attention (one head), residual block."""
    return nn.Sequential(ResidualBlock(ch, ch, groups), AttentionBlock(ch, 1, groups), ResidualBlock(ch, ch, groups))


class Encoder(nn.Module):
    """Images ``[B, in_channels, H, W]`` to ``[B, out_channels, H/f, W/f]`` (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int, channel_mult: tuple,
                 num_res_blocks: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        blocks, ch = [], channels
        for i, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(ch, channels * mult, groups))
                ch = channels * mult
            if i < len(channel_mult) - 1:
                blocks.append(Downsample(ch))
        self.blocks = nn.Sequential(*blocks)
        self.mid = _middle(ch, groups)
        self.norm_out = GroupNorm32(groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents ``[B, latent_channels, h, w]`` to images ``[B, out_channels, f*h, f*w]`` (module docstring).

    ``levels[j]`` is decoder level ``len(channel_mult) - 1 - j`` (the deepest first): its residual blocks,
    then a 2x upsampling for every level but the last."""

    def __init__(self, latent_channels: int, out_channels: int, channels: int, channel_mult: tuple,
                 num_res_blocks: int, groups: int):
        super().__init__()
        ch = channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.mid = _middle(ch, groups)
        self.levels = nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResidualBlock(ch, channels * channel_mult[i], groups))
                ch = channels * channel_mult[i]
            if i > 0:
                blocks.append(Upsample(ch))
            self.levels.append(nn.Sequential(*blocks))
        self.norm_out = GroupNorm32(groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def features(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """The output of the middle block, then of every level (after its upsampling), deepest first."""
        h = self.mid(self.conv_in(latent))
        maps = [h]
        for level in self.levels:
            h = level(h)
            maps.append(h)
        return maps

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.features(latent)[-1])))


class AutoEncoder(nn.Module):
    """The convolutional autoencoder of latent models (module docstring): ``encode`` images to scaled 2D
    latents, ``decode`` them back.

    Args:
        in_channels: channels of the images.
        latent_channels: channels of the latent map.
        channels: channels of the first level; level ``i`` has ``channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level; the downsampling factor ``factor`` is
            ``2 ** (len(channel_mult) - 1)`` and must be 2, 4 or 8.
        num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
        kl: the encoder outputs the mean and log-variance of a diagonal Gaussian posterior (latent
            diffusion's KL autoencoders) instead of the latent itself (LDDGAN's default).
        norm_groups: groups of every GroupNorm; ``channels * channel_mult[i]`` must be multiples of it.

    ``encoder`` and ``decoder`` are the two networks on *unscaled* latents (what the autoencoder is trained
    with); ``encode``, ``decode`` and ``decoder_features`` work on scaled latents ``z = scale_factor * latent``,
    what a latent model sees. Images are ``[B, in_channels, H, W]`` with ``H`` and ``W`` divisible by
    ``factor``; latents are ``[B, latent_channels, H / factor, W / factor]``.
    """

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, channels: int = 64,
                 channel_mult: Iterable[int] = (1, 2), num_res_blocks: int = 1, kl: bool = False,
                 norm_groups: int = 8):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("latent_channels", latent_channels),
                            ("channels", channels), ("num_res_blocks", num_res_blocks),
                            ("norm_groups", norm_groups)]:
            _validate.positive_int(name, value)
        if not isinstance(kl, bool):
            raise TypeError(f"kl must be a bool, got {type(kl).__name__}")
        channel_mult = tuple(channel_mult)
        for m in channel_mult:
            _validate.positive_int("each channel_mult entry", m)
            if (channels * m) % norm_groups:
                raise ValueError(f"channels * channel_mult must be multiples of norm_groups={norm_groups}, "
                                 f"got {channels} * {m}")
        factor = 2 ** (len(channel_mult) - 1)
        if factor not in FACTORS:
            raise ValueError(f"the downsampling factor 2 ** (len(channel_mult) - 1) must be one of {FACTORS}, "
                             f"got {factor} from channel_mult={channel_mult} ({len(channel_mult)} levels; use 2 to 4)")
        self.in_channels, self.latent_channels, self.kl = in_channels, latent_channels, kl
        self.channel_mult = channel_mult
        self._factor = factor
        encoder_out = 2 * latent_channels if kl else latent_channels
        self.encoder = Encoder(in_channels, encoder_out, channels, channel_mult, num_res_blocks, norm_groups)
        self.decoder = Decoder(latent_channels, in_channels, channels, channel_mult, num_res_blocks, norm_groups)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by ``from_preset`` (their settings are in ``AUTOENCODER_PRESETS``)."""
        return tuple(AUTOENCODER_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AutoEncoder":
        """Build a named configuration, e.g. ``AutoEncoder.from_preset("cpu-f2")``; keyword arguments
        override the preset (e.g. ``kl=True``)."""
        _validate.choice("preset", name, AUTOENCODER_PRESETS)
        return cls(**{**AUTOENCODER_PRESETS[name], **overrides})

    @property
    def factor(self) -> int:
        """The spatial downsampling factor ``f``: an ``H x W`` image has an ``H/f x W/f`` latent."""
        return self._factor

    # ----------------------------------------------------------------------------------------------
    def check_images(self, x) -> None:
        """Raise unless ``x`` is a tensor ``[B, in_channels, H, W]`` with ``H`` and ``W`` divisible by ``factor``."""
        _validate.tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"x height and width must be divisible by the factor {self.factor}, "
                             f"got {x.shape[2]}x{x.shape[3]}")

    def _unscaled(self, z) -> torch.Tensor:
        _validate.tensor("z", z, ndim=4)
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"z must have shape [B, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        return z / self.scale_factor

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of the Gaussian posterior of a KL autoencoder, each ``[B, latent_channels, h, w]``
        and unscaled; ``logvar`` is clamped to ``LOGVAR_RANGE``. Raises for ``kl=False``."""
        if not self.kl:
            raise ValueError("encode_moments needs a KL autoencoder (kl=True); this one encodes deterministically")
        self.check_images(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """The scaled latent ``z = scale_factor * latent`` of images ``x``. ``latent`` is the encoder output,
        or for a KL autoencoder the posterior mean, or with ``sample=True`` a draw from the posterior made
        with ``generator`` (``sample=True`` is an error without ``kl``)."""
        if self.kl:
            mean, logvar = self.encode_moments(x)
            latent = gaussian_sample(mean, logvar, generator) if sample else mean
        else:
            if sample:
                raise ValueError("sample=True needs a KL autoencoder (kl=True); this one has no posterior to draw from")
            self.check_images(x)
            latent = self.encoder(x)
        return self.scale_factor * latent

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, in_channels, f*h, f*w]`` from scaled latents ``z``: ``decoder(z / scale_factor)``."""
        return self.decoder(self._unscaled(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``decode(encode(x))`` (the posterior mean for a KL autoencoder)."""
        return self.decode(self.encode(x))

    def decoder_features(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's intermediate feature maps for scaled latents ``z`` ``[B, latent_channels, h, w]``,
        computed as ``decode`` computes them (from ``z / scale_factor``), for the latent perceptual loss
        (Berrada Ifriqi et al. 2025, "Boosting latent diffusion with perceptual objectives", section 3).

        The list holds ``len(channel_mult) + 1`` maps, from the lowest resolution to the highest: the output
        of the middle block (``h x w``), then the output of each decoder level from the deepest, taken after
        the level's upsampling: ``2h x 2w``, ``4h x 4w``, ..., up to ``factor * h`` for the last two (the
        shallowest level does not upsample). Level ``i`` has ``channels * channel_mult[i]`` channels. A map's
        upscaling factor relative to the first one is its height divided by ``h``; the last map has the
        resolution of the decoded image. Gradients flow to ``z`` and the decoder weights.
        """
        return self.decoder.features(self._unscaled(z))

    @torch.no_grad()
    def fit_scale_factor(self, x: torch.Tensor) -> float:
        """Set ``scale_factor = 1 / std`` of the unscaled latents of images ``x`` (one standard deviation over
        every element, as latent diffusion computes it on its first batch) and return it. The latents are
        those ``encode`` returns by default: the posterior mean for a KL autoencoder (latent diffusion uses a
        posterior draw)."""
        self.check_images(x)
        latent = self.encode_moments(x)[0] if self.kl else self.encoder(x)
        std = float(latent.float().std())
        if not std > 0:
            raise ValueError(f"the latents of x have standard deviation {std}; need more than one distinct value")
        self.scale_factor.fill_(1.0 / std)
        return float(self.scale_factor)


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix (Isola et al. 2017, section 3.2.2; the ``NLayerDiscriminator``
    that VQGAN and latent diffusion's autoencoders train against) returning a logit map ``[B, 1, h, w]``,
    one logit per overlapping image patch.

    Layers: a 4x4 convolution with stride 2 and LeakyReLU(0.2); ``num_layers - 1`` more of them with
    batch normalisation, doubling the channels up to ``8 * channels``; a 4x4 convolution with stride 1,
    batch normalisation and LeakyReLU; a 4x4 convolution with stride 1 to one channel. All use padding 1
    and weights drawn from N(0, 0.02) (batch-norm scales from N(1, 0.02)) as in pix2pix.

    Each stride-2 layer halves the size and each stride-1 layer removes one pixel, so the output is
    ``floor(H / 2**num_layers) - 2`` pixels high: inputs must be at least ``min_size = 3 * 2**num_layers``
    on each side (24 for the default 3 layers, the paper's 70x70 PatchGAN; 12 for 2 layers; 6 for 1).
    Use ``num_layers=2`` on 16x16 images (a 2x2 map) and ``num_layers=1`` on 8x8 ones (a 2x2 map).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("channels", channels), ("num_layers", num_layers)]:
            _validate.positive_int(name, value)
        self.in_channels, self.num_layers = in_channels, num_layers
        layers = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @property
    def min_size(self) -> int:
        """The smallest input height and width: ``3 * 2 ** num_layers`` (a 1x1 logit map)."""
        return 3 * 2 ** self.num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1, floor(H / 2**num_layers) - 2, floor(W / 2**num_layers) - 2]`` for ``x`` ``[B, C, H, W]``."""
        _validate.tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size:
            fit = max((n for n in range(1, 8) if min(x.shape[2:]) >= 3 * 2 ** n), default=None)
            hint = f"use num_layers <= {fit}" if fit else "no number of layers fits below 6x6"
            raise ValueError(f"a PatchDiscriminator with num_layers={self.num_layers} needs inputs of at least "
                             f"{self.min_size}x{self.min_size}, got {x.shape[2]}x{x.shape[3]}; {hint}")
        return self.layers(x)


__all__ = ["AUTOENCODER_PRESETS", "AutoEncoder", "Decoder", "Encoder", "FACTORS", "LOGVAR_RANGE",
           "PatchDiscriminator", "ResidualBlock", "gaussian_sample"]
