"""UNet: the image network of the DDPM family (Ho et al. 2020, appendix B; Nichol & Dhariwal 2021).

The architecture is the one of DDPM (a PixelCNN++-like Wide-ResNet UNet with self-attention at 16x16)
in the form of improved-diffusion: residual blocks that receive a timestep embedding, either added
after the first convolution or as a scale and shift of the second group norm ("scale-shift norm",
Nichol & Dhariwal 2021, appendix A), multi-head self-attention at chosen resolutions,
strided-convolution downsampling, nearest-neighbour-plus-convolution upsampling and one skip
connection per encoder block. The last convolution of every residual branch, of every attention
block and of the output is initialised to zero (improved-diffusion's ``zero_module``), so a fresh
network is the identity on each residual path and outputs zeros.

Book chapters "DDPM" (the architecture) and "Self-perceptual objective" (``UNet.features``).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .embedding import timestep_embedding

#: Published configurations, for ``UNet.from_preset``.
PRESETS: dict[str, dict] = {
    # Ho et al. (2020), appendix B: 35.7M parameters, CIFAR-10 FID 3.17.
    "ddpm-cifar10": dict(image_size=32, model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                         attention_resolutions=(16,), num_heads=1, dropout=0.1),
    # Nichol & Dhariwal (2021), appendix A, and improved-diffusion's README
    # (also the Cas-DM backbone without learned sigma).
    "improved-cifar10": dict(image_size=32, model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=3,
                             attention_resolutions=(16, 8), num_heads=4, use_scale_shift_norm=True,
                             dropout=0.3),
    # improved-diffusion's 64x64 model (script_util.create_model: channel_mult (1, 2, 3, 4), attention at
    # 16 and 8, 4 heads, scale-shift norm, dropout 0) with 3 residual blocks, the backbone with which
    # Cas-DM (its section 5.1) trains CelebA-HQ 64x64.
    "celeba64": dict(image_size=64, model_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                     attention_resolutions=(16, 8), num_heads=4, use_scale_shift_norm=True, dropout=0.0),
    # A small network for the CPU chapters: 16x16 images, 0.65M parameters, two levels (16x16 and 8x8),
    # attention only in the middle block (8x8), 8 normalisation groups (4 or 8 channels each; 32 groups
    # on these 32-channel maps would normalise each channel alone: see ``UNet``'s ``norm_groups``).
    "cpu-small": dict(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(), num_heads=1, dropout=0.0, norm_groups=8),
}


class GroupNorm32(nn.GroupNorm):
    """Group normalisation computed in float32 and returned in the input's dtype (stable in bf16/fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def _zero(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with timestep embedding (Ho et al. 2020, appendix B; Nichol & Dhariwal 2021, app. A).

    ``x -> GN -> SiLU -> [resample] -> conv3x3 -> (+ emb | GN(.)*(1+scale)+shift) -> SiLU -> dropout ->
    conv3x3 (zero-initialised)``, added to ``x`` (through a 1x1 convolution when the channel count
    changes). ``resample`` is ``"down"`` (2x2 average pooling) or ``"up"`` (nearest-neighbour 2x) for
    the BigGAN-style resampling blocks of Dhariwal & Nichol (2021); both paths are resampled.
    The block receives the embedding already passed through SiLU (shared by all blocks).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool,
                 resample: str | None = None, groups: int = 32):
        super().__init__()
        self.scale_shift, self.resample = scale_shift, resample
        self.norm1 = GroupNorm32(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = GroupNorm32(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        e = self.emb(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection
    (Ho et al. 2020, appendix B; multi-head as in Nichol & Dhariwal 2021). Uses
    ``torch.nn.functional.scaled_dot_product_attention``; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int, groups: int = 32):
        super().__init__()
        self.heads = num_heads
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]; a view for channels_last maps
        q, k, v = self.qkv(tokens).unflatten(-1, (3, self.heads, c // self.heads)).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        h = self.proj(h.transpose(1, 2).flatten(2))  # [B, HW, C]
        return x + h.transpose(1, 2).reshape(b, c, hgt, wid)


class Level(nn.Module):
    """The residual blocks (each followed by attention where configured) of one resolution level."""

    def __init__(self, res: list[ResBlock], attn: list[AttentionBlock | None]):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(a if a is not None else nn.Identity() for a in attn)


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (Ho et al. 2020, appendix B)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (Ho et al. 2020, appendix B)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """The DDPM / improved-diffusion UNet ``f(x, t[, y])`` for images ``[B, C, H, W]``.

    Ho et al. (2020), appendix B (architecture) and Nichol & Dhariwal (2021), appendix A
    (multi-head attention, attention at several resolutions, scale-shift norm, class embedding).
    Book chapter "DDPM".

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output (default ``in_channels``); e.g. ``2C + 1`` for dual diffusion.
        model_channels: channels of the first level; level ``i`` has ``model_channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level; there are ``len(channel_mult) - 1`` downsamplings.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more per level).
        attention_resolutions: spatial sizes (in pixels, e.g. ``(16,)`` for 16x16) that get self-attention
            after each residual block; each must be one of the levels' sizes.
        num_heads: attention heads (ignored when ``num_head_channels`` is given).
        num_head_channels: channels per attention head; sets the heads per level as ``channels // this``.
        dropout: dropout probability inside the residual blocks.
        use_scale_shift_norm: condition on the embedding by ``GN(h) * (1 + scale) + shift``.
        num_classes: if given, a label embedding with ``num_classes + 1`` rows; the last one
            (``null_class``) means "no label" for classifier-free guidance.
        image_size: the side of the training images (sets which levels have attention); inputs may have
            any height and width divisible by ``2 ** (len(channel_mult) - 1)``.
        resblock_updown: resample with residual blocks instead of (strided / upsampling) convolutions
            (Dhariwal & Nichol 2021, BigGAN-style).
        norm_groups: groups of every GroupNorm (32 in the papers). On narrow maps 32 groups of one or two
            channels act as instance normalisation, which removes each channel's mean (on the 32-channel
            ``cpu-small`` network: tinted backgrounds); the CPU preset uses 8.

    Timesteps ``t`` are integer indices or reals, shaped ``[B]`` (or a scalar, broadcast); the
    embedding is ``timestep_embedding`` of ``t`` followed by a two-layer MLP with SiLU.
    """

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, model_channels: int = 128,
                 channel_mult: Iterable[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Iterable[int] = (16,), num_heads: int = 1,
                 num_head_channels: int | None = None, dropout: float = 0.0, use_scale_shift_norm: bool = False,
                 num_classes: int | None = None, image_size: int = 32, resblock_updown: bool = False,
                 norm_groups: int = 32):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("model_channels", model_channels),
                            ("num_res_blocks", num_res_blocks), ("num_heads", num_heads),
                            ("image_size", image_size), ("norm_groups", norm_groups)]:
            _validate.positive_int(name, value)
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        if not channel_mult:
            raise ValueError("channel_mult must have at least one entry")
        for m in channel_mult:
            _validate.positive_int("each channel_mult entry", m)
            if (model_channels * m) % norm_groups:
                raise ValueError(f"model_channels * channel_mult must be multiples of norm_groups={norm_groups}, "
                                 f"got {model_channels} * {m}")
        if out_channels is not None:
            _validate.positive_int("out_channels", out_channels)
        if num_classes is not None:
            _validate.positive_int("num_classes", num_classes)
        if num_head_channels is not None:
            _validate.positive_int("num_head_channels", num_head_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.factor = 2 ** (len(channel_mult) - 1)
        if image_size % self.factor:
            raise ValueError(f"image_size must be divisible by 2 ** (len(channel_mult) - 1) = {self.factor}, "
                             f"got {image_size}")
        sizes = [image_size // 2 ** i for i in range(len(channel_mult))]
        for r in attention_resolutions:
            if r not in sizes:
                raise ValueError(f"attention_resolutions entry {r} is not a level size; the levels are {sizes}")

        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.out_channels = out_channels or in_channels
        self.channel_mult = channel_mult
        emb_dim = 4 * model_channels

        def heads(ch: int) -> int:
            if num_head_channels is None:
                if ch % num_heads:
                    raise ValueError(f"{ch} channels cannot be split into num_heads={num_heads} heads")
                return num_heads
            if ch % num_head_channels:
                raise ValueError(f"{ch} channels cannot be split into heads of num_head_channels={num_head_channels}")
            return ch // num_head_channels

        def level(chs_in: list[int], ch_out: int, attn: bool) -> Level:
            res = [ResBlock(c, ch_out, emb_dim, dropout, use_scale_shift_norm, groups=norm_groups) for c in chs_in]
            return Level(res, [AttentionBlock(ch_out, heads(ch_out), norm_groups) if attn else None for _ in chs_in])

        def resampler(ch: int, kind: str) -> nn.Module:
            if resblock_updown:
                return ResBlock(ch, ch, emb_dim, dropout, use_scale_shift_norm, resample=kind, groups=norm_groups)
            return Downsample(ch) if kind == "down" else Upsample(ch)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.model_channels = model_channels
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        # Encoder: every block output (and conv_in, and every downsampling) is kept as a skip.
        skips, ch = [model_channels], model_channels
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in enumerate(channel_mult):
            out = model_channels * mult
            self.down.append(level([ch] + [out] * (num_res_blocks - 1), out, sizes[i] in attention_resolutions))
            ch = out
            skips += [ch] * num_res_blocks
            if i < len(channel_mult) - 1:
                self.downsample.append(resampler(ch, "down"))
                skips.append(ch)

        self.mid_res1 = ResBlock(ch, ch, emb_dim, dropout, use_scale_shift_norm, groups=norm_groups)
        self.mid_attn = AttentionBlock(ch, heads(ch), norm_groups)
        self.mid_res2 = ResBlock(ch, ch, emb_dim, dropout, use_scale_shift_norm, groups=norm_groups)

        # Decoder: level i (from the deepest) has num_res_blocks + 1 blocks, each eating one skip.
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            out = model_channels * channel_mult[i]
            chs_in = []
            for _ in range(num_res_blocks + 1):
                chs_in.append(ch + skips.pop())
                ch = out
            self.up.append(level(chs_in, out, sizes[i] in attention_resolutions))
            if i > 0:
                self.upsample.append(resampler(ch, "up"))

        self.norm_out = GroupNorm32(norm_groups, ch)
        self.conv_out = _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by ``from_preset`` (their settings are in ``pdlib.nets.unet.PRESETS``)."""
        return tuple(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "UNet":
        """Build a published configuration, e.g. ``UNet.from_preset("ddpm-cifar10")`` (Ho et al. 2020,
        35.7M parameters); keyword arguments override the preset (e.g. ``out_channels=7``)."""
        _validate.choice("preset", name, PRESETS)
        return cls(**{**PRESETS[name], **overrides})

    @property
    def data_shape(self) -> tuple:
        """Shape of one input example, ``(in_channels, image_size, image_size)``."""
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def null_class(self) -> int | None:
        """The label index meaning "no label" (classifier-free guidance), or None if unconditional."""
        return self.num_classes

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names accepted by ``features``, in the order they are computed."""
        n = len(self.channel_mult)
        return (*(f"enc{i}" for i in range(n)), "mid", *(f"dec{i}" for i in reversed(range(n))))

    # ----------------------------------------------------------------------------------------------
    def _embedding(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Check the inputs and return SiLU(time embedding [+ label embedding]) [B, 4 * model_channels]."""
        _validate.tensor("x", x, ndim=4)
        _validate.tensor("t", t)
        b, c, hgt, wid = x.shape
        if c != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels ([B, {self.in_channels}, H, W]), "
                             f"got shape {tuple(x.shape)}")
        if hgt % self.factor or wid % self.factor:
            raise ValueError(f"x height and width must be divisible by {self.factor}, got {hgt}x{wid}")
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape [B] = [{b}] (or be a scalar), got {tuple(t.shape)}")
        emb = timestep_embedding(t, self.model_channels).to(x.device, self.time_embed[0].weight.dtype)
        emb = self.time_embed(emb)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            _validate.tensor("y", y, ndim=1)
            if y.shape[0] != b or y.dtype.is_floating_point:
                raise ValueError(f"y must be an integer tensor of shape [{b}], got {y.dtype} {tuple(y.shape)}")
            # (a data-dependent check: skipped inside torch.compile, where it would break the graph)
            if not torch.compiler.is_compiling() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = no label)")
            emb = emb + self.label_embed(y)
        elif y is not None:
            raise ValueError("this UNet has no labels (num_classes=None) but y was given")
        return F.silu(emb)

    def _run(self, x, t, y, wanted: frozenset | None):
        """Run the network; return the output, or (when ``wanted`` is a set of layer names) the dict of
        those feature maps, stopping as soon as the last one is computed."""
        emb = self._embedding(x, t, y)
        feats: dict[str, torch.Tensor] = {}

        def keep(name: str, h: torch.Tensor) -> bool:
            if wanted is not None and name in wanted:
                feats[name] = h
            return wanted is not None and len(feats) == len(wanted)

        h = self.conv_in(x)
        skips = [h]
        for i, lvl in enumerate(self.down):
            for res, attn in zip(lvl.res, lvl.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if keep(f"enc{i}", h):
                return feats
            if i < len(self.downsample):
                h = self.downsample[i](h, emb)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)
        if keep("mid", h):
            return feats
        n = len(self.up)
        for j, lvl in enumerate(self.up):
            for res, attn in zip(lvl.res, lvl.attn):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            if keep(f"dec{n - 1 - j}", h):
                return feats
            if j < len(self.upsample):
                h = self.upsample[j](h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict a map ``[B, out_channels, H, W]`` from ``x`` ``[B, in_channels, H, W]``, timesteps ``t``
        ``[B]`` and optional labels ``y`` ``[B]`` (``null_class`` or None = unconditional)."""
        return self._run(x, t, y, None)

    def features(self, x: torch.Tensor, t: torch.Tensor, layers: Iterable[str] | str = ("mid",),
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Intermediate feature maps by name, for perceptual losses (self-perceptual objective,
        Lin & Yang 2024, "Diffusion model with perceptual loss", section 3: the mid-block output of a
        frozen copy of the network).

        Names (see ``layer_names``): ``"enc{i}"`` is the output of encoder level ``i`` (after its
        residual/attention blocks, before downsampling: ``model_channels * channel_mult[i]`` channels
        at ``1 / 2**i`` of the input size); ``"mid"`` the output of the middle block; ``"dec{i}"`` the
        output of decoder level ``i`` (same shape as ``"enc{i}"``, before upsampling). Computation
        stops at the last requested layer. Gradients flow to the input and the parameters.
        """
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        valid = self.layer_names
        bad = [name for name in layers if name not in valid]
        if not layers:
            raise ValueError(f"layers is empty; expected names among {', '.join(valid)}")
        if bad:
            raise ValueError(f"unknown layer name(s) {bad}; expected names among {', '.join(valid)}")
        return self._run(x, t, y, frozenset(layers))
