"""Data-parallel training over MPI: images per second of LeNet-5 (MNIST-sized input) and
ResNet-8 (CIFAR-sized input) at a fixed global batch with 1 and with 2 processes of one
thread each, the time spent in the gradient allreduce, and a model of larger N.

The driver starts ``mpiexec -n 1`` and ``mpiexec -n 2`` runs of this script in turns
(1, 2, 1, 2, ...); each run times several windows of training steps (after warm-up, between
barriers) and reports, from rank 0, the median images per second, the median time per
step that DDP's last bucket hook spends waiting for the allreduces (which includes waiting
for the slower rank), and, in a separate loop, the time of a bare allreduce of the model's
gradient size and of a few other sizes (latency + size / bandwidth: the model for larger N).

    python bench/bench_distributed.py                       # LeNet-5 and ResNet-8, batch 128
    python bench/bench_distributed.py --models lenet5 --rounds 5 --bucket-mb 25 0.05
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- models


def resnet8(num_classes=10):
    """ResNet-8 for 32x32 RGB (He et al.'s CIFAR ResNet with one basic block per stage)."""
    from fastgrad import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def build(name):
    from fastgrad import models

    if name == "lenet5":
        return models.lenet5(), (1, 28, 28)
    if name == "resnet8":
        return resnet8(), (3, 32, 32)
    raise SystemExit(f"unknown model {name!r}")


# --------------------------------------------------------------------------- one run (under mpiexec)


def worker(args):
    import fastgrad
    from fastgrad import distributed as dist
    from fastgrad import nn, optim

    fastgrad.set_num_threads(1)
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    fastgrad.manual_seed(0)
    model, shape = build(args.model)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    waited = [0.0]
    finish = ddp._finish

    def timed_finish():  # the last bucket's hook: wait for every allreduce, write the averages back
        t0 = time.perf_counter()
        finish()
        waited[0] += time.perf_counter() - t0

    object.__setattr__(ddp, "_finish", timed_finish)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    local = args.global_batch // world
    rng = np.random.default_rng(rank)
    x = fastgrad.tensor(rng.standard_normal((local,) + shape).astype(np.float32))
    y = fastgrad.tensor(rng.integers(0, 10, local))

    def step():
        opt.zero_grad()
        loss_fn(ddp(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    rates, waits, cpu = [], [], []
    for _ in range(args.windows):
        dist.barrier()
        waited[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        c1 = time.process_time()
        dist.barrier()
        elapsed = time.perf_counter() - t0
        rates.append(args.steps * args.global_batch / elapsed)
        waits.append(waited[0] / args.steps)
        cpu.append((c1 - c0) / args.steps)
    # bare allreduce: the gradient's size and a sweep, both ranks lined up by a barrier
    grad_floats = sum(int(p.data.size) for p in model.parameters())
    sizes = sorted({grad_floats, 1024, 16384, 262144, 1048576})
    bare = {}
    for n in sizes:
        buf = fastgrad.zeros(n)
        times = []
        for _ in range(args.allreduce_repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t0)
        bare[n] = statistics.median(times)
    if rank == 0:
        print(
            json.dumps(
                {
                    "world": world,
                    "model": args.model,
                    "bucket_mb": args.bucket_mb,
                    "buckets": len(ddp._buckets),
                    "rates": rates,
                    "waits": waits,
                    "cpu": cpu,
                    "grad_floats": grad_floats,
                    "allreduce": bare,
                }
            ),
            flush=True,
        )
    dist.destroy_process_group()


# --------------------------------------------------------------------------- driver


def mpiexec():
    return shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def run(world, model, bucket_mb, args):
    cmd = [
        mpiexec(),
        "-n",
        str(world),
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--model",
        model,
        "--bucket-mb",
        str(bucket_mb),
        "--global-batch",
        str(args.global_batch),
        "--steps",
        str(args.steps[model]),
        "--windows",
        str(args.windows),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def fit_latency_bandwidth(allreduce):
    """t = latency + bytes / bandwidth: the latency from the smallest message of the sweep,
    the bandwidth from the largest (float32; robust to one disturbed size in between)."""
    sizes = sorted(allreduce)
    latency = allreduce[sizes[0]]
    extra = allreduce[sizes[-1]] - latency
    return latency, (4 * sizes[-1] / extra if extra > 0 else float("inf"))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="lenet5", help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet8"])
    p.add_argument("--global-batch", type=int, default=128)
    p.add_argument("--bucket-mb", type=float, nargs="+", default=[25.0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="steps per window (default: 10 LeNet-5, 3 ResNet-8)")
    p.add_argument("--allreduce-repeats", type=int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = p.parse_args(argv)
    if args.worker:
        args.bucket_mb = args.bucket_mb[0]
        args.steps = args.steps or 10
        return worker(args)
    if mpiexec() is None:
        raise SystemExit("bench_distributed: no mpiexec (pip install 'fastgrad[mpi]')")
    args.steps = {m: args.steps or (10 if m == "lenet5" else 3) for m in args.models}
    import fastgrad
    from fastgrad import kernels

    load_before = os.getloadavg()
    results = {}
    for _ in range(args.rounds):
        for model in args.models:
            for bucket_mb in args.bucket_mb:
                for world in (1, 2):  # in turns, so drifting machine load hits both alike
                    r = run(world, model, bucket_mb, args)
                    key = (model, bucket_mb, world)
                    entry = results.setdefault(
                        key,
                        {
                            "rates": [],
                            "waits": [],
                            "cpu": [],
                            "allreduce": [],
                            "buckets": r["buckets"],
                            "grad_floats": r["grad_floats"],
                        },
                    )
                    entry["rates"] += r["rates"]
                    entry["waits"] += r["waits"]
                    entry["cpu"] += r["cpu"]
                    entry["allreduce"].append({int(k): v for k, v in r["allreduce"].items()})
    load_after = os.getloadavg()
    print(
        f"bench_distributed: {cpu_name()}, {os.cpu_count()} cores; SIMD path {kernels.simd_path} "
        f"(build {kernels.simd_variant or 'baseline'}); "
        f"1 thread per process; float32; global batch {args.global_batch}; fastgrad {fastgrad.__version__}"
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (the machine is shared)")
    print(
        f"{'model':<8} {'bucket MB':>9} {'buckets':>7} {'1 proc img/s':>13} {'2 procs img/s':>14} {'speed-up':>8} "
        f"{'allreduce wait/step (2 procs)':>30} {'CPU ms/step 1 | 2':>18} {'CPU ratio':>9}"
    )
    for model in args.models:
        for bucket_mb in args.bucket_mb:
            one, two = results[(model, bucket_mb, 1)], results[(model, bucket_mb, 2)]
            r1, r2 = statistics.median(one["rates"]), statistics.median(two["rates"])
            wait = statistics.median(two["waits"]) * 1e3
            step = args.global_batch / r2 * 1e3
            c1, c2 = statistics.median(one["cpu"]) * 1e3, statistics.median(two["cpu"]) * 1e3
            print(
                f"{model:<8} {bucket_mb:>9g} {two['buckets']:>7} {r1:>13,.0f} {r2:>14,.0f} {r2 / r1:>7.2f}x "
                f"{wait:>9.2f} ms of {step:.1f} ms ({100 * wait / step:.0f}%) {c1:>8.2f} | {c2:>7.2f} {c1 / c2:>8.2f}x"
            )
    print(
        "(CPU ms/step: rank 0's processor time per step, polling in waits included; their ratio is the "
        "speed-up two otherwise idle cores would give, the wall-clock one is what this machine gave)"
    )
    print("bare allreduce (2 processes, shared memory), median:")
    sweeps = [s for m in args.models for s in results[(m, args.bucket_mb[0], 2)]["allreduce"]]
    merged = {n: statistics.median([s[n] for s in sweeps if n in s]) for n in sorted({n for s in sweeps for n in s})}
    for n, t in merged.items():
        print(f"  {n:>9,} floats ({4 * n / 1024:>7,.0f} KiB): {t * 1e6:>9.1f} us, {4 * n / t / 1e9:>6.2f} GB/s")
    latency, bandwidth = fit_latency_bandwidth(merged)
    print(f"fit: allreduce(bytes) = {latency * 1e6:.1f} us + bytes / {bandwidth / 1e9:.2f} GB/s")
    print(
        "model for N processes, one core each, this link (ring allreduce: 2(N-1) latencies and "
        "2(N-1)/N of the message per process), compute per image from the 1-process run:"
    )
    for model in args.models:
        one = results[(model, args.bucket_mb[0], 1)]
        per_image = 1.0 / statistics.median(one["rates"])
        nbytes = 4 * one["grad_floats"]
        row = []
        for n in (2, 4, 8, 16, 64):
            comm = 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth
            step = per_image * args.global_batch / n + comm
            row.append(f"N={n}: {args.global_batch / step:,.0f} img/s ({100 * comm / step:.0f}% comm)")
        print(f"  {model}: " + "; ".join(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{m}/{b}/{w}": v for (m, b, w), v in results.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
