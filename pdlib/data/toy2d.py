"""Toy 2D data sets: the playground of the first chapters.

Each set is scaled to roughly unit standard deviation per coordinate, so the same noise schedules work
for all of them. All sampling is vectorised and takes an optional ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch

from .. import _validate

TOY2D = ("swissroll", "moons", "8gaussians", "checkerboard", "circles")


def _uniform(n, generator, *size):
    return torch.rand((n, *size), generator=generator, dtype=torch.float64).squeeze(-1)


def _normal(n, generator, *size):
    return torch.randn((n, *size), generator=generator, dtype=torch.float64)


def _swissroll(n, g):
    angle = 1.5 * math.pi * (1 + 2 * _uniform(n, g, 1))
    x = torch.stack([angle * torch.cos(angle), angle * torch.sin(angle)], 1)
    return (x + 0.4 * _normal(n, g, 2)) / 7.5, torch.zeros(n, dtype=torch.long)


def _moons(n, g):
    label = (_uniform(n, g, 1) < 0.5).long()
    angle = math.pi * _uniform(n, g, 1)
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    x = torch.where(label[:, None] == 0, upper, lower) + 0.06 * _normal(n, g, 2)
    return (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 0.85, label


def _eight_gaussians(n, g):
    label = torch.randint(0, 8, (n,), generator=g)
    angle = label.double() * (math.pi / 4)
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return (centres * 2 + 0.1 * _normal(n, g, 2)) / 1.414, label


def _checkerboard(n, g):
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + (col % 2)
    cell = torch.stack([col, row], 1).double()
    x = cell + _uniform(n, g, 2) - 2
    return x / 1.15, (row >= 2).long()


def _circles(n, g):
    label = (_uniform(n, g, 1) < 0.5).long()
    radius = torch.where(label == 0, 1.0, 0.5).double()
    angle = 2 * math.pi * _uniform(n, g, 1)
    x = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1) + 0.05 * _normal(n, g, 2)
    return x / 0.79, label


_MAKERS = {"swissroll": _swissroll, "moons": _moons, "8gaussians": _eight_gaussians,
           "checkerboard": _checkerboard, "circles": _circles}


def toy2d(name: str, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False):
    """``n`` points ``[n, 2]`` (float32) from the toy set ``name``.

    With ``return_labels=True`` also returns a LongTensor ``[n]`` of class labels (the moon, the
    mixture component, the ring, ...; all zeros for the swiss roll), used by the guidance chapter.
    """
    _validate.choice("name", name, TOY2D)
    _validate.positive_int("n", n)
    x, label = _MAKERS[name](n, generator)
    x = x.float()
    return (x, label) if return_labels else x


def num_classes(name: str) -> int:
    """Number of distinct labels ``toy2d(name, ..., return_labels=True)`` returns."""
    _validate.choice("name", name, TOY2D)
    return {"swissroll": 1, "moons": 2, "8gaussians": 8, "checkerboard": 2, "circles": 2}[name]
