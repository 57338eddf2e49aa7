"""GAN networks: the generator and discriminator of denoising diffusion GANs, and small toy pairs.

Denoising diffusion GAN (DDGAN; Xiao et al. 2022, "Tackling the generative learning trilemma with
denoising diffusion GANs", section 3 and appendix C; summarised in section 3 of the LDDGAN paper, Trinh &
Hamagami 2024) models each large denoising step with a conditional GAN:

- the generator ``G(x_t, t, z)``, z ~ N(0, I), predicts a clean sample x0'. It is a UNet (DDGAN uses
  NCSN++, Song et al. 2021) whose residual blocks receive the timestep embedding (added after the first
  convolution) and normalise with *adaptive group normalisation* (AdaGN): a group norm without affine
  parameters followed by a per-channel scale and shift predicted from an embedding of z, which a small
  mapping network computes (``PixelNorm``, then dense + SiLU layers, as in StyleGAN, Karras et al. 2019,
  section 2);
- the discriminator ``D(x_{t-1}, t, x_t)`` sees the pair concatenated along channels, adds a timestep
  embedding in every downsampling residual block, appends the minibatch standard deviation (Karras et al.
  2018, "Progressive growing of GANs", section 3) before its last convolution, sums over pixels and
  returns one logit per example. DDGAN uses a "small" discriminator for 32x32 images and a deeper
  "large" one for 256x256.

Simplifications with respect to the authors' NCSN++ generator: plain 2x2 average pooling and nearest
upsampling instead of FIR filters, and no input pyramid (``progressive_input``). Weights are initialised as
in DDGAN (Xavier-uniform, zero biases), except that no convolution starts at zero (DDGAN zero-initialises the
last convolution of every residual branch and of the output), so a fresh generator already depends on z;
the self-attention blocks (pdlib's ``AttentionBlock``) keep their zero-initialised output projection.
The method that trains these networks lives in :mod:`pdlib.methods.ddgan`; the networks know nothing of it.

``ToyGenerator`` / ``ToyDiscriminator`` (an unconditional GAN on 2D points, Goodfellow et al. 2014) and
``MLPGenerator2D`` / ``MLPDiscriminator2D`` (a DDGAN on 2D points) serve the book's toy chapters
("GANs" and "Denoising diffusion GANs").
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .embedding import timestep_embedding
from .unet import AttentionBlock, GroupNorm32

DEPTHS = ("small", "large")

#: Published and CPU configurations, for ``Generator.from_preset``.
GENERATOR_PRESETS: dict[str, dict] = {
    # DDGAN's CIFAR-10 generator (the authors' README: --num_channels_dae 128 --ch_mult 1 2 2 2
    # --num_res_blocks 2 --nz 100 --z_emb_dim 256 --n_mlp 4; attention at 16x16, no dropout; tanh output).
    "ddgan-cifar10": dict(image_size=32, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                          attention_resolutions=(16,), z_dim=100, z_emb_dim=256, mapping_layers=4, tanh=True),
    # DDGAN's CelebA-HQ 256 generator (--num_channels_dae 64 --ch_mult 1 1 2 2 4 4, defaults otherwise).
    "ddgan-celeba256": dict(image_size=256, channels=64, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                            attention_resolutions=(16,), z_dim=100, z_emb_dim=256, mapping_layers=4, tanh=True),
    # For the CPU chapters: 16x16 images in [-1, 1], two levels, 8 groups (see pdlib's UNet "cpu-small").
    "cpu-small": dict(image_size=16, channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                      z_dim=16, z_emb_dim=64, groups=8, tanh=True),
    # For 8x8x4 autoencoder latents (LDDGAN): unbounded outputs.
    "cpu-latent": dict(in_channels=4, image_size=8, channels=32, channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(), z_dim=16, z_emb_dim=64, groups=8),
}

#: Published and CPU configurations, for ``Discriminator.from_preset``.
DISCRIMINATOR_PRESETS: dict[str, dict] = {
    # DDGAN's Discriminator_small (--ngf 64, time embedding of width 128) for CIFAR-10.
    "ddgan-cifar10": dict(in_channels=3, image_size=32, channels=64, depth="small", time_dim=128),
    # DDGAN's Discriminator_large (--ngf 64): six downsampling blocks, 256 -> 4.
    "ddgan-celeba256": dict(in_channels=3, image_size=256, channels=64, depth="large", time_dim=128),
    "cpu-small": dict(in_channels=3, image_size=16, channels=16, depth="small", time_dim=64),
    "cpu-latent": dict(in_channels=4, image_size=8, channels=16, depth="small", time_dim=64),
}


def _linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer with DDGAN's initialisation: Xavier-uniform weights (its ``default_init``, variance
    scaling 1 with the fan average) and a zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _conv(in_ch: int, out_ch: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """A convolution (same padding) with DDGAN's initialisation, as ``_linear``."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
    nn.init.xavier_uniform_(conv.weight)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _timesteps(t, batch: int) -> torch.Tensor:
    """Check ``t`` (a tensor [B] or a scalar) and return it shaped [B]."""
    _validate.tensor("t", t)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape [B] = [{batch}] (or be a scalar), got {tuple(t.shape)}")
    return t


