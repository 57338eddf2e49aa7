"""Architectures only: networks know nothing about the method that trains them."""

from .autoencoder import AUTOENCODER_PRESETS, AutoEncoder, PatchDiscriminator
from .embedding import timestep_embedding
from .fixres import PRESETS as FIXRES_PRESETS
from .fixres import FixResCNN
from .gan import (DISCRIMINATOR_PRESETS, GENERATOR_PRESETS, Discriminator, Generator, MLPDiscriminator2D,
                  MLPGenerator2D, ToyDiscriminator, ToyGenerator)
from .mlp import MLP2D
from .unet import PRESETS as UNET_PRESETS
from .unet import UNet

__all__ = ["AUTOENCODER_PRESETS", "AutoEncoder", "DISCRIMINATOR_PRESETS", "Discriminator", "FIXRES_PRESETS",
           "FixResCNN", "GENERATOR_PRESETS", "Generator", "MLP2D", "MLPDiscriminator2D", "MLPGenerator2D",
           "PatchDiscriminator", "ToyDiscriminator", "ToyGenerator", "UNET_PRESETS", "UNet", "timestep_embedding"]
