"""DistributedSampler: PyTorch's index layout, and the global batches of one process."""

import numpy as np
import pytest

from fastgrad.data import DataLoader, TensorDataset
from fastgrad.data.distributed import DistributedSampler


def dataset(n):
    return TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1))


@pytest.mark.parametrize(
    "n, world, drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (2, 3, False), (7, 1, False), (9, 2, True)]
)
def test_unshuffled_layout_matches_pytorch(n, world, drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    for rank in range(world):
        want = list(TorchSampler(list(range(n)), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last))
        sampler = DistributedSampler(dataset(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last)
        assert list(sampler) == want
        assert len(sampler) == len(want)
    del torch


def test_layout_by_hand():
    # 10 indices over 3 ranks: padded with the first two to 12; rank r takes r, r + 3, ...
    got = [list(DistributedSampler(dataset(10), 3, r, shuffle=False)) for r in range(3)]
    assert got == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    got = [list(DistributedSampler(dataset(10), 3, r, shuffle=False, drop_last=True)) for r in range(3)]
    assert got == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_shuffled_ranks_together_are_the_single_process_batches():
    n, world, per_rank = 96, 4, 6
    loader = DataLoader(dataset(n), batch_size=per_rank * world, shuffle=True, seed=11)
    for epoch in (0, 3):
        shares = []
        for rank in range(world):
            s = DistributedSampler(dataset(n), world, rank, shuffle=True, seed=11)
            s.set_epoch(epoch)
            shares.append(s.indices())
        for k, batch in enumerate(loader.batch_indices(epoch)):
            together = np.concatenate([sh[k * per_rank : (k + 1) * per_rank] for sh in shares])
            assert sorted(together.tolist()) == sorted(batch.tolist())
    a = DistributedSampler(dataset(n), world, 0, seed=11)
    b = DistributedSampler(dataset(n), world, 0, seed=11)
    b.set_epoch(1)
    assert a.indices().tolist() != b.indices().tolist()  # each epoch its own order


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank should be in the interval"):
        DistributedSampler(dataset(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(dataset(4), num_replicas=0, rank=0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(dataset(4))


def test_sampler_is_importable_where_pytorch_has_it():
    import fastgrad
    from fastgrad.utils.data.distributed import DistributedSampler as ported

    assert ported is fastgrad.data.distributed.DistributedSampler
    assert list(ported(list(range(10)), num_replicas=3, rank=1, shuffle=False)) == [1, 4, 7, 0]


def test_dataloader_takes_a_distributed_sampler_as_pytorch_scripts_pass_it():
    import numpy as np
    import pytest

    import fastgrad
    from fastgrad.utils.data import DataLoader, TensorDataset
    from fastgrad.utils.data.distributed import DistributedSampler

    data = TensorDataset(fastgrad.arange(10).reshape(10, 1).float(), fastgrad.arange(10))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(data, batch_size=2, sampler=sampler)
    assert len(loader) == 3
    assert [b[1].numpy().tolist() for b in loader] == [[1, 3], [5, 7], [9]]
    shuffled = DistributedSampler(data, num_replicas=2, rank=0, seed=3)
    shuffled.set_epoch(1)
    got = np.concatenate([b[1].numpy() for b in DataLoader(data, batch_size=4, sampler=shuffled)])
    assert got.tolist() == list(shuffled)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(data, sampler=sampler, shuffle=True)
