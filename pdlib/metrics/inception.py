"""The Inception-v3 network behind FID, sFID and the Inception Score.

Published FID numbers (Heusel et al. 2017) come from the TensorFlow graph ``inception-2015-12-05``
(Szegedy et al. 2016, "Rethinking the Inception Architecture"), not from torchvision's ImageNet
Inception. pytorch-fid ported that graph to PyTorch; :class:`FIDInceptionV3` rebuilds the same network
with parameter names equal to those of the ported weights file ``pt_inception-2015-12-05-6726825d.pth``,
so that file loads into it unchanged. The port differs from torchvision's Inception-v3 in three places:

- average pooling inside the A, C and E blocks ignores the zero padding (TensorFlow's ``SAME`` pooling);
- the last block (``Mixed_7c``) pools its fourth branch with a *max* pool;
- the classifier has 1008 outputs (the class count of the TF graph), not 1000.

Outputs used by the metrics (book chapter "Evaluating generative models"):

- ``"pool3"``: the 2048-d global average pool, the FID feature (TF tensor ``pool_3:0``);
- ``"spatial"``: the sFID feature of Nash et al. 2021, "Generating images with sparse representations",
  as computed by guided-diffusion's evaluator: the first 7 channels of TF tensor ``mixed_6/conv:0``,
  flattened in TF's channels-last order, 7 * 17 * 17 = 2023 values. The TF graph names its mixed blocks
  ``mixed, mixed_1, ..., mixed_10``: three 35x35 blocks (``Mixed_5b-d`` here), the reduction ``mixed_3``
  (``Mixed_6a``), four 17x17 blocks ``mixed_4-7`` (``Mixed_6b-e``), the reduction ``mixed_8`` and two
  8x8 blocks. So ``mixed_6`` is ``Mixed_6d``, and ``mixed_6/conv`` is its 1x1 branch
  (``Mixed_6d.branch1x1``, after batch norm and ReLU), the first 192 channels of the block output;
- ``"logits_unbiased"``: ``pool3 @ fc.weight.T`` over the 1008 classes, *without* the bias, which is what
  the Inception Score code of Salimans et al. 2016 (and guided-diffusion, torch-fidelity) feeds to softmax.

Resizing: inputs are resized to 299x299 with ``F.interpolate(mode="bilinear", align_corners=False)``,
exactly as pytorch-fid does. The TensorFlow graph resizes with TF1's legacy bilinear kernel, which
differs slightly, so pdlib's numbers match pytorch-fid's to float precision and the TF reference
implementations only up to that small resizing difference.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from ..errors import WeightsUnavailableError
from ..train.checkpoint import file_sha256

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
# SHA-256 of pytorch-fid's weights file (95,628,359 bytes); its first 8 digits are the name's suffix,
# following torch.hub's naming convention. Only this file gives numbers comparable with published ones.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
SPATIAL_CHANNELS = 7  # guided-diffusion's evaluator keeps mixed_6/conv[..., :7]


class _Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TF graph) and ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    """3x3 average pool, stride 1, whose border averages leave out the padding (TF ``SAME``)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x):
    return F.max_pool2d(x, 3, stride=1, padding=1)


class _BlockA(nn.Module):
    """35x35 block (Szegedy et al. 2016, Figure 5): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1 = _Conv(cin, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class _ReductionB(nn.Module):
    """35x35 -> 17x17 grid reduction: strided 3x3, strided double 3x3 and a strided max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    """17x17 block (Figure 6): 7x7 convolutions factorised into 1x7 and 7x1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, **row)
        self.branch7x7_3 = _Conv(c7, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **col)
        self.branch7x7dbl_3 = _Conv(c7, c7, **row)
        self.branch7x7dbl_4 = _Conv(c7, c7, **col)
        self.branch7x7dbl_5 = _Conv(c7, 192, **row)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class _ReductionD(nn.Module):
    """17x17 -> 8x8 grid reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _Conv(cin, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    """8x8 block (Figure 7): 3x3 convolutions split into parallel 1x3 and 3x1 outputs.

    ``pool`` is the fourth branch's pooling: TF-style average in ``Mixed_7b``, max in ``Mixed_7c``."""

    def __init__(self, cin: int, pool):
        super().__init__()
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.pool = pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, **row)
        self.branch3x3_2b = _Conv(384, 384, **col)
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, **row)
        self.branch3x3dbl_3b = _Conv(384, 384, **col)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], 1)


