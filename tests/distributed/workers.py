"""Programs the distributed tests run under ``mpiexec -n 2 python workers.py SCENARIO OUT``.

Each scenario is a function of the output folder; rank 0 writes what the test checks.
"""

import os
import sys

import numpy as np

import fastgrad
from fastgrad import distributed as dist
from fastgrad import models, nn, optim

STEPS, GLOBAL_BATCH, LR, MOMENTUM = 10, 64, 0.05, 0.9


def lenet_data(n=STEPS * GLOBAL_BATCH, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


def flat_weights(model):
    return np.concatenate([p.data.reshape(-1) for p in model.parameters()])


def train_lenet(model, x, y, shard, bucket_cap_mb=None):
    """STEPS SGD-momentum updates on consecutive global batches; ``shard(batch)`` is what this
    process takes of each."""
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    for k in range(STEPS):
        xb, yb = (
            shard(x[k * GLOBAL_BATCH : (k + 1) * GLOBAL_BATCH]),
            shard(y[k * GLOBAL_BATCH : (k + 1) * GLOBAL_BATCH]),
        )
        opt.zero_grad()
        loss_fn(model(fastgrad.tensor(xb)), fastgrad.tensor(yb)).backward()
        opt.step()


def scenario_equality(out):
    rank, world = dist.get_rank(), dist.get_world_size()
    fastgrad.manual_seed(100 + rank)  # different initial weights: DDP must copy rank 0's
    net = models.lenet5()
    ddp = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=float(os.environ.get("BUCKET_MB", "25")))
    x, y = lenet_data()
    train_lenet(ddp, x, y, lambda batch: batch[rank::world])
    mine = flat_weights(net)
    gathered = [fastgrad.zeros(mine.size) for _ in range(world)]
    dist.all_gather(gathered, fastgrad.tensor(mine))
    if rank == 0:
        np.savez(
            os.path.join(out, "weights.npz"),
            *[g.data for g in gathered],
            buckets=len(ddp._buckets),
            keys=np.array(list(ddp.state_dict())),
        )


def scenario_no_sync(out):
    """Two micro-batches per update, the first under no_sync: the same weights as without it."""
    rank, world = dist.get_rank(), dist.get_world_size()
    fastgrad.manual_seed(100)
    net = models.lenet5()
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    x, y = lenet_data(4 * GLOBAL_BATCH)
    for k in range(4):
        xb, yb = (
            x[k * GLOBAL_BATCH : (k + 1) * GLOBAL_BATCH][rank::world],
            y[k * GLOBAL_BATCH : (k + 1) * GLOBAL_BATCH][rank::world],
        )
        half = len(yb) // 2
        opt.zero_grad()
        with ddp.no_sync():
            (loss_fn(ddp(fastgrad.tensor(xb[:half])), fastgrad.tensor(yb[:half])) * 0.5).backward()
        local_after_no_sync = net[0].weight.grad.data.copy()
        (loss_fn(ddp(fastgrad.tensor(xb[half:])), fastgrad.tensor(yb[half:])) * 0.5).backward()
        opt.step()
    gathered = [fastgrad.zeros(local_after_no_sync.size) for _ in range(world)]
    dist.all_gather(gathered, fastgrad.tensor(local_after_no_sync.reshape(-1)))
    mine = flat_weights(net)
    weights = [fastgrad.zeros(mine.size) for _ in range(world)]
    dist.all_gather(weights, fastgrad.tensor(mine))
    if rank == 0:
        np.savez(
            os.path.join(out, "no_sync.npz"),
            w0=weights[0].data,
            w1=weights[1].data,
            g0=gathered[0].data,
            g1=gathered[1].data,
        )


def scenario_collectives(out):
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    t = fastgrad.tensor(np.arange(5, dtype=np.float64) * (rank + 1))
    dist.all_reduce(t)
    results["sum"] = t.data.copy()
    t = fastgrad.tensor(np.array([rank, -rank, 3], dtype=np.int64))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    results["max"] = t.data.copy()
    b = fastgrad.tensor(np.full(3, float(rank + 10), np.float32))
    work = dist.broadcast(b, src=1, async_op=True)
    work.wait()
    results["bcast"] = b.data.copy()
    lst = [fastgrad.zeros(2, 3) for _ in range(world)]
    dist.all_gather(lst, fastgrad.full((2, 3), float(rank)))
    results["gather"] = np.stack([g.data for g in lst])
    dist.barrier()
    try:
        dist.all_reduce(fastgrad.tensor(np.ones((4, 4), np.float32)).T)  # a transposed view: not contiguous
    except ValueError as exc:
        results["error"] = np.array(str(exc))
    if rank == 0:
        np.savez(os.path.join(out, "collectives.npz"), **results)


def trainer_data():
    from fastgrad.datasets import load_mnist

    (xt, yt), (xv, yv) = load_mnist()
    return (xt[:512], yt[:512]), (xv[:200], yv[:200])


def run_trainer(trainer_kwargs, out_ckpt):
    """One epoch of the Trainer on 512 bundled images, global batch 64, a checkpoint per epoch."""
    from fastgrad.train import ModelCheckpoint, Trainer

    fastgrad.manual_seed(5)
    net = models.lenet5()
    trainer = Trainer(net, nn.CrossEntropyLoss(), optim.SGD(net.parameters(), lr=0.05, momentum=0.9), **trainer_kwargs)
    train, val = trainer_data()
    try:
        import safetensors  # noqa: F401  (checkpoints need it)

        callbacks = [ModelCheckpoint(out_ckpt)]
    except ImportError:
        callbacks = []
    history = trainer.fit(train, epochs=1, batch_size=64, val=val, seed=3, verbose=2, callbacks=callbacks)
    return net, trainer, history


