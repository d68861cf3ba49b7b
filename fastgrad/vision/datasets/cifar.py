"""CIFAR-10, as ``torchvision.datasets.CIFAR10``, from either distribution of its files:

* the binary batches, ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``:
  records of one label byte and 3,072 pixel bytes (the red, green and blue 32x32 planes);
* the python batches, ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch`` (the ones
  torchvision reads): pickled dicts, loaded through ``fastgrad.serialization``'s restricted
  unpickler, which rebuilds numeric numpy arrays, lists and dicts and refuses anything else.

Each folder is looked for in ``root``, and the batch files in ``root`` itself. A file whose
size is not a whole number of records, or whose contents do not match, raises an error
naming it. Samples are ``(image, target)``: a uint8 (32, 32, 3) array (where torchvision
has a PIL image) and an int. ``data`` is the uint8 (N, 32, 32, 3) array and ``targets`` a
list of ints, as in torchvision.
"""

import os

import numpy as np

from ...serialization import numpy_pickle, restricted
from .vision import VisionDataset, missing_files_error

_RECORD = 1 + 3 * 32 * 32
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]
_MAX_FILE_BYTES = 1 << 30


class CIFAR10(VisionDataset):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        super().__init__(root, transform, target_transform)
        self.train = bool(train)
        stems = _TRAIN if self.train else _TEST
        images, labels = [], []
        for path, kind in self._locate(stems, download):
            x, y = _read_binary(path) if kind == "bin" else _read_python(path)
            images.append(x)
            labels.append(y)
        self.data = np.concatenate(images)
        self.targets = [int(v) for v in np.concatenate(labels)]

    def _locate(self, stems, download):
        candidates = [
            (os.path.join(self.root, "cifar-10-batches-bin"), "bin"),
            (os.path.join(self.root, "cifar-10-batches-py"), "py"),
            (self.root, "bin"),
            (self.root, "py"),
        ]
        for folder, kind in candidates:
            names = [s + ".bin" if kind == "bin" else s for s in stems]
            found = [os.path.isfile(os.path.join(folder, n)) for n in names]
            if all(found):
                return [(os.path.join(folder, n), kind) for n in names]
            if any(found):
                missing = [n for n, ok in zip(names, found) if not ok]
                raise missing_files_error("CIFAR10", missing, [folder], download)
        raise missing_files_error(
            "CIFAR10",
            [s + ".bin" for s in stems] + ["(or the python batches " + ", ".join(stems) + " in cifar-10-batches-py)"],
            [candidates[0][0], candidates[1][0], self.root],
            download,
        )

    def __getitem__(self, index):
        return self.apply(self.data[index], self.targets[index])

    def __len__(self):
        return int(self.data.shape[0])

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}

    def extra_repr(self):
        return f"Split: {'Train' if self.train else 'Test'}"


def _check_labels(labels, path):
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{path}: CIFAR-10 labels are 0..9, found {int(labels.max())}")


def _read_binary(path):
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) from one binary batch file."""
    size = os.path.getsize(path)
    if size == 0 or size % _RECORD or size > _MAX_FILE_BYTES:
        raise ValueError(
            f"{path}: {size:,} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records "
            "(truncated or not a CIFAR-10 binary batch)"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, _RECORD)
    labels = raw[:, 0].astype(np.int64)
    _check_labels(labels, path)
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def _read_python(path):
    """(images, labels) from one python batch file, through the restricted unpickler."""
    size = os.path.getsize(path)
    if size > _MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size:,} bytes is too large for a CIFAR-10 python batch")
    with open(path, "rb") as f:
        raw = f.read()
    obj = restricted.load(raw, numpy_pickle.STAND_INS, path, encoding="bytes")
    restricted.check_tree(obj, numpy_pickle.accept, path)
    obj = numpy_pickle.unwrap(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, found a {type(obj).__name__}")
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data = entries.get("data")
    labels = entries.get("labels", entries.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _RECORD - 1:
        raise ValueError(
            f"{path}: 'data' should be a uint8 array of shape (N, {_RECORD - 1}), found "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    labels = np.asarray(labels if isinstance(labels, (list, np.ndarray)) else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    _check_labels(labels, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels
