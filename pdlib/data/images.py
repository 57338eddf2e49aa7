"""Image data sets: scikit-learn's digits, CIFAR-10, CelebA 64x64 and any folder of images.

Every loader yields float images ``[C, H, W]`` in ``[-1, 1]`` (a pixel byte ``v`` becomes
``v / 127.5 - 1``, so 0 -> -1 and 255 -> 1 exactly), the convention of DDPM (Ho et al. 2020,
section 3.3: integers 0..255 "scaled linearly to [-1, 1]"). Data sets that live on disk are never
downloaded unless the call says ``download=True``; when their files are missing the loader raises
:class:`pdlib.DatasetUnavailableError` at once, with the steps that fetch them (also in
``data/README.md``).

``torchvision`` and ``scikit-learn`` are optional dependencies (``pip install 'pdlib[images]'``),
imported only when a loader needs them.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import _validate
from ..errors import DatasetUnavailableError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_ZIP_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
CELEBA_FILES = ("list_eval_partition.txt", "identity_CelebA.txt", "list_bbox_celeba.txt",
                "list_landmarks_align_celeba.txt", "list_attr_celeba.txt")
CELEBA_CROPS = ("center140", "ddim")


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{name} is needed for the image data sets: pip install 'pdlib[images]'") from err


def _to_signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels ``[C, H, W]`` -> float in ``[-1, 1]`` (0 -> -1, 255 -> 1 exactly)."""
    return pixels.float() / 127.5 - 1


def _transform(size: int | None = None, *, crop=None, flip: bool = False):
    """PIL image -> tensor in [-1, 1]: optional ``crop``, resize + centre crop to ``size``, flip."""
    T = _import("torchvision.transforms")
    steps = [] if crop is None else [crop]
    if size is not None:
        steps += [T.Resize(size), T.CenterCrop(size)]  # bilinear with antialiasing (PIL)
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.PILToTensor(), _to_signed])


DIGITS_SPLITS = ("all", "train", "test")
DIGITS_TEST_FRACTION = 0.3