def _check_image(name: str, x, channels: int, size: int) -> None:
    """Raise unless ``x`` is a tensor [B, channels, size, size]."""
    _validate.tensor(name, x, ndim=4)
    if tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(f"{name} must have shape [B, {channels}, {size}, {size}], got {tuple(x.shape)}")


def _check_points(name: str, x, dim: int, batch: int | None = None) -> None:
    """Raise unless ``x`` is a tensor [B, dim] (with B = ``batch`` when given)."""
    _validate.tensor(name, x, ndim=2)
    if x.shape[1] != dim or (batch is not None and x.shape[0] != batch):
        expected = f"[{batch if batch is not None else 'B'}, {dim}]"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


# ================================================================================= building blocks
class PixelNorm(nn.Module):
    """``x / sqrt(mean(x^2) + 1e-8)`` over the feature dimension (dim 1): StyleGAN's normalisation of the
    latent before its mapping network (Karras et al. 2018, section 4.2; Karras et al. 2019, section 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """The z embedding of DDGAN's generator: ``PixelNorm``, a dense layer ``z_dim -> out_dim`` and
    ``num_layers`` further dense layers ``out_dim -> out_dim``, each followed by SiLU. ``num_layers`` is
    DDGAN's ``n_mlp`` (4 in all its runs), so the network has ``num_layers + 1`` dense layers."""

    def __init__(self, z_dim: int, out_dim: int, num_layers: int = 4):
        super().__init__()
        for name, value in [("z_dim", z_dim), ("out_dim", out_dim), ("num_layers", num_layers)]:
            _validate.positive_int(name, value)
        layers: list[nn.Module] = [PixelNorm(), _linear(z_dim, out_dim), nn.SiLU()]
        for _ in range(num_layers):
            layers += [_linear(out_dim, out_dim), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class AdaGN(nn.Module):
    """Adaptive group normalisation (DDGAN's generator, after StyleGAN's AdaIN, Karras et al. 2019):
    ``GN(h) * scale + shift`` where ``GN`` has no affine parameters and ``(scale, shift)`` per channel
    come from a linear layer on the z embedding. The layer's bias starts at 1 for the scale and 0 for the
    shift, so with a zero embedding the block is exactly the plain group norm. The norm is computed in
    float32 (see ``GroupNorm32``), with DDGAN's eps of 1e-6."""

    eps = 1e-6

    def __init__(self, channels: int, emb_dim: int, groups: int):
        super().__init__()
        for name, value in [("channels", channels), ("emb_dim", emb_dim), ("groups", groups)]:
            _validate.positive_int(name, value)
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.groups = groups
        self.style = _linear(emb_dim, 2 * channels)
        with torch.no_grad():
            self.style.bias[:channels].fill_(1.0)
            self.style.bias[channels:].zero_()

    def forward(self, h: torch.Tensor, z_emb: torch.Tensor) -> torch.Tensor:
        normed = F.group_norm(h.float(), self.groups, eps=self.eps).to(h.dtype)
        scale, shift = self.style(z_emb)[:, :, None, None].chunk(2, dim=1)
        return normed * scale + shift


def _resample(x: torch.Tensor, resample: str | None) -> torch.Tensor:
    """2x2 average pooling (``"down"``), nearest 2x upsampling (``"up"``) or nothing (None)."""
    if resample == "down":
        return F.avg_pool2d(x, 2)
    if resample == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class AdaResBlock(nn.Module):
    """The generator's residual block (NCSN++'s BigGAN-type block with AdaGN, as in DDGAN):
    ``x -> AdaGN(., z) -> SiLU -> [resample] -> conv3x3 -> + Linear(t_emb) -> AdaGN(., z) -> SiLU ->
    dropout -> conv3x3``, added to the (resampled, 1x1-projected when the width changes) input and divided
    by sqrt(2) (NCSN++'s ``skip_rescale``). ``resample`` is ``"down"``, ``"up"`` or None; ``t_emb``
    arrives already passed through SiLU."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, z_emb_dim: int, groups: int, dropout: float,
                 resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.norm1 = AdaGN(in_ch, z_emb_dim, groups)
        self.conv1 = _conv(in_ch, out_ch, 3)
        self.time = _linear(time_dim, out_ch)
        self.norm2 = AdaGN(out_ch, z_emb_dim, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.skip = nn.Identity() if in_ch == out_ch else _conv(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, z_emb: torch.Tensor) -> torch.Tensor:
        h = _resample(F.silu(self.norm1(x, z_emb)), self.resample)
        h = self.conv1(h) + self.time(t_emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h, z_emb))))
        return (self.skip(_resample(x, self.resample)) + h) / math.sqrt(2.0)


class DownBlock(nn.Module):
    """The discriminator's residual block (DDGAN's ``DownConvBlock``): ``x -> LeakyReLU -> conv3x3 ->
    + Linear(t_emb) -> LeakyReLU -> [2x2 average pooling] -> conv3x3``, added to the (pooled,
    1x1-projected when the width changes) input and divided by sqrt(2). LeakyReLU has slope 0.2."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, down: bool):
        super().__init__()
        self.resample = "down" if down else None
        self.conv1 = _conv(in_ch, out_ch, 3)
        self.time = _linear(time_dim, out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.skip = nn.Identity() if in_ch == out_ch else _conv(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2)) + self.time(t_emb)[:, :, None, None]
        h = self.conv2(_resample(F.leaky_relu(h, 0.2), self.resample))
        return (self.skip(_resample(x, self.resample)) + h) / math.sqrt(2.0)


