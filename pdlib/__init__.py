"""pdlib: tested reference implementations for the book *Perceptual Diffusion*.

Each public function names the paper and equation it implements and the book chapter that teaches it.
"""

__version__ = "0.1.0"

from .errors import (CheckpointError, ConfigMismatchError, DatasetUnavailableError, NonFiniteLossError,  # noqa: E402
                     PdlibError, TrainingPreempted, WeightsUnavailableError)
from . import data, diffusion, exercises, guidance, methods, metrics, nets, perceptual, schedules, train, viz  # noqa: E402
from .diffusion import GaussianDiffusion  # noqa: E402

__all__ = [
    "CheckpointError", "ConfigMismatchError", "DatasetUnavailableError", "GaussianDiffusion", "NonFiniteLossError",
    "PdlibError", "TrainingPreempted", "WeightsUnavailableError",
    "data", "diffusion", "exercises", "guidance", "methods", "metrics", "nets", "perceptual", "schedules", "train",
    "viz",
]
