"""Data sets: toy 2D point clouds (and, in later chapters, images)."""

from .toy2d import TOY2D, num_classes, toy2d

__all__ = ["TOY2D", "num_classes", "toy2d"]
