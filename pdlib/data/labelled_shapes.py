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

import json
import shutil
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
    of ``colour_classes``; ``root/dataset.json`` records what was written. An existing folder with the
    same record is kept; anything else there is an error (nothing is overwritten). The folder appears at
    once when complete (written beside it, then renamed), so an interrupted call leaves no partial set."""
    from PIL import Image

    _validate.positive_int("n", n)
    root = Path(root)
    record = {"n": n, "size": size, "seed": seed, "folders": list(FOLDERS)}
    marker = root / "dataset.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != record:
            raise FileExistsError(f"{root} holds another shapes set ({marker.read_text().strip()}); remove it or "
                                  f"choose another folder")
        return root
    if root.exists():
        raise FileExistsError(f"{root} exists but holds no {marker.name}; remove it or choose another folder")
    images = shapes(n, size, generator=torch.Generator().manual_seed(seed))
    labels = colour_classes(images)
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for name in FOLDERS:
        (tmp / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(pixels, labels.tolist())):
        Image.fromarray(np.ascontiguousarray(image)).save(tmp / FOLDERS[label] / f"{i:06d}.png")
    (tmp / marker.name).write_text(json.dumps(record))
    tmp.rename(root)
    return root


__all__ = ["CLASSES", "FOLDERS", "colour_classes", "write_shapes_folder"]
