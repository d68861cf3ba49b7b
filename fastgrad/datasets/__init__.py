"""Datasets: the MNIST sample shipped with fastgrad (8,000 training and 2,000 held-out
images of the MNIST test set, CC BY-SA 3.0, see data/README.md) and readers for the
IDX files of MNIST and Fashion-MNIST."""

from .idx import IDXError, read_idx, write_idx
from .mnist import (
    MNIST_MEAN,
    MNIST_STD,
    N_HELDOUT,
    N_TRAIN,
    SPLIT_SEED,
    load_bundled_mnist,
    load_mnist,
    normalize,
    split_indices,
)

__all__ = [
    "IDXError",
    "MNIST_MEAN",
    "MNIST_STD",
    "N_HELDOUT",
    "N_TRAIN",
    "SPLIT_SEED",
    "load_bundled_mnist",
    "load_mnist",
    "normalize",
    "read_idx",
    "split_indices",
    "write_idx",
]
