"""Datasets: anything with ``__len__`` and ``__getitem__`` returning one sample, as in
``torch.utils.data``. ``TensorDataset`` holds whole arrays and also answers
``__getitems__`` (a list of indices at once), which lets the DataLoader build a batch
with one fancy-indexing call per array instead of one Python call per sample."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .. import _config
from ..tensor import Tensor
from .generator import numpy_rng


def as_array(data: Any, name: str = "data") -> np.ndarray:
    """A numpy array from a Tensor, an array or nested lists (no copy when possible)."""
    if isinstance(data, Tensor):
        return data.data
    arr = np.asarray(data)
    if arr.dtype == object:
        raise TypeError(f"{name}: cannot make an array of Python objects (got {type(data).__name__})")
    return arr


class Dataset:
    """Base class: subclasses define ``__getitem__(i)`` and ``__len__()``."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Samples are the i-th rows of each given array or Tensor (all of the same length):
    ``TensorDataset(images, labels)[i] == (images[i], labels[i])`` as numpy arrays."""

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset: give at least one array")
        arrays = tuple(as_array(t, "TensorDataset") for t in tensors)
        for a in arrays:
            if a.ndim == 0:
                raise ValueError("TensorDataset: arrays need a first (sample) dimension; got a 0-d array")
        lengths = {a.shape[0] for a in arrays}
        if len(lengths) != 1:
            raise ValueError(
                "TensorDataset: arrays differ in their first dimension: " + ", ".join(str(a.shape) for a in arrays)
            )
        self.tensors = arrays

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(a[index] for a in self.tensors)

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> tuple[Any, ...]:
        return tuple(a[indices] for a in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(dataset)
        if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset: indices out of range for a dataset of {n} samples")

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> Any:
        inner = self.indices[np.asarray(indices, dtype=np.int64)]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(inner)
        return collate([self.dataset[int(i)] for i in inner])

    def __len__(self) -> int:
        return int(self.indices.size)


class ConcatDataset(Dataset):
    """The samples of several datasets, one after the other."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"ConcatDataset: index {index} out of range for {n} samples")
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[k][index - int(self.offsets[k])]

    def __len__(self) -> int:
        return int(self.offsets[-1])


def random_split(
    dataset: Dataset,
    lengths: Sequence[int | float],
    seed: int | None = None,
    generator: np.random.Generator | None = None,
) -> list[Subset]:
    """Split ``dataset`` into non-overlapping Subsets of the given lengths (counts, or
    fractions that sum to 1), from a random permutation drawn with ``generator`` (a
    ``fastgrad.Generator`` or a numpy Generator), or ``numpy.random.default_rng(seed)``,
    or fastgrad's global generator when neither is given (as PyTorch's default)."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1) < 1e-6:
        counts = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):  # hand out the remainder round-robin, as PyTorch does
            counts[i % len(counts)] += 1
        lengths = counts
    if any(not isinstance(x, numbers.Integral) or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(
            f"random_split: lengths {lengths} must be non-negative integers summing to "
            f"the dataset size {n} (or fractions summing to 1)"
        )
    if seed is not None and generator is not None:
        raise ValueError("random_split: give seed or generator, not both")
    rng = np.random.default_rng(seed) if seed is not None else numpy_rng(generator, _config.rng)
    perm = rng.permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, perm[start : start + length]))
        start += length
    return out


def collate(samples: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch: tuples position by position, arrays and
    numbers along a new first axis (floats become float32, ints int64)."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(collate([s[i] for s in samples]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, Tensor):
        return np.stack([s.data for s in samples])
    if isinstance(first, np.ndarray):
        return np.stack(samples)
    if isinstance(first, (bool, np.bool_)):
        return np.array(samples, dtype=np.bool_)
    if isinstance(first, numbers.Integral):
        return np.array(samples, dtype=np.int64)
    if isinstance(first, numbers.Real):
        return np.array(samples, dtype=np.float32)
    raise TypeError(f"collate: cannot batch samples of type {type(first).__name__}")
