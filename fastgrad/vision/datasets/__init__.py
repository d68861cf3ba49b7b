"""Datasets with torchvision's names and arguments (``root, train, transform,
target_transform, download``), read from files placed under ``root``: fastgrad never
downloads (``download=True`` with the files missing raises an error that names them)."""

from .cifar import CIFAR10
from .mnist import BUNDLED_ROOT, MNIST, FashionMNIST
from .vision import VisionDataset

__all__ = ["BUNDLED_ROOT", "CIFAR10", "FashionMNIST", "MNIST", "VisionDataset"]
