"""DataLoader: every sample once per epoch, reproducible order from a seed, batching."""

import numpy as np
import pytest

import fastgrad
from fastgrad.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset, random_split


def _epoch_ids(loader):
    return [batch[1].numpy().tolist() for batch in loader]


def _data(n):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return TensorDataset(x, np.arange(n))


@pytest.mark.parametrize(
    "n,batch,drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (12, 4, True), (5, 8, False), (1, 1, False)]
)
def test_every_sample_once_per_epoch(n, batch, drop_last):
    loader = DataLoader(_data(n), batch_size=batch, shuffle=True, drop_last=drop_last, seed=7)
    for _ in range(3):
        batches = _epoch_ids(loader)
        seen = [i for b in batches for i in b]
        assert len(batches) == len(loader)
        assert all(len(b) == batch for b in batches[:-1])
        if drop_last:
            assert len(seen) == n - n % batch and len(set(seen)) == len(seen)
            assert all(len(b) == batch for b in batches)
        else:
            assert sorted(seen) == list(range(n))


def test_dropped_samples_change_between_epochs():
    loader = DataLoader(_data(10), batch_size=3, shuffle=True, drop_last=True, seed=1)
    dropped = [set(range(10)) - {i for b in _epoch_ids(loader) for i in b} for _ in range(6)]
    assert len({frozenset(d) for d in dropped}) > 1  # shuffling decides which sample is left out


def test_same_seed_same_order_and_epochs_differ():
    a = DataLoader(_data(50), batch_size=8, shuffle=True, seed=3)
    b = DataLoader(_data(50), batch_size=8, shuffle=True, seed=3)
    first_a, first_b = _epoch_ids(a), _epoch_ids(b)
    assert first_a == first_b
    assert _epoch_ids(a) != first_a  # the next epoch has a new order
    c = DataLoader(_data(50), batch_size=8, shuffle=True, seed=4)
    assert _epoch_ids(c) != first_a


def test_order_depends_only_on_seed_and_epoch():
    a = DataLoader(_data(40), batch_size=5, shuffle=True, seed=11)
    for _ in range(3):
        list(a)
    b = DataLoader(_data(40), batch_size=5, shuffle=True, seed=11)
    b.set_epoch(3)
    assert _epoch_ids(a) == _epoch_ids(b)  # resuming at epoch 3 sees epoch 3's batches
    assert a.order(0).tolist() == np.random.default_rng([11, 0]).permutation(40).tolist()


def test_generator_and_global_seed_are_reproducible():
    orders = [
        _epoch_ids(DataLoader(_data(30), batch_size=4, shuffle=True, generator=np.random.default_rng(5)))
        for _ in range(2)
    ]
    assert orders[0] == orders[1]
    fastgrad.manual_seed(9)
    first = _epoch_ids(DataLoader(_data(30), batch_size=4, shuffle=True))
    fastgrad.manual_seed(9)
    assert _epoch_ids(DataLoader(_data(30), batch_size=4, shuffle=True)) == first


def test_unshuffled_order_and_batch_contents():
    ds = _data(7)
    batches = list(DataLoader(ds, batch_size=3))
    assert [len(b[0]) for b in batches] == [3, 3, 1]
    x, y = batches[1]
    assert isinstance(x, fastgrad.Tensor) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x.numpy(), ds.tensors[0][3:6])
    np.testing.assert_array_equal(y.numpy(), [3, 4, 5])


class _Squares(Dataset):
    """A map-style dataset without __getitems__: batches are collated sample by sample."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full((2,), float(i), dtype=np.float32), i * i


def test_generic_dataset_is_collated():
    x, y = next(iter(DataLoader(_Squares(), batch_size=4)))
    assert x.shape == (4, 2) and x.dtype == np.float32
    assert y.numpy().tolist() == [0, 1, 4, 9] and y.dtype == np.int64


def test_subset_concat_random_split():
    ds = _data(10)
    parts = random_split(ds, [7, 3], seed=0)
    ids = sorted(int(parts[k][i][1]) for k in range(2) for i in range(len(parts[k])))
    assert ids == list(range(10))
    assert [len(p) for p in random_split(ds, [0.5, 0.5], seed=0)] == [5, 5]
    x, y = next(iter(DataLoader(Subset(ds, [9, 0, 4]), batch_size=3)))
    assert y.numpy().tolist() == [9, 0, 4]
    both = ConcatDataset([Subset(ds, [1, 2]), _Squares()])
    assert len(both) == 7 and both[2][1] == 0 and both[1][1] == 2
    with pytest.raises(ValueError, match="lengths"):
        random_split(ds, [4, 4])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(_data(3), batch_size=0)
    with pytest.raises(ValueError, match="seed or generator"):
        DataLoader(_data(3), seed=1, generator=np.random.default_rng())
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(np.zeros((3, 2)), np.zeros(4))
