"""Small argument checks shared by the modules, so every error message has the same form."""

from __future__ import annotations

from typing import Iterable

import torch


def choice(name: str, value, options: Iterable) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {', '.join(map(repr, options))}")


def tensor(name: str, value, *, ndim: int | None = None, min_ndim: int | None = None) -> torch.Tensor:
    """Check that ``value`` is a tensor with the expected number of dimensions and return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(value.shape)}")
    return value


def positive_int(name: str, value) -> int:
    """Raise unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
