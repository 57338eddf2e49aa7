"""Architectures only: networks know nothing about the method that trains them."""

from .embedding import timestep_embedding
from .mlp import MLP2D
from .unet import PRESETS as UNET_PRESETS
from .unet import UNet

__all__ = ["MLP2D", "UNET_PRESETS", "UNet", "timestep_embedding"]
