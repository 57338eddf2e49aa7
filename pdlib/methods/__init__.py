"""Methods: a loss and a sampler around networks (see ``shared/API.md`` and ``methods.base``).

``methods.score`` holds noise-conditional score matching and annealed Langevin dynamics (chapter 1).
"""

from .autoencoder import AutoEncoderTraining
from .base import Method
from .casdm import CasDM
from .ddgan import DDGAN, LDDGAN, weighted_learning_weight
from .ddpm import DDPM
from .dual import DualDiffusion
from .gan import GAN
from .latent import FlowMatching, LatentDiffusion
from .selfperceptual import SelfPerceptual

__all__ = ["AutoEncoderTraining", "CasDM", "DDGAN", "DDPM", "DualDiffusion", "FlowMatching", "GAN", "LDDGAN",
           "LatentDiffusion", "Method", "SelfPerceptual", "weighted_learning_weight"]
