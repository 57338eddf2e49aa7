"""Evaluation metrics."""

from .toy import mmd, sliced_wasserstein

__all__ = ["mmd", "sliced_wasserstein"]
