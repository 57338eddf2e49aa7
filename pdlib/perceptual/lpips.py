"""LPIPS, the learned perceptual distance of Zhang et al. 2018 ("The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", eq. 1), as a frozen loss module.

    d(x, y) = sum_l  mean_{h,w}  || w_l * (f_l(x)_{hw} - f_l(y)_{hw}) ||^2

where ``f_l(x)_{hw}`` is the channel vector of backbone layer ``l`` at pixel ``(h, w)`` divided by its
Euclidean norm, and ``w_l`` the learned per-channel weights of the paper's "linear" 1x1 layers (v0.1).
The computation is the ``lpips`` package's; pdlib loads its backbone from a local file instead of
torchvision's download server (see :mod:`pdlib.perceptual.weights`).

Cas-DM variant (``resize=224, avgpool=True``): the consistency-models code (Song et al. 2023,
"Consistency Models"), which Cas-DM follows for its LPIPS term, measures ``LPIPS(T(x), T(y))`` with
``T`` = bilinear resize to 224x224 (``F.interpolate``, ``align_corners=False``, no antialiasing) and a map
from [-1, 1] to [0, 1], using piq's VGG16 LPIPS with every max pooling replaced by average pooling
(``AvgPool2d(2, stride=2)``, VGG16's own pooling window; here each replacement keeps the layer's kernel,
stride and padding, the same thing for VGG16 and also defined for AlexNet). piq normalises [0, 1] inputs
with the ImageNet mean and std, ``(u - mean) / std``; the ``lpips`` package normalises [-1, 1] inputs
by ``(x - shift) / scale`` with ``shift = 2 mean - 1`` and ``scale = 2 std``. With ``u = (x + 1) / 2``
both give the same backbone input, so here inputs stay in [-1, 1] and only the resize is applied.
(The consistency-models code resizes only images smaller than 256 pixels; ``resize=224`` always does.)
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..errors import CheckpointError
from .weights import load_backbone, weights_path

RANGE_SLACK = 1.0
"""The target ``y`` may exceed [-1, 1] by this much; beyond it the scale is wrong ([0, 255] images)."""

PREDICTION_SLACK = 9.0
"""The prediction ``x`` may exceed [-1, 1] by this much: a network's unclamped x0 estimate strays out of
the image range while it trains (e.g. to -2.3 a hundred steps into a dual-diffusion run) and must not stop
the run; [0, 255] images are still caught."""


def check_pair(x, y, channels: int) -> None:
    """Raise unless ``x`` and ``y`` are float tensors ``[B, channels, H, W]`` of one shape, roughly in
    [-1, 1] (within ``PREDICTION_SLACK`` for ``x`` and ``RANGE_SLACK`` for ``y``, which catches [0, 255]
    images)."""
    for name, t, slack in (("x", x, PREDICTION_SLACK), ("y", y, RANGE_SLACK)):
        _validate.tensor(name, t, ndim=4)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor of images in [-1, 1], got dtype {t.dtype}")
        if t.shape[1] != channels:
            raise ValueError(f"{name} must have shape [B, {channels}, H, W], got {tuple(t.shape)}")
        if t.numel() and t.detach().abs().max() > 1 + slack:
            raise ValueError(f"{name} must hold images in [-1, 1], got values in [{t.min():.3g}, {t.max():.3g}]; "
                             "map [0, 1] images with 2 * x - 1 and [0, 255] ones with x / 127.5 - 1")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def replace_max_pools(module: nn.Module) -> int:
    """Replace every ``nn.MaxPool2d`` inside ``module`` by an ``nn.AvgPool2d`` with the same kernel,
    stride, padding and ceil mode; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            count += 1
        else:
            count += replace_max_pools(child)
    return count


class LPIPS(nn.Module):
    """Frozen LPIPS distance: ``forward(x, y)`` on ``[B, 3, H, W]`` images in [-1, 1] returns ``Tensor[B]``.

    - ``net``: ``"vgg"`` (VGG16, the usual choice for losses) or ``"alex"`` (AlexNet, the paper's default
      for evaluation).
    - ``pretrained=True``: the ``lpips`` package's v0.1 linear layers and the ImageNet backbone from
      ``weights_dir`` (argument, else ``$PDLIB_WEIGHTS_DIR``, else ``~/.cache/pdlib/weights``). When the file
      is missing, ``pdlib.WeightsUnavailableError`` is raised at once, naming the command
      ``python -m pdlib weights`` that writes it; nothing is downloaded. ``pretrained=False`` gives a random
      backbone and random linear layers (for tests: the numbers are not LPIPS).
    - ``resize=224``: both inputs are resized bilinearly to 224x224 first; ``avgpool=True``: max pooling
      replaced by average pooling. Together they are the Cas-DM / consistency-models variant (module
      docstring); otherwise inputs are used at their own resolution, as the ``lpips`` package does.

    The module is frozen (eval mode, ``requires_grad=False``; ``train()`` keeps it in eval mode so the
    linear layers' dropout stays off inside a model being trained) but differentiable in its inputs.
    ``label`` describes what the numbers are; ``weights_verified`` is True when the backbone file is the
    known conversion (SHA-256 checked).
    """

    def __init__(self, net: str = "vgg", pretrained: bool = True, avgpool: bool = False, resize: int | None = None,
                 *, weights_dir=None):
        super().__init__()
        _validate.choice("net", net, ("vgg", "alex"))
        _validate.choice("resize", resize, (None, 224))
        state = None
        if pretrained:
            state, self.weights_verified = load_backbone(net, weights_dir)  # raises before anything is built
        else:
            self.weights_verified = False
        import lpips

        with warnings.catch_warnings():  # lpips builds torchvision nets with the deprecated `pretrained=`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.model = lpips.LPIPS(net=net, pretrained=pretrained, pnet_rand=True, verbose=False)
        if state is not None:
            try:
                self.model.net.load_state_dict(state)
            except RuntimeError as err:
                raise CheckpointError(f"{weights_path(net, weights_dir)} does not fit the lpips {net} backbone; "
                                      "rewrite it with `python -m pdlib weights`") from err
        if avgpool:
            replace_max_pools(self.model.net)
        self.resize = resize
        self.requires_grad_(False)
        self.eval()
        variant = "".join([", max pooling -> average pooling" if avgpool else "",
                           ", inputs resized to 224x224" if resize else ""])
        if not pretrained:
            self.label = f"LPIPS-{net} architecture with random weights{variant} (not LPIPS)"
        else:
            verified = "" if self.weights_verified else ", backbone file not the known conversion"
            self.label = f"LPIPS-{net} v0.1 (Zhang et al. 2018){variant}{verified}"

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Tensor[B]``: the distance of each pair of images ``[B, 3, H, W]`` in [-1, 1]. Grayscale images
        ``[B, 1, H, W]`` are compared as gray RGB images (the channel repeated three times)."""
        if x.ndim == 4 and x.shape[1] == 1 and y.shape == x.shape:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        check_pair(x, y, channels=3)
        dtype = self.model.scaling_layer.shift.dtype
        x, y = x.to(dtype), y.to(dtype)
        if self.resize is not None:
            x, y = (F.interpolate(t, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
                    for t in (x, y))
        return self.model(x, y).reshape(-1)
