"""fastgrad.vision.datasets: MNIST (the bundled sample and IDX folders), FashionMNIST and
CIFAR10 (binary and python batches) with torchvision's arguments; missing, truncated and
hostile files give errors that name them."""

import os
import pickle
import shutil

import numpy as np
import pytest

import fastgrad
from fastgrad.datasets import load_bundled_mnist, write_idx
from fastgrad.datasets.idx import IDXError
from fastgrad.serialization import UnsafePickleError
from fastgrad.vision import datasets, transforms

MNIST_NORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


@pytest.mark.parametrize("train", [True, False])
def test_bundled_mnist_is_the_fixed_split(train):
    ds = datasets.MNIST(datasets.BUNDLED_ROOT, train=train, download=True)
    (x_tr, y_tr), (x_te, y_te) = load_bundled_mnist(normalized=False)
    x, y = (x_tr, y_tr) if train else (x_te, y_te)
    assert len(ds) == len(y) == (8000 if train else 2000)
    np.testing.assert_array_equal(ds.data.data, x)
    np.testing.assert_array_equal(ds.targets.data, y)
    img, target = ds[5]
    assert img.dtype == np.uint8 and img.shape == (28, 28) and target == int(y[5]) and type(target) is int


def test_bundled_mnist_through_the_transforms_matches_the_normalized_sample():
    ds = datasets.MNIST(datasets.BUNDLED_ROOT, train=False, transform=MNIST_NORM, target_transform=lambda t: t + 100)
    (_, _), (x_te, y_te) = load_bundled_mnist()
    img, target = ds[11]
    assert isinstance(img, fastgrad.Tensor) and img.shape == (1, 28, 28) and img.dtype == np.float32
    np.testing.assert_allclose(img.data, x_te[11], atol=1e-5)
    assert target == int(y_te[11]) + 100


def test_a_copy_of_the_bundled_folder_splits_the_same(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(datasets.BUNDLED_ROOT, name), tmp_path / name)
    ds = datasets.MNIST(tmp_path, train=False)
    np.testing.assert_array_equal(ds.targets.data, load_bundled_mnist(normalized=False)[1][1])


def _idx_folder(folder, n_train=12, n_test=5, seed=0, gz=False):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", y)
        arrays[stem] = (x, y)
    return arrays


@pytest.mark.parametrize("cls", [datasets.MNIST, datasets.FashionMNIST])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_in_torchvisions_layout(tmp_path, cls, gz):
    arrays = _idx_folder(tmp_path / cls.__name__ / "raw", gz=gz)
    for train, stem in ((True, "train"), (False, "t10k")):
        ds = cls(tmp_path, train=train)
        np.testing.assert_array_equal(ds.data.data, arrays[stem][0])
        assert ds.targets.data.tolist() == arrays[stem][1].tolist()
    assert len(cls.classes) == 10 and cls(tmp_path).class_to_idx[cls.classes[3]] == 3


def test_missing_files_name_the_file_and_the_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.MNIST(tmp_path, train=True)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match="does not download"):
        datasets.FashionMNIST(tmp_path, train=False, download=True)
    _idx_folder(tmp_path / "MNIST" / "raw")
    os.remove(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*MNIST.raw"):
        datasets.MNIST(tmp_path, train=False)


def test_a_truncated_file_names_itself(tmp_path):
    _idx_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IDXError, match=str(path)):
        datasets.MNIST(tmp_path, train=True)


def test_the_bundled_split_is_only_for_the_bundled_file(tmp_path):
    _idx_folder(tmp_path, n_train=0)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        os.remove(tmp_path / name)
    assert len(datasets.MNIST(tmp_path, train=False)) == 5  # a test set of its own: all of it
    with pytest.raises(FileNotFoundError, match="train-images"):
        datasets.MNIST(tmp_path, train=True)


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


def write_cifar_bin(folder, n_per_batch=3):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x, y = _cifar_arrays(n_per_batch, k)
        records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(n_per_batch, -1)], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
        out[name] = (x.transpose(0, 2, 3, 1), y)
    return out


def write_cifar_py(folder, n_per_batch=3, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x, y = _cifar_arrays(n_per_batch, 10 + k)
        batch = {
            b"batch_label": b"batch",
            b"labels": [int(v) for v in y],
            b"data": x.reshape(n_per_batch, -1),
            b"filenames": [b"f%d.png" % i for i in range(n_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[name] = (x.transpose(0, 2, 3, 1), y)
    return out


@pytest.mark.parametrize("kind", ["bin", "py2", "py4"])
def test_cifar10_both_distributions(tmp_path, kind):
    if kind == "bin":
        arrays = write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    else:
        arrays = write_cifar_py(tmp_path / "cifar-10-batches-py", protocol=int(kind[-1]))
    train = datasets.CIFAR10(tmp_path, train=True, download=True)
    test = datasets.CIFAR10(tmp_path, train=False, transform=transforms.ToTensor())
    want = np.concatenate([arrays[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train.data, want)
    assert train.targets == [int(v) for i in range(1, 6) for v in arrays[f"data_batch_{i}"][1]]
    img, target = test[2]
    assert img.shape == (3, 32, 32)
    np.testing.assert_allclose(img.data, arrays["test_batch"][0][2].transpose(2, 0, 1) / 255, atol=1e-6)
    assert target == int(arrays["test_batch"][1][2]) and len(test) == 3


def test_cifar10_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.bin.*cifar-10-batches-bin"):
        datasets.CIFAR10(tmp_path)
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar_bin(folder)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*not a whole number"):
        datasets.CIFAR10(tmp_path)
    os.remove(folder / "test_batch.bin")
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        datasets.CIFAR10(tmp_path, train=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


_EVIL = pickle.dumps({b"data": _Evil(), b"labels": [1]}, protocol=2)
_OBJECT_ARRAY = pickle.dumps({b"data": np.array([1, "a"], dtype=object), b"labels": [1]}, protocol=2)


@pytest.mark.parametrize("payload, match", [(_EVIL, r"global (posix|os)\.system"), (_OBJECT_ARRAY, "dtype")])
def test_cifar10_python_batches_refuse_anything_but_arrays_lists_and_dicts(tmp_path, monkeypatch, payload, match):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder)
    (folder / "test_batch").write_bytes(payload)
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("os.system was called"))
    with pytest.raises(UnsafePickleError, match=match):
        datasets.CIFAR10(tmp_path, train=False)