def minibatch_stddev(h: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the minibatch standard deviation as one extra channel (Karras et al. 2018, section 3):
    the examples are split into groups of ``G`` (the largest divisor of the batch size that is at most
    ``group_size``; example ``i`` belongs to group ``i mod B/G``), each feature's standard deviation over
    its group is averaged over channels and pixels, and the result fills the new channel."""
    b, c, hgt, wid = h.shape
    g = next(k for k in range(min(group_size, b), 0, -1) if b % k == 0)
    std = torch.sqrt(h.reshape(g, b // g, c, hgt, wid).var(dim=0, unbiased=False) + 1e-8)  # [B/G, C, H, W]
    std = std.mean(dim=(1, 2, 3)).reshape(b // g, 1, 1, 1).repeat(g, 1, hgt, wid)
    return torch.cat([h, std], dim=1)


# ======================================================================================= generator
class Generator(nn.Module):
    """DDGAN's generator ``G(x_t, t, z) -> x0'`` for images ``[B, C, H, W]`` (module docstring).

    A UNet in the layout of NCSN++ with BigGAN-type resampling blocks: ``conv_in``; per level
    ``num_res_blocks`` ``AdaResBlock``s (self-attention after each at ``attention_resolutions``) and, except
    at the last level, a downsampling ``AdaResBlock``, every output kept as a skip; a middle block
    (residual, attention, residual); per level, deepest first, ``num_res_blocks + 1`` blocks that each take
    one skip, attention after the level where configured, and an upsampling block; then group norm, SiLU,
    a 3x3 convolution and, with ``tanh``, tanh (DDGAN's output for data in [-1, 1]).

    Args:
        in_channels: channels of x_t; out_channels: channels of x0' (default ``in_channels``).
        image_size: the side of the (square) inputs; must be divisible by ``2 ** (len(channel_mult) - 1)``.
        channels: width of the first level; level ``i`` has ``channels * channel_mult[i]``.
        channel_mult, num_res_blocks, attention_resolutions, dropout: as in pdlib's ``UNet``.
        z_dim: width of the latent z (DDGAN's ``nz``); z_emb_dim: width of its embedding.
        mapping_layers: dense layers after the first in the mapping network (DDGAN's ``n_mlp``).
        time_dim: width of the timestep embedding (default ``4 * channels``); the sinusoidal features have
            ``channels`` entries and a two-layer MLP with SiLU maps them to ``time_dim``.
        groups: groups of every (adaptive) group norm.
        tanh: squash the output with tanh.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, channels: int = 64,
                 channel_mult: Iterable[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Iterable[int] = (), z_dim: int = 100, z_emb_dim: int = 256,
                 time_dim: int | None = None, groups: int = 32, out_channels: int | None = None,
                 dropout: float = 0.0, mapping_layers: int = 4, tanh: bool = False):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("image_size", image_size), ("channels", channels),
                            ("num_res_blocks", num_res_blocks), ("z_dim", z_dim), ("z_emb_dim", z_emb_dim),
                            ("groups", groups)]:
            _validate.positive_int(name, value)
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        if not channel_mult:
            raise ValueError("channel_mult must have at least one entry")
        for m in channel_mult:
            _validate.positive_int("each channel_mult entry", m)
            if (channels * m) % groups:
                raise ValueError(f"channels * channel_mult must be multiples of groups={groups}, "
                                 f"got {channels} * {m}")
        time_dim = 4 * channels if time_dim is None else _validate.positive_int("time_dim", time_dim)
        if out_channels is not None:
            _validate.positive_int("out_channels", out_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        factor = 2 ** (len(channel_mult) - 1)
        if image_size % factor:
            raise ValueError(f"image_size must be divisible by 2 ** (len(channel_mult) - 1) = {factor}, "
                             f"got {image_size}")
        sizes = [image_size // 2 ** i for i in range(len(channel_mult))]
        for r in attention_resolutions:
            if r not in sizes:
                raise ValueError(f"attention_resolutions entry {r} is not a level size; the levels are {sizes}")

        self.in_channels, self.image_size, self.z_dim = in_channels, image_size, z_dim
        self.out_channels = out_channels or in_channels
        self.channels, self.tanh = channels, tanh

        def block(c_in: int, c_out: int, resample: str | None = None) -> AdaResBlock:
            return AdaResBlock(c_in, c_out, time_dim, z_emb_dim, groups, dropout, resample)

        def attention(ch: int, size: int) -> nn.Module:
            return AttentionBlock(ch, 1, groups) if size in attention_resolutions else nn.Identity()

        self.time_embed = nn.Sequential(_linear(channels, time_dim), nn.SiLU(), _linear(time_dim, time_dim))
        self.mapping = MappingNetwork(z_dim, z_emb_dim, mapping_layers)
        self.conv_in = _conv(in_channels, channels, 3)

        skips, ch = [channels], channels
        self.enc_res, self.enc_attn, self.enc_down = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, mult in enumerate(channel_mult):
            out = channels * mult
            self.enc_res.append(nn.ModuleList(block(c, out) for c in [ch] + [out] * (num_res_blocks - 1)))
            self.enc_attn.append(nn.ModuleList(attention(out, sizes[i]) for _ in range(num_res_blocks)))
            ch = out
            skips += [ch] * num_res_blocks
            if i < len(channel_mult) - 1:
                self.enc_down.append(block(ch, ch, "down"))
                skips.append(ch)

        self.mid_res1, self.mid_attn, self.mid_res2 = block(ch, ch), AttentionBlock(ch, 1, groups), block(ch, ch)

        self.dec_res, self.dec_attn, self.dec_up = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            out = channels * channel_mult[i]
            level = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.append(block(ch + skips.pop(), out))
                ch = out
            self.dec_res.append(level)
            self.dec_attn.append(attention(ch, sizes[i]))
            if i > 0:
                self.dec_up.append(block(ch, ch, "up"))

        self.norm_out = GroupNorm32(groups, ch, eps=1e-6)
        self.conv_out = _conv(ch, self.out_channels, 3)

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by ``from_preset`` (their settings are in ``GENERATOR_PRESETS``)."""
        return tuple(GENERATOR_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Generator":
        """Build a configuration of ``GENERATOR_PRESETS``, e.g. ``Generator.from_preset("ddgan-cifar10")``;
        keyword arguments override it (e.g. ``in_channels=12, image_size=16`` for wavelet DDGAN)."""
        _validate.choice("preset", name, GENERATOR_PRESETS)
        return cls(**{**GENERATOR_PRESETS[name], **overrides})

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example, ``(in_channels, image_size, image_size)``."""
        return (self.in_channels, self.image_size, self.image_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Predict x0' ``[B, out_channels, H, W]`` from x_t ``[B, in_channels, H, W]``, timesteps ``t``
        ``[B]`` (or a scalar) and the latent ``z`` ``[B, z_dim]``, which is required (the method draws it)."""
        _check_image("x", x, self.in_channels, self.image_size)
        b = x.shape[0]
        t = _timesteps(t, b)
        if z is None:
            raise ValueError(f"the generator needs its latent z [B, {self.z_dim}] (e.g. torch.randn(B, {self.z_dim}))")
        _check_points("z", z, self.z_dim, b)
        weight = self.time_embed[0].weight
        t_emb = F.silu(self.time_embed(timestep_embedding(t, self.channels).to(x.device, weight.dtype)))
        z_emb = self.mapping(z.to(weight.dtype))

        h = self.conv_in(x)
        skips = [h]
        for i, (blocks, attns) in enumerate(zip(self.enc_res, self.enc_attn)):
            for res, attn in zip(blocks, attns):
                h = attn(res(h, t_emb, z_emb))
                skips.append(h)
            if i < len(self.enc_down):
                h = self.enc_down[i](h, t_emb, z_emb)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, t_emb, z_emb)), t_emb, z_emb)
        for j, (blocks, attn) in enumerate(zip(self.dec_res, self.dec_attn)):
            for res in blocks:
                h = res(torch.cat([h, skips.pop()], dim=1), t_emb, z_emb)
            h = attn(h)
            if j < len(self.dec_up):
                h = self.dec_up[j](h, t_emb, z_emb)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh else h


# =================================================================================== discriminator
class Discriminator(nn.Module):
    """DDGAN's time-dependent discriminator ``D(x_{t-1}, t, x_t) -> [B]`` logits (module docstring).

    The pair is concatenated along channels and a 1x1 convolution maps it to ``2 * channels``; then
    ``DownBlock``s, each adding the timestep embedding (sinusoidal features of width ``time_dim``, a
    two-layer MLP with LeakyReLU 0.2, then LeakyReLU). ``depth="small"`` (DDGAN's ``Discriminator_small``,
    for about 32x32): one block at full resolution (``2 * channels``) and three downsampling blocks to ``4, 8, 8`` times
    ``channels`` (``image_size`` must be divisible by 8). ``depth="large"`` (``Discriminator_large``, for 64
    to 256): downsampling blocks to ``4, 8, 8, ...`` times ``channels`` until the map is 4x4 (six at 256;
    ``image_size`` must be 4 times a power of two; a 4x4 input gets one block without downsampling). Then the minibatch standard deviation
    channel (groups of at most ``mbstd_group`` examples), a 3x3 convolution, LeakyReLU, a sum over pixels
    and a linear layer to one logit.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, channels: int = 64, depth: str = "small",
                 time_dim: int = 128, mbstd_group: int = 4):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("image_size", image_size), ("channels", channels),
                            ("time_dim", time_dim), ("mbstd_group", mbstd_group)]:
            _validate.positive_int(name, value)
        _validate.choice("depth", depth, DEPTHS)
        if depth == "small":
            if image_size % 8:
                raise ValueError(f"the small discriminator downsamples 3 times: image_size must be divisible by 8, "
                                 f"got {image_size}")
            widths, downs = [2, 4, 8, 8], [False, True, True, True]
        else:
            n_down = int(math.log2(image_size // 4)) if image_size >= 4 else -1
            if n_down < 0 or 4 * 2 ** n_down != image_size:
                raise ValueError(f"the large discriminator downsamples to 4x4: image_size must be 4 * 2**k, "
                                 f"got {image_size}")
            # a 4x4 input (tiny latents) keeps one block at full resolution
            widths, downs = ([4] + [8] * (n_down - 1), [True] * n_down) if n_down else ([4], [False])
        self.in_channels, self.image_size, self.depth = in_channels, image_size, depth
        self.time_dim, self.mbstd_group = time_dim, mbstd_group

        self.time_embed = nn.Sequential(_linear(time_dim, time_dim), nn.LeakyReLU(0.2),
                                        _linear(time_dim, time_dim))
        self.conv_in = _conv(2 * in_channels, 2 * channels, 1)
        self.blocks, ch = nn.ModuleList(), 2 * channels
        for width, down in zip(widths, downs):
            self.blocks.append(DownBlock(ch, width * channels, time_dim, down))
            ch = width * channels
        self.conv_out = _conv(ch + 1, ch, 3)
        self.linear = _linear(ch, 1)

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by ``from_preset`` (their settings are in ``DISCRIMINATOR_PRESETS``)."""
        return tuple(DISCRIMINATOR_PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Discriminator":
        """Build a configuration of ``DISCRIMINATOR_PRESETS``; keyword arguments override it."""
        _validate.choice("preset", name, DISCRIMINATOR_PRESETS)
        return cls(**{**DISCRIMINATOR_PRESETS[name], **overrides})

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example (each of x_{t-1} and x_t), ``(in_channels, image_size, image_size)``."""
        return (self.in_channels, self.image_size, self.image_size)

    def forward(self, x_prev: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` for the pairs ``(x_prev, x_t)`` ``[B, in_channels, H, W]`` at timesteps ``t`` ``[B]``."""
        _check_image("x_prev", x_prev, self.in_channels, self.image_size)
        _check_image("x_t", x_t, self.in_channels, self.image_size)
        if x_prev.shape[0] != x_t.shape[0]:
            raise ValueError(f"x_prev and x_t must have the same batch size, got {x_prev.shape[0]} and {x_t.shape[0]}")
        t = _timesteps(t, x_t.shape[0])
        weight = self.time_embed[0].weight
        t_emb = F.leaky_relu(self.time_embed(timestep_embedding(t, self.time_dim).to(x_t.device, weight.dtype)), 0.2)
        h = self.conv_in(torch.cat([x_prev, x_t], dim=1))
        for block in self.blocks:
            h = block(h, t_emb)
        h = F.leaky_relu(self.conv_out(minibatch_stddev(h, self.mbstd_group)), 0.2)
        return self.linear(h.sum(dim=(2, 3))).squeeze(1)


# ========================================================================================= toy nets
def _mlp(in_dim: int, hidden: int, out_dim: int, depth: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` (Linear then ``act``), then a linear output layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), act()]
    return nn.Sequential(*layers, nn.Linear(hidden, out_dim))


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ToyGenerator(nn.Module):
    """The generator ``G(z) -> x`` of a plain GAN on points in R^``dim`` (book chapter "GANs"): an MLP
    with ``depth`` hidden SiLU layers of width ``hidden``."""

    def __init__(self, z_dim: int = 2, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        for name, value in [("z_dim", z_dim), ("dim", dim), ("hidden", hidden), ("depth", depth)]:
            _validate.positive_int(name, value)
        self.z_dim, self.dim = z_dim, dim
        self.net = _mlp(z_dim, hidden, dim, depth, nn.SiLU)

    @property
    def data_shape(self) -> tuple:
        """Shape of one generated example."""
        return (self.dim,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_points("z", z, self.z_dim)
        return self.net(z)


class ToyDiscriminator(nn.Module):
    """The discriminator ``D(x) -> [B]`` logits of a plain GAN on points in R^``dim``: an MLP with
    ``depth`` hidden LeakyReLU(0.2) layers of width ``hidden``."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        for name, value in [("dim", dim), ("hidden", hidden), ("depth", depth)]:
            _validate.positive_int(name, value)
        self.dim = dim
        self.net = _mlp(dim, hidden, 1, depth, _leaky)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_points("x", x, self.dim)
        return self.net(x).squeeze(1)


class _TimeResidualMLP(nn.Module):
    """A residual MLP on ``in_dim`` features conditioned on timesteps, like pdlib's ``MLP2D``: the input
    is projected to ``hidden``, the timestep embedding (sinusoidal features of width ``time_dim`` and a
    two-layer MLP) is added before each of the ``depth`` residual blocks, and a linear layer gives
    ``out_dim`` outputs. ``act`` is the activation throughout."""

    def __init__(self, in_dim: int, hidden: int, depth: int, time_dim: int, out_dim: int, act: Callable[[], nn.Module]):
        super().__init__()
        for name, value in [("hidden", hidden), ("depth", depth), ("time_dim", time_dim)]:
            _validate.positive_int(name, value)
        self.time_dim = time_dim
        self.inp = nn.Linear(in_dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), act(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(nn.Sequential(act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, hidden))
                                    for _ in range(depth))
        self.out = nn.Sequential(act(), nn.Linear(hidden, out_dim))

    def forward(self, features: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _timesteps(t, features.shape[0])
        cond = self.time(timestep_embedding(t, self.time_dim).to(features.device, features.dtype))
        h = self.inp(features)
        for block in self.blocks:
            h = h + block(h + cond)
        return self.out(h)


class MLPGenerator2D(nn.Module):
    """A DDGAN generator ``G(x_t, t, z) -> x0'`` for points in R^``dim`` (book chapter "Denoising
    diffusion GANs"): z is concatenated with x_t at the input of a residual SiLU MLP whose blocks receive
    the timestep embedding (as pdlib's ``MLP2D``)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, z_dim: int = 2, time_dim: int = 64):
        super().__init__()
        _validate.positive_int("dim", dim)
        _validate.positive_int("z_dim", z_dim)
        self.dim, self.z_dim = dim, z_dim
        self.net = _TimeResidualMLP(dim + z_dim, hidden, depth, time_dim, dim, nn.SiLU)

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example."""
        return (self.dim,)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Predict x0' ``[B, dim]`` from x_t ``[B, dim]``, timesteps ``t`` ``[B]`` and z ``[B, z_dim]`` (required)."""
        _check_points("x", x, self.dim)
        if z is None:
            raise ValueError(f"the generator needs its latent z [B, {self.z_dim}] (e.g. torch.randn(B, {self.z_dim}))")
        _check_points("z", z, self.z_dim, x.shape[0])
        return self.net(torch.cat([x, z.to(x.dtype)], dim=1), t)


class MLPDiscriminator2D(nn.Module):
    """A DDGAN discriminator ``D(x_{t-1}, t, x_t) -> [B]`` logits for points in R^``dim``: the pair is
    concatenated at the input of a residual LeakyReLU(0.2) MLP whose blocks receive the timestep embedding."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 64):
        super().__init__()
        _validate.positive_int("dim", dim)
        self.dim = dim
        self.net = _TimeResidualMLP(2 * dim, hidden, depth, time_dim, 1, _leaky)

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example (each of x_{t-1} and x_t)."""
        return (self.dim,)

    def forward(self, x_prev: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        _check_points("x_prev", x_prev, self.dim)
        _check_points("x_t", x_t, self.dim, x_prev.shape[0])
        return self.net(torch.cat([x_prev, x_t], dim=1), t).squeeze(1)


__all__ = ["DISCRIMINATOR_PRESETS", "GENERATOR_PRESETS", "AdaGN", "Discriminator", "Generator", "MLPDiscriminator2D",
           "MLPGenerator2D", "MappingNetwork", "PixelNorm", "ToyDiscriminator", "ToyGenerator", "minibatch_stddev"]
