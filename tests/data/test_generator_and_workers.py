"""fastgrad.Generator for seeded splits and shuffles; fastgrad.utils.data as torch.utils.data;
DataLoader worker processes (same batches as the main process), pin_memory."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastgrad
from fastgrad.data import workers
from fastgrad.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset, get_worker_info, random_split

needs_fork = pytest.mark.skipif(not workers.fork_available(), reason="worker processes need fork")


def test_utils_data_is_there_after_import_fastgrad(tmp_path):
    # a fresh interpreter: only `import fastgrad`, then torch.utils.data's path
    code = (
        "import fastgrad as torch; "
        "print(torch.utils.data.DataLoader is torch.data.DataLoader, torch.utils.data.random_split.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "fastgrad.data.dataset"]


def test_generator_seeds_like_torch():
    g = fastgrad.Generator()
    assert g.initial_seed() == 67280421310721 and g.device == fastgrad.device("cpu")
    assert g.manual_seed(42) is g and g.initial_seed() == 42
    state = g.get_state()
    a = g.permutation(10)
    g.set_state(state)
    np.testing.assert_array_equal(g.permutation(10), a)
    with pytest.raises(TypeError):
        g.manual_seed(1.5)
    with pytest.raises(RuntimeError, match="CPU only"):
        fastgrad.Generator(device="cuda")
    torch = pytest.importorskip("torch")
    assert torch.Generator().initial_seed() == fastgrad.Generator().initial_seed()


def test_random_split_with_a_generator_is_reproducible_and_a_partition():
    ds = TensorDataset(np.arange(20))
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=fastgrad.Generator().manual_seed(42))
    again = random_split(ds, [0.5, 0.3, 0.2], generator=fastgrad.Generator().manual_seed(42))
    other = random_split(ds, [0.5, 0.3, 0.2], generator=fastgrad.Generator().manual_seed(43))
    assert [len(p) for p in parts] == [10, 6, 4]
    assert all(isinstance(p, Subset) for p in parts)
    ids = [list(p.indices) for p in parts]
    assert ids == [list(p.indices) for p in again] and ids != [list(p.indices) for p in other]
    assert sorted(i for part in ids for i in part) == list(range(20))
    assert [int(parts[1][k][0]) for k in range(len(parts[1]))] == ids[1]
    with pytest.raises(ValueError):
        random_split(ds, [5, 5], generator=fastgrad.Generator())
    with pytest.raises(TypeError):
        random_split(ds, [10, 10], generator=42)


def test_unseeded_split_follows_manual_seed():
    ds = TensorDataset(np.arange(12))
    fastgrad.manual_seed(5)
    a = [list(p.indices) for p in random_split(ds, [6, 6])]
    fastgrad.manual_seed(5)
    assert [list(p.indices) for p in random_split(ds, [6, 6])] == a


def test_dataloader_shuffle_with_a_generator():
    ds = TensorDataset(np.arange(10))

    def order(seed):
        loader = DataLoader(ds, batch_size=3, shuffle=True, generator=fastgrad.Generator().manual_seed(seed))
        return [int(v) for b in loader for v in b[0].data]

    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == list(range(10))


@pytest.mark.parametrize(
    "n, lengths",
    [
        (10, [0.33, 0.33, 0.34]),
        (11, [0.5, 0.5]),
        (97, [0.1, 0.2, 0.3, 0.4]),
        (10, [3, 7]),
        (11, [0.7, 0.3]),
        (5, [0.1, 0.9]),
    ],
)
def test_random_split_lengths_match_torch(n, lengths):
    torch = pytest.importorskip("torch")
    want = [len(p) for p in torch.utils.data.random_split(range(n), lengths)]
    got = [len(p) for p in random_split(TensorDataset(np.arange(n)), lengths, generator=fastgrad.Generator())]
    assert got == want


def test_concat_and_subset():
    a, b = TensorDataset(np.arange(3)), TensorDataset(np.arange(10, 14))
    cat = ConcatDataset([a, b])
    assert len(cat) == 7 and [int(cat[i][0]) for i in range(7)] == [0, 1, 2, 10, 11, 12, 13]
    assert int(Subset(cat, [6, 0])[0][0]) == 13


class Squares(Dataset):
    """Per-sample dataset (no __getitems__) that records the process that made each sample."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyError(f"sample {i} is broken")
        info = get_worker_info()
        noise = float(fastgrad._config.rng().random())  # fastgrad's generator, seeded per worker
        return np.float32(i * i), os.getpid(), -1 if info is None else info.id, noise


