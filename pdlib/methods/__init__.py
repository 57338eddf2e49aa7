"""Methods: a loss and a sampler around networks (see ``shared/API.md``)."""

from .ddpm import DDPM

__all__ = ["DDPM"]
