"""Architectures only: networks know nothing about the method that trains them."""

from .embedding import timestep_embedding
from .mlp import MLP2D

__all__ = ["MLP2D", "timestep_embedding"]
