"""DistributedDataParallel under mpiexec -n 2: identical weights on every rank, equal to one
process training on the whole batches (the oracle, computed here in this process)."""

import numpy as np
import pytest

import fastgrad
from fastgrad import models


def single_process_weights(workers):
    fastgrad.set_num_threads(1)
    fastgrad.manual_seed(100)  # rank 0's initial weights in the workers
    net = models.lenet5()
    x, y = workers.lenet_data()
    workers.train_lenet(net, x, y, lambda batch: batch)
    return workers.flat_weights(net)


def check(proc):
    assert proc.returncode == 0, f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("bucket_mb", ["25", "0.05"])
def test_lenet_10_steps_equal_on_every_rank_and_to_one_process(mpirun, workers, bucket_mb):
    check(mpirun("equality", env={"BUCKET_MB": bucket_mb}))
    saved = np.load(mpirun.out / "weights.npz")
    rank0, rank1 = saved["arr_0"], saved["arr_1"]
    assert rank0.tobytes() == rank1.tobytes(), "the ranks' weights differ"
    reference = single_process_weights(workers)
    fastgrad.manual_seed(100)
    start = workers.flat_weights(models.lenet5())
    assert np.abs(reference - start).max() > 1e-3  # the run moved the weights: the comparison means something
    np.testing.assert_allclose(rank0, reference, rtol=1e-5, atol=1e-7)
    # 25 MB holds all of LeNet in one bucket; 0.05 MB (52,428 bytes) splits it, from the output
    # back: [fc3, fc2, fc1.bias] 44,536 bytes, [fc1.weight] 192,000 (larger than the cap: alone),
    # [conv2, conv1] 41,496; the first two start while backward runs through the convolutions
    assert int(saved["buckets"]) == (1 if bucket_mb == "25" else 3)
    assert list(saved["keys"][:2]) == ["module.0.weight", "module.0.bias"]


def test_no_sync_accumulates_locally_then_averages(mpirun, workers):
    check(mpirun("no_sync"))
    d = np.load(mpirun.out / "no_sync.npz")
    assert d["w0"].tobytes() == d["w1"].tobytes()
    # under no_sync each rank kept its own gradient (different data, so different gradients)
    assert np.abs(d["g0"] - d["g1"]).max() > 1e-6
    # oracle: one process, the same two half-batch micro-steps per update on the whole batch
    fastgrad.set_num_threads(1)
    fastgrad.manual_seed(100)
    net = models.lenet5()
    opt = fastgrad.optim.SGD(net.parameters(), lr=workers.LR)
    x, y = workers.lenet_data(4 * workers.GLOBAL_BATCH)
    loss_fn = fastgrad.nn.CrossEntropyLoss()
    for k in range(4):
        xb, yb = x[k * 64 : (k + 1) * 64], y[k * 64 : (k + 1) * 64]
        opt.zero_grad()
        for r in range(2):  # rank r's samples, as two halves; the loss averaged over ranks
            xs, ys = xb[r::2], yb[r::2]
            for part in (slice(0, 16), slice(16, 32)):
                (loss_fn(net(fastgrad.tensor(xs[part])), fastgrad.tensor(ys[part])) * 0.25).backward()
        opt.step()
    np.testing.assert_allclose(d["w0"], workers.flat_weights(net), rtol=1e-5, atol=1e-7)


def test_models_that_differ_are_named_at_construction(mpirun):
    check(mpirun("mismatch"))
    messages = [(mpirun.out / f"mismatch-{r}.txt").read_text() for r in range(2)]
    assert messages[0] == messages[1]  # every rank raises, with the same message: nobody hangs
    assert "'11.weight'" in messages[0] and "(10, 84)" in messages[0] and "(9, 84)" in messages[0]
    assert "rank 1" in messages[0]


def test_batchnorm_statistics_are_per_process_from_rank_0s(mpirun, workers):
    check(mpirun("buffers"))
    d = np.load(mpirun.out / "buffers.npz")
    for rank in range(2):
        got = d[f"arr_{rank}"]
        np.testing.assert_array_equal(got[:3], 0.0)  # rank 0's running mean, copied at construction
        # oracle: rank 0's buffers (running_var 7.0), then this rank's own batch, in one process
        net = workers.bn_model()
        net[1].running_var.data[...] = 7.0
        net(fastgrad.tensor(workers.bn_data(rank)))
        np.testing.assert_allclose(got[3:6], net[1].running_mean.data, rtol=1e-6)
        np.testing.assert_allclose(got[6:], net[1].running_var.data, rtol=1e-6)
    assert np.abs(d["arr_0"][3:] - d["arr_1"][3:]).max() > 1e-3  # and they differ: no SyncBatchNorm


WORLD_OF_ONE = """
import numpy as np, pytest, fastgrad
from fastgrad import distributed as dist, models, nn, optim
fastgrad.set_num_threads(1)
dist.init_process_group()
def train(wrap):
    fastgrad.manual_seed(4)
    net = models.lenet5()
    model = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.01) if wrap else net
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = fastgrad.tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
        y = fastgrad.tensor(rng.integers(0, 10, 8))
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        opt.step()
    return np.concatenate([p.data.reshape(-1) for p in net.parameters()]), model
plain, _ = train(False)
wrapped, ddp = train(True)
assert plain.tobytes() == wrapped.tobytes(), "DDP over one process changed the numbers"
assert len(ddp._buckets) > 3
for bad, match in [(dict(bucket_cap_mb=0), "bucket_cap_mb"), (dict(device_ids=[0]), "device_ids"),
                   (dict(find_unused_parameters=True), "find_unused_parameters")]:
    with pytest.raises((ValueError, NotImplementedError), match=match):
        nn.parallel.DistributedDataParallel(models.lenet5(), **bad)
with pytest.raises(TypeError, match="Module"):
    nn.parallel.DistributedDataParallel(lambda x: x)
# a parameter left out of the loss: the next forward names it
net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
ddp = nn.parallel.DistributedDataParallel(net)
net[0](fastgrad.randn(4, 3)).sum().backward()  # not through ddp: no reduction armed, no error
ddp(fastgrad.randn(4, 3))
net[0](fastgrad.randn(4, 3)).sum().backward()  # armed, but only layer 0 takes part
with pytest.raises(RuntimeError, match="1.weight, 1.bias"):
    ddp(fastgrad.randn(4, 3))
print("ok")
"""


def test_ddp_over_a_world_of_one_changes_nothing_and_checks_its_arguments():
    import os
    import subprocess
    import sys

    pytest.importorskip("mpi4py")
    from fastgrad.distributed import process_group

    env = {k: v for k, v in os.environ.items() if k not in process_group.LAUNCHER_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", WORLD_OF_ONE], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