@needs_fork
@pytest.mark.parametrize("num_workers", [1, 3])
def test_workers_yield_the_same_batches_in_order(num_workers):
    ds = Squares(23)
    fastgrad.manual_seed(0)
    ref = [b[0].data.tolist() for b in DataLoader(ds, batch_size=4, shuffle=True, seed=3)]
    loader = DataLoader(ds, batch_size=4, shuffle=True, seed=3, num_workers=num_workers, prefetch_factor=1)
    got = list(loader)
    assert [b[0].data.tolist() for b in got] == ref
    pids = {int(p) for b in got for p in b[1].data}
    assert os.getpid() not in pids and len(pids) == num_workers
    ids = sorted({int(w) for b in got for w in b[2].data})
    assert ids == list(range(num_workers))
    if num_workers > 1:  # each worker has its own seed: the random draws differ between workers
        first = {int(b[2].data[0]): float(b[3].data[0]) for b in got[:num_workers]}
        assert len(set(first.values())) == num_workers


@needs_fork
def test_worker_errors_come_back_with_their_type_and_traceback():
    loader = DataLoader(Squares(10, fail_at=6), batch_size=2, num_workers=2)
    with pytest.raises(KeyError, match=r"(?s)DataLoader worker process 1.*sample 6 is broken"):
        list(loader)


@needs_fork
def test_a_dying_worker_is_reported_not_waited_for():
    class Dies(Squares):
        def __getitem__(self, i):
            if i == 3:
                os._exit(7)
            return super().__getitem__(i)

    with pytest.raises(RuntimeError, match="exited unexpectedly with exit code 7"):
        list(DataLoader(Dies(8), batch_size=1, num_workers=1))


@needs_fork
def test_worker_init_fn_and_persistent_workers():
    seen = []
    loader = DataLoader(
        Squares(6), batch_size=2, num_workers=2, persistent_workers=True, worker_init_fn=lambda wid: seen.append(wid)
    )
    first = [b[1].data.tolist() for b in loader]
    second = [b[1].data.tolist() for b in loader]
    assert first == second  # the same processes serve the second epoch
    loader._shutdown_workers()
    assert seen == []  # worker_init_fn ran in the workers, not here


def test_argument_checks_and_pin_memory():
    ds = TensorDataset(np.arange(4))
    for kwargs in (
        {"num_workers": -1},
        {"prefetch_factor": 2},
        {"persistent_workers": True},
        {"num_workers": 1, "prefetch_factor": 0},
        {"timeout": -1},
    ):
        with pytest.raises(ValueError):
            DataLoader(ds, **kwargs)
    with pytest.warns(UserWarning, match="pin_memory"):
        loader = DataLoader(ds, batch_size=2, pin_memory=True)
    assert [b[0].data.tolist() for b in loader] == [[0, 1], [2, 3]]


def test_without_fork_the_loader_warns_and_loads_in_process(monkeypatch):
    monkeypatch.setattr(workers, "fork_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = DataLoader(Squares(5), batch_size=2, num_workers=2)
    assert any("main process" in str(w.message) for w in caught)
    batches = list(loader)
    assert loader.num_workers == 0 and {int(p) for b in batches for p in b[1].data} == {os.getpid()}
