"""Typed errors raised by pdlib.

Bad arguments raise the built-in ``ValueError``/``TypeError`` (see ``shared/API.md``); the classes
here are for things outside the caller's arguments: files that are missing or unsafe.
"""


class PdlibError(Exception):
    """Base class of pdlib's own errors."""


class DatasetUnavailableError(PdlibError, FileNotFoundError):
    """A data set is not on disk and may not be downloaded; the message says how to get it."""


class WeightsUnavailableError(PdlibError, FileNotFoundError):
    """Pretrained weights are not on disk and may not be downloaded; the message names the file."""


class CheckpointError(PdlibError):
    """A checkpoint is missing, corrupt, or holds objects that would need unpickling arbitrary code."""


class NonFiniteLossError(PdlibError, FloatingPointError):
    """A loss term or gradient became NaN or infinite; the step was refused and nothing was updated."""


class TrainingPreempted(PdlibError):
    """Training stopped on SIGTERM (preemption) after writing a checkpoint at a step boundary."""


class ConfigMismatchError(PdlibError, ValueError):
    """A run was resumed with a config that differs from the one its checkpoint was written with."""
