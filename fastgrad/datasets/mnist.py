"""MNIST: the 10,000-image test set bundled with fastgrad, split into 8,000 training
and 2,000 held-out images, and ``load_mnist(folder)`` for the MNIST or Fashion-MNIST
files a user has.

The bundled split is fixed: ``numpy.random.default_rng(SPLIT_SEED).permutation(10000)``,
the first 8,000 indices for training and the last 2,000 held out. It is a random
permutation rather than a cut at an index because the first 5,000 images of the file
come from a cleaner source than the last 5,000. The class counts it gives are pinned
by tests/datasets/test_mnist.py (so a change anywhere would be caught):
training 783 903 828 800 787 709 773 828 787 802, held out 197 232 204 210 195 183 185 200 187 207.

Images come back as float32 arrays of shape (N, 1, 28, 28), normalized as usual for
MNIST: ``(x / 255 - 0.1307) / 0.3081``; labels as int64.

The data files are distributed under CC BY-SA 3.0; see data/README.md beside them.
"""

import functools
import hashlib
import os

import numpy as np

from .idx import IDXError, read_idx

SPLIT_SEED = 1998  # the year the MNIST paper (LeCun et al.) appeared
N_TRAIN, N_HELDOUT = 8000, 2000
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BUNDLED_IMAGES = "t10k-images-idx3-ubyte.gz"
BUNDLED_LABELS = "t10k-labels-idx1-ubyte.gz"


def normalize(images, mean=MNIST_MEAN, std=MNIST_STD):
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28), scaled to [0, 1] then standardized."""
    x = images.astype(np.float32)
    x /= np.float32(255)
    x -= np.float32(mean)
    x /= np.float32(std)
    return x.reshape(images.shape[0], 1, *images.shape[1:])


def _check_pair(images, labels, where):
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{where}: expected uint8 images of shape (N, rows, cols), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IDXError(f"{where}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise IDXError(f"{where}: labels must be 0..9, found {int(labels.max())}")


def _verify_bundled():
    """Compare the shipped files with SHA256SUMS: a damaged install fails loudly here."""
    sums = {}
    with open(os.path.join(DATA_DIR, "SHA256SUMS")) as f:
        for line in f:
            if line.strip():
                digest, name = line.split()
                sums[name] = digest
    for name in (BUNDLED_IMAGES, BUNDLED_LABELS):
        with open(os.path.join(DATA_DIR, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != sums.get(name):
            raise IDXError(
                f"bundled MNIST file {name} is damaged (SHA-256 {digest[:16]}... does not "
                f"match SHA256SUMS); reinstall fastgrad"
            )


@functools.lru_cache(maxsize=1)
def _bundled_raw():
    _verify_bundled()
    images = read_idx(os.path.join(DATA_DIR, BUNDLED_IMAGES))
    labels = read_idx(os.path.join(DATA_DIR, BUNDLED_LABELS))
    _check_pair(images, labels, "bundled MNIST")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def split_indices():
    """(train_indices, heldout_indices) of the bundled 10,000 images: the fixed split."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(N_TRAIN + N_HELDOUT)
    return perm[:N_TRAIN], perm[N_TRAIN:]


def load_bundled_mnist(normalized=True):
    """``(x_train, y_train), (x_heldout, y_heldout)`` from the bundled sample:
    8,000 and 2,000 images (float32 (N, 1, 28, 28), normalized unless ``normalized``
    is False, which gives the raw uint8 (N, 28, 28)) and int64 labels."""
    images, labels = _bundled_raw()
    out = []
    for idx in split_indices():
        x = images[idx]
        out.append((normalize(x) if normalized else x, labels[idx].astype(np.int64)))
    return tuple(out)


_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_mnist(folder=None, normalized=True, mean=MNIST_MEAN, std=MNIST_STD, max_bytes=None):
    """``(x_train, y_train), (x_test, y_test)`` from the IDX files in ``folder``
    (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte, each optionally .gz: the MNIST and Fashion-MNIST layout).
    Without ``folder``, the bundled sample (``load_bundled_mnist``).

    Images are float32 (N, 1, rows, cols) standardized with ``mean`` and ``std`` (MNIST's
    by default; Fashion-MNIST's are about 0.2860 and 0.3530), or raw uint8 (N, rows, cols)
    with ``normalized=False``; labels int64.
    """
    if folder is None:
        return load_bundled_mnist(normalized)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"load_mnist: {folder} is not a folder")
    paths = {}
    for split, stems in _SPLITS.items():
        for stem in stems:
            path = _find(folder, stem)
            if path is None:
                raise FileNotFoundError(
                    f"load_mnist: {folder} has no {stem} (or {stem}.gz); expected the "
                    "four MNIST / Fashion-MNIST files: " + ", ".join(s for p in _SPLITS.values() for s in p)
                )
            paths[stem] = path
    kwargs = {} if max_bytes is None else {"max_bytes": max_bytes}
    out = []
    for split, (img_stem, lbl_stem) in _SPLITS.items():
        images = read_idx(paths[img_stem], **kwargs)
        labels = read_idx(paths[lbl_stem], **kwargs)
        _check_pair(images, labels, f"{folder} ({split})")
        x = normalize(images, mean, std) if normalized else images
        out.append((x, labels.astype(np.int64)))
    return tuple(out)
