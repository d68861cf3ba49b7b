"""MNIST and Fashion-MNIST from their IDX files, as ``torchvision.datasets.MNIST`` and
``FashionMNIST``.

The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are looked for in
``root/<ClassName>/raw`` (torchvision's layout), then in ``root`` itself.

The MNIST sample bundled with fastgrad holds only the 10,000 ``t10k`` images. Given its
folder, ``BUNDLED_ROOT``, as ``root`` (or a folder holding a copy of its two files and no
training files), ``MNIST(train=True)`` is its fixed 8,000-image training part and
``train=False`` the 2,000 held out: the split of ``fastgrad.datasets.load_bundled_mnist``.

Samples are ``(image, target)``: a uint8 (28, 28) array (where torchvision has a PIL image)
and an int, each passed through ``transform`` / ``target_transform``. ``data`` (uint8
(N, 28, 28)) and ``targets`` (int64 (N,)) are Tensors, as in torchvision.
"""

import hashlib
import os

import numpy as np

from ...datasets import mnist as bundled
from ...datasets.idx import IDXError, read_idx
from ...tensor import Tensor
from .vision import VisionDataset, missing_files_error

BUNDLED_ROOT = bundled.DATA_DIR

_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _bundled_digest():
    with open(os.path.join(bundled.DATA_DIR, "SHA256SUMS")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] == bundled.BUNDLED_IMAGES:
                return parts[0]
    return None


def _is_bundled_sample(images_path):
    if os.path.basename(images_path) != bundled.BUNDLED_IMAGES:
        return False
    with open(images_path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == _bundled_digest()


class MNIST(VisionDataset):
    classes = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ]

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(root, transform, target_transform)
        self.train = bool(train)
        images, labels = self._load(download)
        self.data = Tensor._from_op(images, None)
        self.targets = Tensor._from_op(labels.astype(np.int64), None)

    @property
    def raw_folder(self):
        return os.path.join(self.root, type(self).__name__, "raw")

    def _load(self, download):
        folders = [self.raw_folder, self.root]
        name = type(self).__name__
        for folder in folders:
            test = [_find(folder, stem) for stem in _STEMS[False]]
            train = [_find(folder, stem) for stem in _STEMS[True]]
            if type(self) is MNIST and all(test) and not any(train) and _is_bundled_sample(test[0]):
                return self._bundled_split(test)
            paths = train if self.train else test
            if all(paths):
                images, labels = (read_idx(p) for p in paths)
                bundled._check_pair(images, labels, folder)
                return images, labels
            if any(paths):  # half a pair: name the missing file in this folder
                missing = [stem for stem, p in zip(_STEMS[self.train], paths) if p is None]
                raise missing_files_error(name, missing, [folder], download)
        raise missing_files_error(name, list(_STEMS[self.train]), folders, download)

    def _bundled_split(self, paths):
        images, labels = (read_idx(p) for p in paths)
        bundled._check_pair(images, labels, os.path.dirname(paths[0]))
        if images.shape[0] != bundled.N_TRAIN + bundled.N_HELDOUT:
            raise IDXError(
                f"{paths[0]}: the bundled sample should hold {bundled.N_TRAIN + bundled.N_HELDOUT} "
                f"images, found {images.shape[0]}"
            )
        train_idx, heldout_idx = bundled.split_indices()
        idx = train_idx if self.train else heldout_idx
        return images[idx], labels[idx]

    def __getitem__(self, index):
        return self.apply(self.data.data[index], int(self.targets.data[index]))

    def __len__(self):
        return int(self.data.shape[0])

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}

    def extra_repr(self):
        return f"Split: {'Train' if self.train else 'Test'}"


class FashionMNIST(MNIST):
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
