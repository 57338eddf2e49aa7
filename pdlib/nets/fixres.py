"""FixResCNN: a convolutional network that keeps the input's resolution in every layer.

Cas-DM (An et al. 2024, "Bring Metric Functions into Diffusion Models", sections 4.1 and 5.2, Tables 1 and
5) cascades two networks: theta predicts the noise and phi refines the clean-image estimate
``x0* = (x_t - sqrt(1 - abar_t) eps') / sqrt(abar_t)`` into ``x0'`` plus one extra channel, the
per-pixel mixing weight ``r_t``. The paper only requires that phi's "input and output tensors have the
same shape" and compares two choices: a UNet (phi_UNet) and a "fixed-resolution CNN" (phi_Fix-Res),
which never changes the spatial size. It does not give the Fix-Res network's depth or width.

``FixResCNN`` is our reading of phi_Fix-Res: a 3x3 input convolution, ``num_blocks`` residual blocks
at full resolution and a 3x3 output convolution. The residual blocks are the UNet's
(:class:`pdlib.nets.unet.ResBlock`, DDPM form: ``GN -> SiLU -> conv3x3 -> + emb(t) -> GN -> SiLU ->
dropout -> conv3x3``) with the timestep embedding added per channel after the first convolution. As in
improved-diffusion, the last convolution of every residual branch and the output convolution start at
zero (``zero_module``), so a fresh network outputs zeros. Without strides, pooling or upsampling the
network accepts any height and width, odd ones included; its receptive field grows by 4 pixels per
block (two 3x3 convolutions), plus 2 for the input and output convolutions, while the group norms see
the whole image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .embedding import timestep_embedding
from .unet import GroupNorm32, ResBlock, _zero

#: Configurations for ``FixResCNN.from_preset``. The paper gives no layer counts for its Fix-Res
#: network, so both are pdlib's choices.
PRESETS: dict[str, dict] = {
    # For the CPU chapters (8x8 to 16x16 images): about 91k parameters, 3 blocks, receptive field 17x17.
    "cpu": dict(channels=32, num_blocks=3, time_embed_dim=128, dropout=0.0, groups=8),
    # A GPU phi for CIFAR-10 32x32 (our choice: the paper does not give its Fix-Res layer counts). The width
    # and embedding width are those of the improved-diffusion CIFAR-10 UNet's first level (128 channels,
    # 4 * 128 for the embedding); 8 blocks give a 37x37 receptive field, more than the whole 32x32 image;
    # dropout 0.1 as DDPM's CIFAR-10 network. About 3.2M parameters (theta, the UNet, has about 52M).
    "casdm-cifar10": dict(channels=128, num_blocks=8, time_embed_dim=512, dropout=0.1, groups=32),
}


class FixResCNN(nn.Module):
    """Fixed-resolution residual CNN ``phi(x, t) -> [B, out_channels, H, W]`` (Cas-DM's phi_Fix-Res).

    Args:
        in_channels: channels of the input (Cas-DM: the image channels C of ``x0*``).
        out_channels: channels of the output; default ``in_channels + 1`` (Cas-DM: ``x0'`` and the logit of
            the mixing weight ``r_t``).
        channels: width of every hidden layer.
        num_blocks: residual blocks (at least one), all at the input's resolution.
        time_embed_dim: width of the timestep embedding (default ``4 * channels``, as the UNet); the
            sinusoidal embedding of width ``channels`` goes through a two-layer MLP with SiLU.
        dropout: dropout probability inside the residual blocks.
        groups: groups of every GroupNorm. ``channels`` must be a multiple of it with at least 2 channels
            per group: the embedding is added per channel just before a group norm, which removes each
            group's mean, so with one channel per group the network would ignore ``t``.

    ``t`` holds integer or real timesteps ``[B]`` (or a scalar, broadcast). Any ``H, W >= 1`` work.
    """

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, channels: int = 64,
                 num_blocks: int = 4, time_embed_dim: int | None = None, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("channels", channels), ("num_blocks", num_blocks),
                            ("groups", groups)]:
            _validate.positive_int(name, value)
        if out_channels is not None:
            _validate.positive_int("out_channels", out_channels)
        if time_embed_dim is not None:
            _validate.positive_int("time_embed_dim", time_embed_dim)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if channels % groups:
            raise ValueError(f"channels must be a multiple of groups, got channels={channels}, groups={groups}")
        if channels // groups < 2:
            raise ValueError(f"channels // groups must be >= 2 (got {channels} // {groups}): with one channel per "
                             "group the group norm removes the per-channel timestep shift and t is ignored")

        self.in_channels = in_channels
        self.out_channels = in_channels + 1 if out_channels is None else out_channels
        self.channels, self.num_blocks = channels, num_blocks
        self.time_embed_dim = 4 * channels if time_embed_dim is None else time_embed_dim
        emb = self.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(channels, channels, emb, dropout, scale_shift=False, groups=groups)
                                    for _ in range(num_blocks))
        self.norm_out = GroupNorm32(groups, channels)
        self.conv_out = _zero(nn.Conv2d(channels, self.out_channels, 3, padding=1))

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def presets(cls) -> tuple[str, ...]:
        """Names accepted by ``from_preset`` (their settings are in ``pdlib.nets.fixres.PRESETS``)."""
        return tuple(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FixResCNN":
        """Build a named configuration, e.g. ``FixResCNN.from_preset("cpu", in_channels=1)``; keyword
        arguments override the preset."""
        _validate.choice("preset", name, PRESETS)
        return cls(**{**PRESETS[name], **overrides})

    @property
    def receptive_field(self) -> int:
        """Side of the square of input pixels that the convolutions let reach one output pixel
        (``4 * num_blocks + 5``); the group norms' statistics come from the whole image besides."""
        return 2 * (2 * self.num_blocks + 2) + 1

    # ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Map ``x`` ``[B, in_channels, H, W]`` and timesteps ``t`` ``[B]`` to ``[B, out_channels, H, W]``."""
        _validate.tensor("x", x, ndim=4)
        _validate.tensor("t", t)
        b, c = x.shape[:2]
        if c != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels ([B, {self.in_channels}, H, W]), "
                             f"got shape {tuple(x.shape)}")
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape [B] = [{b}] (or be a scalar), got {tuple(t.shape)}")
        emb = timestep_embedding(t, self.channels).to(x.device, self.time_embed[0].weight.dtype)
        emb = F.silu(self.time_embed(emb))  # shared by all blocks, as in the UNet
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
