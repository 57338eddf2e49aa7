"""Training: the step-based trainer, EMA and safe checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .distributed import is_main_process
from .trainer import TrainConfig, Trainer, resolve_device, train

__all__ = ["EMA", "is_main_process", "TrainConfig", "Trainer", "load_checkpoint", "resolve_device", "save_checkpoint", "train"]
