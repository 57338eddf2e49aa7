"""Data sets: toy 2D point clouds, one-disc images, scikit-learn digits, CIFAR-10, CelebA, image folders."""

from .images import celeba, cifar10, digits, image_folder
from .shapes import shapes, shapes_validity
from .toy2d import TOY2D, num_classes, toy2d

__all__ = ["TOY2D", "celeba", "cifar10", "digits", "image_folder", "num_classes",
           "shapes", "shapes_validity", "toy2d"]