def digits(size: int = 16, split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits: ``(images [N, 1, size, size], labels [N])``.

    The 8x8 images (UCI "Optical Recognition of Handwritten Digits"; grey levels 0..16) ship with
    scikit-learn, so nothing is downloaded. Levels map linearly to ``[-1, 1]`` (0 -> -1, 16 -> 1);
    ``size != 8`` resamples bilinearly (``align_corners=False``, antialiased when shrinking).
    Labels are the digits 0..9 (LongTensor). ``split`` is ``"all"`` (1797 images), or a fixed held-out
    split: ``"test"`` is 30 % of the images (539) chosen by a seeded permutation, ``"train"`` the other
    1258; the same on every machine, so generative models train on ``"train"`` and are judged against
    ``"test"`` (``pdlib.metrics.digits``).
    """
    _validate.positive_int("size", size)
    _validate.choice("split", split, DIGITS_SPLITS)
    bunch = _import("sklearn.datasets").load_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 8 - 1
    labels = torch.from_numpy(bunch.target).long()
    if split != "all":
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        n_test = round(DIGITS_TEST_FRACTION * len(labels))
        keep = order[:n_test] if split == "test" else order[n_test:]
        images, labels = images[keep], labels[keep]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=size < 8).clamp(-1, 1)
    return images, labels


def _cifar10_steps(root: Path) -> str:
    return (
        f"To get CIFAR-10 (python version, 163 MB):\n"
        f"  - let pdlib download it: pdlib.data.images.cifar10({str(root)!r}, download=True)\n"
        f"  - or by hand: download {CIFAR10_URL} (md5 {CIFAR10_MD5}, check with `md5sum`), then\n"
        f"    `mkdir -p {root} && tar -xzf cifar-10-python.tar.gz -C {root}`, so that\n"
        f"    {root / CIFAR10_FOLDER / 'data_batch_1'} exists.\n"
        f"See data/README.md."
    )


def cifar10(root, train: bool = True, *, download: bool = False, flip: bool = False) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): ``torchvision.datasets.CIFAR10`` yielding ``(image, label)``.

    ``image`` is ``[3, 32, 32]`` in ``[-1, 1]``, ``label`` an int 0..9. ``root`` is the folder that
    holds ``cifar-10-batches-py/`` (the official archive extracted); ``train`` picks the 50,000
    training or the 10,000 test images. ``flip=True`` adds a random horizontal flip, the only
    augmentation of DDPM's CIFAR-10 runs (Ho et al. 2020, appendix B); it draws from torch's global
    RNG, which ``DataLoader`` seeds per worker. Nothing is downloaded unless ``download=True``.
    torchvision checks every file's md5 when loading.

    Raises :class:`pdlib.DatasetUnavailableError` at once when files are missing or corrupt.
    """
    root = Path(root)
    missing = [name for name in CIFAR10_FILES if not (root / CIFAR10_FOLDER / name).is_file()]
    if missing and not download:
        raise DatasetUnavailableError(
            f"CIFAR-10 is not at {root / CIFAR10_FOLDER} (missing {', '.join(missing)}).\n" + _cifar10_steps(root))
    datasets = _import("torchvision.datasets")
    try:
        return datasets.CIFAR10(str(root), train=train, transform=_transform(flip=flip), download=download)
    except (OSError, RuntimeError) as err:  # download failure, or files that fail their md5 check
        raise DatasetUnavailableError(
            f"CIFAR-10 at {root / CIFAR10_FOLDER} could not be loaded ({err}): a download failed, or a file "
            f"fails its md5 check. Delete the folder and fetch it again.\n" + _cifar10_steps(root)) from err


def _celeba_steps(root: Path) -> str:
    folder = root / "celeba"
    return (
        f"To get CelebA (aligned and cropped faces, img_align_celeba.zip, 1.4 GB):\n"
        f"  - let pdlib download it from Google Drive: pdlib.data.images.celeba({str(root)!r}, download=True)\n"
        f"    (needs `pip install gdown`; Google Drive often refuses with a quota error, 'Too many users have\n"
        f"    viewed or downloaded this file recently': retry later, or fetch the files by hand)\n"
        f"  - or by hand, from the Google Drive or Baidu links on {CELEBA_URL}:\n"
        f"    put Img/img_align_celeba.zip (md5 {CELEBA_ZIP_MD5}) and the text files\n"
        f"    {', '.join(CELEBA_FILES)} (from Anno/ and Eval/)\n"
        f"    in {folder}/, then `cd {folder} && unzip -q img_align_celeba.zip`,\n"
        f"    so that {folder / 'img_align_celeba' / '000001.jpg'} exists.\n"
        f"See data/README.md."
    )


def celeba(root, size: int = 64, split: str = "train", *, download: bool = False, flip: bool = False,
           crop: str = "center140") -> Dataset:
    """CelebA (Liu et al. 2015) faces: ``torchvision.datasets.CelebA`` yielding ``(image, attributes)``.

    ``image`` is ``[3, size, size]`` in ``[-1, 1]``; ``attributes`` the 40 binary attributes
    (LongTensor). The aligned 178x218 photos are cropped, then resized (bilinear, antialiased):

    - ``crop="center140"``: the central 140x140 square, as in the NCSN code (Song & Ermon 2020,
      ``ermongroup/ncsnv2``, ``datasets/__init__.py``: ``CenterCrop(140)`` then ``Resize(size)``), the
      usual "CelebA 64x64" of score-based and diffusion models;
    - ``crop="ddim"``: the 128x128 square centred on pixel (x=89, y=121), as in the DDIM code (Song et
      al. 2021, ``ermongroup/ddim``, ``datasets/__init__.py``).

    ``split`` is ``"train"`` (162,770 images), ``"valid"``, ``"test"`` or ``"all"``. ``flip`` as in
    :func:`cifar10`. Nothing is downloaded unless ``download=True``.

    Raises :class:`pdlib.DatasetUnavailableError` at once when files are missing.
    """
    _validate.positive_int("size", size)
    _validate.choice("split", split, ("train", "valid", "test", "all"))
    _validate.choice("crop", crop, CELEBA_CROPS)
    root = Path(root)
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    missing = [name for name in CELEBA_FILES if not (folder / name).is_file()]
    if not images.is_dir() or next(images.iterdir(), None) is None:
        missing.append("img_align_celeba/ (the unzipped images)")
    if missing and not download:
        raise DatasetUnavailableError(
            f"CelebA is not at {folder} (missing {', '.join(missing)}).\n" + _celeba_steps(root))
    T = _import("torchvision.transforms")
    if crop == "center140":
        crop_step = T.CenterCrop(140)
    else:
        crop_step = functools.partial(_import("torchvision.transforms.functional").crop,
                                      top=121 - 64, left=89 - 64, height=128, width=128)
    datasets = _import("torchvision.datasets")
    try:
        return datasets.CelebA(str(root), split=split, target_type="attr",
                               transform=_transform(size, crop=crop_step, flip=flip), download=download)
    except (OSError, RuntimeError) as err:  # download failure, or text files that fail their md5 check
        raise DatasetUnavailableError(
            f"CelebA at {folder} could not be loaded ({err}): a download failed, or an annotation file fails "
            f"its md5 check.\n" + _celeba_steps(root)) from err


class _FlatFolder(Dataset):
    """Images listed directly in one folder, each yielded as ``(image, 0)``."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        loader = _import("torchvision.datasets.folder").default_loader  # PIL, converted to RGB
        return self.transform(loader(str(self.files[index]))), 0


def image_folder(root, size: int, *, flip: bool = False) -> Dataset:
    """Any folder of images, yielding ``(image [3, size, size] in [-1, 1], label)``.

    Images directly in ``root`` (any of torchvision's image extensions: .png, .jpg, ...) form one
    class, label 0. Otherwise ``root`` is read as ``torchvision.datasets.ImageFolder``: one
    sub-folder per class, labels in sorted folder order. Each image is converted to RGB, resized so
    its shorter side is ``size`` (bilinear, antialiased) and centre-cropped to ``size x size``.
    ``flip`` as in :func:`cifar10`.

    Raises :class:`pdlib.DatasetUnavailableError` at once when the folder is missing or holds no
    image.
    """
    _validate.positive_int("size", size)
    root = Path(root)
    how = (f"Put image files (.png, .jpg, ...) directly in {root}/, or in one sub-folder per class "
           f"({root}/<class>/<image>).")
    if not root.is_dir():
        raise DatasetUnavailableError(f"No image folder at {root}. {how}")
    folder = _import("torchvision.datasets.folder")
    transform = _transform(size, flip=flip)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in folder.IMG_EXTENSIONS)
    if files:
        return _FlatFolder(files, transform)
    try:
        return folder.ImageFolder(str(root), transform=transform)
    except FileNotFoundError as err:  # no class folder, or a class folder without images
        raise DatasetUnavailableError(f"No images found in {root} ({err}). {how}") from err
