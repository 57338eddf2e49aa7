"""Methods: a loss and a sampler around networks (see ``shared/API.md`` and ``methods.base``).

``methods.score`` holds noise-conditional score matching and annealed Langevin dynamics (chapter 1).
"""

from .base import Method
from .ddpm import DDPM

__all__ = ["DDPM", "Method"]