def scenario_trainer(out):
    rank = dist.get_rank()
    net, _, history = run_trainer({}, os.path.join(out, f"ck-rank{rank}.safetensors"))
    mine = flat_weights(net)
    gathered = [fastgrad.zeros(mine.size) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fastgrad.tensor(mine))
    if rank == 0:
        record = history.epochs[-1]
        np.savez(
            os.path.join(out, "trainer.npz"),
            w0=gathered[0].data,
            w1=gathered[1].data,
            losses=np.array(history.step_loss),
            loss=record["loss"],
            accuracy=record["accuracy"],
            val_loss=record["val_loss"],
            val_accuracy=record["val_accuracy"],
            updates=record["updates"],
        )


def bn_model():
    fastgrad.manual_seed(21)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))


def bn_data(rank):
    return np.random.default_rng(rank).standard_normal((8, 1, 8, 8)).astype(np.float32) + rank


def scenario_buffers(out):
    """BatchNorm statistics stay per process, but each training forward starts from rank 0's."""
    rank = dist.get_rank()
    net = bn_model()
    net[1].running_mean.data[...] = 3.0 * rank  # differs before DDP: construction copies rank 0's
    ddp = nn.parallel.DistributedDataParallel(net)
    after_construction = net[1].running_mean.data.copy()
    net[1].running_var.data[...] = 7.0 + rank  # differs again: the forward copies rank 0's first
    ddp(fastgrad.tensor(bn_data(rank)))
    stats = np.concatenate([after_construction, net[1].running_mean.data, net[1].running_var.data])
    gathered = [fastgrad.zeros(stats.size) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fastgrad.tensor(stats))
    if rank == 0:
        np.savez(os.path.join(out, "buffers.npz"), *[g.data for g in gathered])


def syncbn_case(rank=None):
    """A model with BatchNorm layers made SyncBatchNorm, and (rank's share of) a batch of 12
    with a fixed linear loss sum(out * c); rank None: the whole batch."""
    fastgrad.manual_seed(8)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5)
    )
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 2, 6, 6)).astype(np.float32) * 2 + 1
    c = rng.standard_normal((12, 5)).astype(np.float32)
    if rank is not None:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        x, c = x[rank * 5 : (rank + 1) * 5 + rank * 2], c[rank * 5 : (rank + 1) * 5 + rank * 2]  # 5 and 7 samples
    return net, x, c


def scenario_syncbn(out):
    rank = dist.get_rank()
    net, x, c = syncbn_case(rank)
    xt = fastgrad.tensor(x, requires_grad=True)
    y = net(xt)
    (y * fastgrad.tensor(c)).sum().backward()
    stats = np.concatenate([net[1].running_mean.data, net[1].running_var.data, net[5].running_mean.data])
    grads = np.concatenate([p.grad.data.reshape(-1) for p in net.parameters()])
    pieces = {"y": y.data.reshape(-1), "dx": xt.grad.data.reshape(-1), "stats": stats, "grads": grads}
    result = {}
    for key, value in pieces.items():  # ranks hold different sizes: gather a padded copy
        size = fastgrad.tensor(np.array([value.size], np.int64))
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
        padded = np.zeros(int(size.item()), np.float32)
        padded[: value.size] = value
        gathered = [fastgrad.zeros(padded.size) for _ in range(2)]
        dist.all_gather(gathered, fastgrad.tensor(padded))
        for r in range(2):
            result[f"{key}{r}"] = gathered[r].data
    if rank == 0:
        np.savez(os.path.join(out, "syncbn.npz"), **result, kind=type(net[1]).__name__)


def scenario_mismatch(out):
    rank = dist.get_rank()
    net = models.lenet5() if rank == 0 else models.lenet5(num_classes=9)
    try:
        nn.parallel.DistributedDataParallel(net)
    except ValueError as exc:
        with open(os.path.join(out, f"mismatch-{rank}.txt"), "w") as f:
            f.write(str(exc))


def _train_forever(fail):
    rank, world = dist.get_rank(), dist.get_world_size()
    fastgrad.manual_seed(0)
    net = models.lenet5()
    ddp = nn.parallel.DistributedDataParallel(net)
    opt = optim.SGD(net.parameters(), lr=0.01)
    x, y = lenet_data(GLOBAL_BATCH)
    for step in range(10_000):
        if rank == 1 and step == 3:
            fail()
        opt.zero_grad()
        nn.CrossEntropyLoss()(ddp(fastgrad.tensor(x[rank::world])), fastgrad.tensor(y[rank::world])).backward()
        opt.step()


def scenario_raise(out):
    def fail():
        raise ZeroDivisionError("rank 1 cannot go on")

    _train_forever(fail)


def scenario_exit(out):
    _train_forever(lambda: sys.exit(3))


def scenario_kill(out):
    import signal

    def die():
        print(f"rank 1 is process {os.getpid()}", flush=True)  # for the test: mpiexec names the process
        os.kill(os.getpid(), signal.SIGKILL)

    _train_forever(die)


if __name__ == "__main__":
    fastgrad.set_num_threads(1)
    dist.init_process_group("mpi")
    globals()[f"scenario_{sys.argv[1]}"](sys.argv[2])
    dist.destroy_process_group()
