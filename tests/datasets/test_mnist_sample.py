"""The bundled MNIST sample: the fixed split, its class counts, normalization, licence."""

import hashlib
import os

import numpy as np

from fastgrad.datasets import SPLIT_SEED, load_bundled_mnist, load_mnist, mnist, split_indices

# numpy.random.default_rng(1998).permutation(10000): first 8,000 train, last 2,000 held out.
TRAIN_COUNTS = [783, 903, 828, 800, 787, 709, 773, 828, 787, 802]
HELDOUT_COUNTS = [197, 232, 204, 210, 195, 183, 185, 200, 187, 207]
FILE_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_split_is_the_documented_permutation():
    assert SPLIT_SEED == 1998
    train, held = split_indices()
    assert len(train) == 8000 and len(held) == 2000
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(10000))
    np.testing.assert_array_equal(np.concatenate([train, held]), np.random.default_rng(1998).permutation(10000))
    # pins the exact index order, so a change in numpy's shuffling would be noticed here
    assert hashlib.sha256(held.astype("<i8").tobytes()).hexdigest()[:16] == _HELD_DIGEST


_HELD_DIGEST = "d2ba5c4564b3061c"  # SHA-256 of the held-out indices as little-endian int64


def test_class_counts_of_the_split():
    (x, y), (xv, yv) = load_bundled_mnist()
    assert np.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(yv, minlength=10).tolist() == HELDOUT_COUNTS
    assert (np.array(TRAIN_COUNTS) + HELDOUT_COUNTS).tolist() == FILE_COUNTS
    # both halves mix the cleaner first 5,000 images of the file with the last 5,000
    train_idx, held_idx = split_indices()
    assert 900 < np.count_nonzero(held_idx < 5000) < 1100


def test_images_labels_and_normalization():
    (x, y), (xv, yv) = load_mnist()
    assert x.shape == (8000, 1, 28, 28) and xv.shape == (2000, 1, 28, 28)
    assert x.dtype == np.float32 and y.dtype == np.int64
    (raw, raw_y), _ = load_bundled_mnist(normalized=False)
    assert raw.dtype == np.uint8 and raw.shape == (8000, 28, 28)
    np.testing.assert_array_equal(raw_y, y)
    np.testing.assert_allclose(x[:, 0], (raw / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    x[0, 0, 0, 0] = 123.0  # callers get their own arrays
    assert load_mnist()[0][0][0, 0, 0, 0] != 123.0


def test_data_ships_with_its_licence_and_checksums():
    files = set(os.listdir(mnist.DATA_DIR))
    assert {"README.md", "SHA256SUMS", mnist.BUNDLED_IMAGES, mnist.BUNDLED_LABELS} <= files
    readme = open(os.path.join(mnist.DATA_DIR, "README.md")).read()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    mnist._verify_bundled()
