"""IDX reader: round trips, and files whose header lies are refused before allocating."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from fastgrad.datasets import IDXError, load_mnist, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _write(path, data, gz=False):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_header_claiming_more_data_is_refused_before_allocating(tmp_path, gz):
    # 40,000 images of 100x100 (400 MB) claimed, 500 bytes present
    path = _write(tmp_path / "lie.idx", _header(0x08, [40000, 100, 100]) + bytes(500), gz)
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match="header claims shape"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # the 400 MB the header claims were never allocated


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_dimensions_are_refused(tmp_path, gz):
    path = _write(tmp_path / "huge.idx", _header(0x0E, [0xFFFFFFFF] * 4) + bytes(64), gz)
    with pytest.raises(IDXError, match="more than the limit"):
        read_idx(path)
    small = _write(tmp_path / "small.idx", _header(0x08, [10, 10]) + bytes(100), gz)
    with pytest.raises(IDXError, match="limit of 50 bytes"):
        read_idx(small, max_bytes=50)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + bytes(8), "not an IDX file"),
        (b"\x00\x00\x07\x01" + bytes(8), "unknown IDX type code"),
        (b"\x00\x00\x08\x00", "dimensions"),
        (b"\x00\x00\x08\x09" + bytes(36), "dimensions"),
        (b"\x00\x00\x08\x03" + bytes(6), "cut short"),
        (_header(0x08, [4]) + bytes(5), "header claims"),  # one byte too many
        (_header(0x08, [4]) + bytes(3), "header claims"),  # one byte short
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_files(tmp_path, data, match, gz):
    with pytest.raises(IDXError, match=match):
        read_idx(_write(tmp_path / "bad.idx", data, gz))


def test_truncated_and_corrupt_gzip(tmp_path):
    whole = gzip.compress(_header(0x08, [1000]) + bytes(range(256)) * 4)
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IDXError):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "junk.gz").write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(IDXError):
        read_idx(tmp_path / "junk.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz")


def _mnist_folder(folder, n_train=12, n_test=5, gz=True, labels_max=9):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", (np.arange(n_train) % (labels_max + 1)).astype(np.uint8))
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", (np.arange(n_test) % 10).astype(np.uint8))
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_folder(tmp_path, gz):
    (xt, yt), (xv, yv) = load_mnist(_mnist_folder(tmp_path, gz=gz))
    assert xt.shape == (12, 1, 28, 28) and xt.dtype == np.float32
    assert yt.dtype == np.int64 and yt.tolist() == [i % 10 for i in range(12)]
    assert xv.shape == (5, 1, 28, 28) and yv.shape == (5,)
    (raw, _), _ = load_mnist(tmp_path, normalized=False)
    assert raw.dtype == np.uint8 and raw.shape == (12, 28, 28)
    np.testing.assert_allclose(xt[:, 0], (raw / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)


def test_load_mnist_refuses_incomplete_or_inconsistent_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path)
    folder = _mnist_folder(tmp_path, labels_max=11)
    with pytest.raises(IDXError, match="labels must be 0..9"):
        load_mnist(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(IDXError, match="12 images but 7 labels"):
        load_mnist(folder)
