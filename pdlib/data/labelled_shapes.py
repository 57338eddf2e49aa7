"""A class-conditional variant of the one-disc images: each image's label is its disc's colour family, the
largest of its three colour channels (0 red, 1 green, 2 blue). It gives the shapes set something to
condition on, so a model trained with label dropout can be sampled with classifier-free guidance and set
beside the self-perceptual objective (Lin & Yang 2024, section 4: SP keeps the layout that a model draws
from a given noise, guidance changes it).

The set is written to disk as one PNG sub-folder per class, the layout ``pdlib.data.images.image_folder``
reads (``data.name: folder`` with ``train.dataset_labels: true``), so conditional runs go through the same
command line as any folder of images.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import _validate
from .shapes import shapes

CLASSES = ("red", "green", "blue")
#: Sub-folder names: ``ImageFolder`` numbers classes in sorted folder order, so the index leads.
FOLDERS = tuple(f"{i}-{name}" for i, name in enumerate(CLASSES))


def colour_classes(images: torch.Tensor) -> torch.Tensor:
    """The colour family of each image ``[B, 3, H, W]`` in ``[-1, 1]``: the channel whose brightest pixel is
    largest (on the black background that is the disc's largest channel). Returns ``[B]`` labels."""
    _validate.tensor("images", images, ndim=4)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels, got shape {tuple(images.shape)}")
    return images.amax((2, 3)).argmax(1)


def write_shapes_folder(root, n: int, size: int = 16, seed: int = 0) -> Path:
    """Write ``shapes(n, size)`` (generator seeded ``seed``) to ``root/<i>-<colour>/<index>.png`` with the class
    of ``colour_classes``; ``root/dataset.json`` records what was written, with a SHA-256 of the images. An
    existing folder with the same record is kept; anything else there is an error (nothing is overwritten),
    including a folder written from another version of ``shapes`` (the images' digest differs). The set is
    written into a fresh folder beside ``root`` and renamed when complete, so an interrupted call leaves no
    partial set and two processes writing the same set at once do not disturb each other."""
    from PIL import Image

    _validate.positive_int("n", n)
    root = Path(root)
    images = shapes(n, size, generator=torch.Generator().manual_seed(seed))
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    record = {"n": n, "size": size, "seed": seed, "folders": list(FOLDERS),
              "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    if _check_existing(root, record):
        return root
    labels = colour_classes(images)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.partial-"))
    try:
        for name in FOLDERS:
            (tmp / name).mkdir()
        for i, (image, label) in enumerate(zip(pixels, labels.tolist())):
            Image.fromarray(np.ascontiguousarray(image)).save(tmp / FOLDERS[label] / f"{i:06d}.png")
        (tmp / "dataset.json").write_text(json.dumps(record))
        try:
            tmp.rename(root)
        except OSError:  # another process finished first: keep its folder if it holds the same set
            if not _check_existing(root, record):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_existing(root: Path, record: dict) -> bool:
    """True when ``root`` already holds the set ``record`` describes; False when there is no ``root``;
    ``FileExistsError`` when ``root`` holds something else."""
    marker = root / "dataset.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != record:
            raise FileExistsError(f"{root} holds another shapes set or one written by another version of pdlib "
                                  f"({marker.read_text().strip()[:200]}); remove it or choose another folder")
        return True
    if root.exists():
        raise FileExistsError(f"{root} exists but holds no {marker.name}; remove it or choose another folder")
    return False


__all__ = ["CLASSES", "FOLDERS", "colour_classes", "write_shapes_folder"]
