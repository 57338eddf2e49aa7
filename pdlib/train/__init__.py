"""Training: the step-based trainer, its plan (phases and optimisers), frozen networks, EMA and safe
checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import is_main_process
from .ema import EMA
from .frozen import Frozen, frozen_networks
from .plan import OptimizerSpec, Phase
from .trainer import TrainConfig, Trainer, resolve_device, train

__all__ = ["EMA", "Frozen", "OptimizerSpec", "Phase", "TrainConfig", "Trainer", "frozen_networks", "is_main_process",
           "load_checkpoint", "resolve_device", "save_checkpoint", "train"]