def check_images(images) -> torch.Tensor:
    """Raise unless ``images`` is a float tensor [B, C, H, W] with values in [-1, 1] (1e-4 slack)."""
    _validate.tensor("images", images, ndim=4)
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [-1, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < -1 - 1e-4 or images.max() > 1 + 1e-4):
        raise ValueError(f"images must lie in [-1, 1] (got values in [{images.min():.3g}, "
                         f"{images.max():.3g}]); map [0, 1] images with 2 * x - 1, or clamp(-1, 1)")
    return images


class FIDInceptionV3(nn.Module):
    """The TF ``inception-2015-12-05`` Inception-v3 used for FID (Heusel et al. 2017), in pytorch-fid's
    parameter naming. Build it with :func:`load_fid_inception`; constructed directly it has random weights.

    ``forward(images)`` takes ``[B, 3, H, W]`` (or ``[B, 1, H, W]``, repeated to 3 channels) images in
    [-1, 1], resizes them to 299x299 (bilinear, see the module docstring) and returns a dict with
    ``"pool3"`` ``[B, 2048]``, ``"spatial"`` ``[B, 2023]`` and ``"logits_unbiased"`` ``[B, 1008]``.

    Attributes ``name`` (a description of the weights) and ``comparable_to_published`` (True only when
    the weights are pytorch-fid's file, checked by its SHA-256) label every number computed with it;
    ``weights_sha256`` is the SHA-256 of the file the weights were loaded from (None until loaded), which
    identifies the network in caches of feature statistics.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b = _BlockE(1280, pool=_tf_avg_pool)
        self.Mixed_7c = _BlockE(2048, pool=_max_pool)
        self.fc = nn.Linear(2048, 1008)
        self.name = "FID Inception-v3 architecture with random (unloaded) weights"
        self.comparable_to_published = False
        self.weights_sha256 = None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_images(images)
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1).to(self.fc.weight.dtype)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        x = self.Mixed_6d(x)
        # The block output starts with branch1x1, so its first channels are mixed_6/conv's first channels.
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        for block in (self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool3 = x.mean((2, 3))
        return {"pool3": pool3, "spatial": spatial, "logits_unbiased": pool3 @ self.fc.weight.T}


def default_weights_path() -> Path:
    """Where the weights file is looked for: ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub``),
    the same place pytorch-fid downloads it to."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def load_fid_inception(weights_path=None, *, download: bool = False, device=None) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` with the ported TF weights, in eval mode and without gradients.

    The weights come from ``weights_path`` if given, else from :func:`default_weights_path`. When the file
    is not there, ``pdlib.WeightsUnavailableError`` is raised at once, naming the file, the path and the
    URL; nothing is downloaded unless ``download=True`` (then it is saved at that path and its SHA-256
    prefix is checked). The file is read with ``torch.load(weights_only=True)``. Weights whose SHA-256 is not
    pytorch-fid's load too (same parameter names and shapes) but the network is labelled
    ``comparable_to_published = False`` and a warning says so.
    """
    path = Path(os.path.expanduser(weights_path)) if weights_path is not None else default_weights_path()
    if not path.is_file():
        if download:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), hash_prefix=FID_WEIGHTS_SHA256[:8])
        else:
            raise WeightsUnavailableError(
                f"The FID Inception weights {FID_WEIGHTS_FILE} are not at {path}. Download them "
                f"(about 96 MB) from {FID_WEIGHTS_URL} and either save them as {default_weights_path()} "
                f"(e.g. `mkdir -p {default_weights_path().parent} && curl -L -o {default_weights_path()} "
                f"{FID_WEIGHTS_URL}`) or pass weights_path=...; or call "
                "pdlib.metrics.inception.load_fid_inception(download=True) once on a machine with internet.")
    net = FIDInceptionV3()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.weights_sha256 = file_sha256(path)
    net.comparable_to_published = net.weights_sha256 == FID_WEIGHTS_SHA256
    if net.comparable_to_published:
        net.name = f"FID Inception-v3 ({FID_WEIGHTS_FILE})"
    else:
        net.name = f"FID Inception-v3 architecture with other weights ({path.name}, not pytorch-fid's file)"
        warnings.warn(f"{path} is not pytorch-fid's {FID_WEIGHTS_FILE} (SHA-256 differs); numbers computed "
                      "with it are labelled as not comparable with published FID/IS", stacklevel=2)
    net.requires_grad_(False)
    return net.eval().to(device if device is not None else "cpu")
