"""A stand-in for LPIPS when its ImageNet weights cannot be had: an LPIPS-style distance on the features
of a small CNN trained here, in seconds, as a classifier on the book's data (scikit-learn's digits).

It computes what LPIPS computes (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", eq. 1) with every learned linear weight set to 1, the uniform-weight baseline of that
paper (the ``lpips`` package's ``lpips=False``):

    d(x, y) = sum_{l in layers}  mean_{h,w}  || f_l(x)_{hw} - f_l(y)_{hw} ||^2,

``f_l(x)_{hw}`` being the channel vector of layer ``l`` at pixel ``(h, w)`` divided by its Euclidean norm.
The numbers are **not LPIPS** and are not comparable with published LPIPS values: the network is tiny,
trained on 8x8 or 16x16 digits rather than ImageNet, and no weights were calibrated on human judgments.
:class:`FeatureDistance` carries the ``label`` "stand-in feature distance (not LPIPS)" for every table or
figure that shows them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from .lpips import check_pair


class SmallFeatureNet(nn.Module):
    """A small classifier CNN whose block outputs serve as features: block ``i`` is (2x2 average pooling
    for ``i > 0``), 3x3 convolution, ReLU, with ``widths[i]`` channels; the head is a global spatial mean
    and a linear layer. ``features(x)`` returns the block outputs, ``forward(x)`` the class logits."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        self.in_channels = _validate.positive_int("in_channels", in_channels)
        channels = (in_channels, *widths)
        self.blocks = nn.ModuleList(
            nn.Sequential(*([nn.AvgPool2d(2)] if i else []), nn.Conv2d(channels[i], channels[i + 1], 3, padding=1),
                          nn.ReLU())
            for i in range(len(widths)))
        self.head = nn.Linear(channels[-1], num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1].mean((2, 3)))


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, steps: int = 300, *, batch_size: int = 128,
                      lr: float = 3e-3, widths=(16, 32, 64), generator: torch.Generator | None = None
                      ) -> SmallFeatureNet:
    """Train a :class:`SmallFeatureNet` on ``images`` ``[N, C, H, W]`` (in [-1, 1], H and W divisible by
    ``2 ** (len(widths) - 1)``) and integer ``labels`` ``[N]`` with cross-entropy and Adam, ``steps``
    minibatches drawn with replacement. The initial weights and the batches come from ``generator``
    only, so a seeded generator gives the same network. Returns it in eval mode."""
    _validate.tensor("images", images, ndim=4)
    _validate.tensor("labels", labels, ndim=1)
    if len(labels) != len(images):
        raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")
    _validate.positive_int("steps", steps)
    seed = int(torch.randint(2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallFeatureNet(images.shape[1], int(labels.max()) + 1, widths).to(images.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        batch = torch.randint(len(images), (batch_size,), generator=generator).to(images.device)
        loss = F.cross_entropy(net(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


class FeatureDistance(nn.Module):
    """LPIPS-style distance with uniform layer weights on a :class:`SmallFeatureNet` (module docstring):
    ``forward(x, y)`` on ``[B, C, H, W]`` images in [-1, 1] returns ``Tensor[B]``. **Not LPIPS**: see ``label``.

    ``layers`` are indices into ``feature_net.features(x)`` (default: all). ``feature_net`` is frozen in
    place (eval mode, ``requires_grad=False``); gradients flow to the inputs."""

    label = "stand-in feature distance (not LPIPS)"

    def __init__(self, feature_net: SmallFeatureNet, layers=None):
        super().__init__()
        n = len(feature_net.blocks)
        self.layers = tuple(range(n)) if layers is None else tuple(layers)
        if not self.layers or any(not 0 <= layer < n for layer in self.layers):
            raise ValueError(f"layers must be a non-empty subset of 0..{n - 1}, got {layers!r}")
        self.feature_net = feature_net.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_pair(x, y, channels=self.feature_net.in_channels)
        feats = self.feature_net.features(torch.cat([x, y]).to(self.feature_net.head.weight.dtype))
        total = 0
        for layer in self.layers:
            fx, fy = F.normalize(feats[layer], dim=1, eps=1e-10).chunk(2)
            total = total + (fx - fy).square().sum(1).mean((1, 2))
        return total
