"""fastgrad against PyTorch eager on nets written as PyTorch users write them: a custom
``forward`` calling ``F.relu`` and ``torch.flatten``, BatchNorm, residual adds.

Each net is one class body written once against a library (``lib`` is ``fastgrad`` or
``torch``), so both libraries run the same code; fastgrad's weights are copied into
PyTorch's model. A workload is a training step (zero_grad, forward, loss, backward, SGD
with momentum) or no-grad inference at one batch size and thread count, eager or
through ``fastgrad.compile`` (PyTorch always eager). The contenders run in the same
process in alternating rounds; the table reports medians of images per second and the
ratio, with the CPU model, SIMD path, threads, batch and dtype (float32).

    python bench/bench_nets.py                              # every net, batch, thread count
    python bench/bench_nets.py --nets resnet8 --batches 64 --threads 1
    python bench/bench_nets.py --profile resnet8 --batches 64   # cProfile of fastgrad's step
    python bench/bench_nets.py --memory --nets resnet8 --batches 64  # peak resident memory
    fastgrad bench --vs torch -- --nets mnist                # the same from the command line
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import fastgrad
import fastgrad.ops.buffer_pool

_NO_TORCH = "FASTGRAD_BENCH_NO_TORCH"  # set for a --memory child that runs fastgrad:
# its peak resident memory must not include PyTorch's libraries, which it never uses
try:
    if os.environ.get(_NO_TORCH):
        raise ImportError
    import torch
except ImportError:  # only fastgrad's figures are printed then
    torch = None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- the nets


def resnet8(lib):
    nn, F = lib.nn, lib.nn.functional

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out = out + self.shortcut(x)
            return F.relu(out)

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.layer1 = BasicBlock(16, 16, 1)
            self.layer2 = BasicBlock(16, 32, 2)
            self.layer3 = BasicBlock(32, 64, 2)
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = lib.flatten(self.pool(out), 1)
            return self.fc(out)

    return ResNet8()


def mnist_net(lib):
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):  # the MNIST example of the PyTorch examples repository
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = lib.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = self.dropout2(x)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    return Net()


def cifar_tutorial_net(lib):
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):  # the PyTorch CIFAR-10 tutorial's net
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = lib.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return Net()


def vgg_bn(lib):
    nn, F = lib.nn, lib.nn.functional

    class VGG(nn.Module):  # three stages of 2 x (conv3x3-BN-ReLU) + max-pool, dropout, classifier
        def __init__(self):
            super().__init__()
            convs, bns, cin = [], [], 3
            for cout in (32, 32, 64, 64, 128, 128):
                convs.append(nn.Conv2d(cin, cout, 3, padding=1, bias=False))
                bns.append(nn.BatchNorm2d(cout))
                cin = cout
            self.convs = nn.ModuleList(convs)
            self.bns = nn.ModuleList(bns)
            self.dropout = nn.Dropout(0.3)
            self.fc = nn.Linear(128 * 4 * 4, 10)

        def forward(self, x):
            for i in range(6):
                x = F.relu(self.bns[i](self.convs[i](x)))
                if i % 2 == 1:
                    x = F.max_pool2d(x, 2)
            x = self.dropout(lib.flatten(x, 1))
            return self.fc(x)

    return VGG()


def lenet5(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def cifar_small(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4096, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


# name: (builder, input shape, loss ("ce" on logits, "nll" on log-probabilities), lr, weight decay)
NETS = {
    "resnet8": (resnet8, (3, 32, 32), "ce", 0.05, 5e-4),
    "mnist": (mnist_net, (1, 28, 28), "nll", 0.01, 0.0),
    "cifar_tutorial": (cifar_tutorial_net, (3, 32, 32), "ce", 0.001, 0.0),
    "vgg_bn": (vgg_bn, (3, 32, 32), "ce", 0.05, 5e-4),
    "lenet5": (lenet5, (1, 28, 28), "ce", 0.01, 0.0),
    "cifar_small": (cifar_small, (3, 32, 32), "ce", 0.01, 0.0),
}

POOL_IMAGES = 2048  # distinct random images each contender cycles through (see make_batches)


def make_batches(shape, batch, seed=0):
    """The same (x, y) batches for both libraries; not one repeated batch, whose loss
    would reach 0 and whose gradients would decay into denormals."""
    rng = np.random.default_rng(seed)
    count = max(4, POOL_IMAGES // batch)
    return [
        (rng.standard_normal((batch,) + shape).astype(np.float32), rng.integers(0, 10, batch).astype(np.int64))
        for _ in range(count)
    ]


class Contender:
    """One library's model, loss, optimizer and batches; ``run(k)`` does k steps."""

    def __init__(self, lib, net, batch, train, compiled=False, weights=None):
        build, shape, loss, lr, decay = NETS[net]
        self.model = build(lib)
        if weights is not None:
            self.model.load_state_dict({k: lib.from_numpy(v.copy()) for k, v in weights.items()})
        self.batches = [(lib.from_numpy(x), lib.from_numpy(y)) for x, y in make_batches(shape, batch)]
        self.loss_fn = lib.nn.CrossEntropyLoss() if loss == "ce" else lib.nn.NLLLoss()
        self.opt = lib.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
        self.no_grad, self.train, self.next = lib.no_grad, train, 0
        if not train:
            self.model.eval()
        self.call = fastgrad.compile(self.model) if compiled else self.model

    def run(self, steps):
        call, opt, loss_fn, batches = self.call, self.opt, self.loss_fn, self.batches
        i, n = self.next, len(batches)
        if self.train:
            for _ in range(steps):
                x, y = batches[i]
                i = i + 1 if i + 1 < n else 0
                opt.zero_grad()
                loss = loss_fn(call(x), y)
                loss.backward()
                opt.step()
        else:
            with self.no_grad():
                for _ in range(steps):
                    call(batches[i][0])
                    i = i + 1 if i + 1 < n else 0
        self.next = i

    def weights(self):
        return {
            k: np.array(v.detach().numpy() if hasattr(v, "detach") else v) for k, v in self.model.state_dict().items()
        }


def steps_for(contender, min_seconds):
    t0 = time.perf_counter()
    contender.run(1)
    return max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))


def measure(net, batch, train, threads, modes, rounds, min_seconds):
    """Median images/s of each contender: fastgrad in each of ``modes`` ("eager",
    "compiled") and PyTorch eager, timed in alternating rounds."""
    fastgrad.set_num_threads(threads)
    fastgrad.set_flush_denormal(True)
    contenders = {}
    for mode in modes:
        contenders[mode] = Contender(fastgrad, net, batch, train, compiled=(mode == "compiled"))
    weights = next(iter(contenders.values())).weights()
    for c in list(contenders.values())[1:]:
        c.model.load_state_dict(weights)
    if torch is not None:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        contenders["torch"] = Contender(torch, net, batch, train, weights=weights)
    for c in contenders.values():
        c.run(3)  # warm-up: plans, caches, allocator pools
    steps = {k: steps_for(c, min_seconds) for k, c in contenders.items()}
    rates = {k: [] for k in contenders}
    for _ in range(rounds):
        for key, c in contenders.items():
            t0 = time.perf_counter()
            c.run(steps[key])
            rates[key].append(steps[key] * batch / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def _peak_rss_kib():
    """This process's peak resident memory in KiB. On Linux the high-water mark of its own
    address space (VmHWM): ru_maxrss keeps the parent's resident size at the fork across
    exec, so a child of a process that loaded PyTorch would report PyTorch's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(argv):
    """In a fresh process: train ``steps`` steps of one net with one contender and print
    the peak resident memory (KiB) as JSON."""
    import json

    lib_name, net, batch, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    if lib_name == "torch":
        torch.set_num_threads(1)
        c = Contender(torch, net, batch, True)
    else:
        fastgrad.set_num_threads(1)
        c = Contender(fastgrad, net, batch, True, compiled=(lib_name == "fastgrad-compiled"))
    before = _peak_rss_kib()
    if lib_name == "fastgrad-plain":  # nothing pooled: numpy.empty everywhere
        with fastgrad.ops.buffer_pool.disabled():
            c.run(steps)
    else:
        c.run(steps)
    peak = _peak_rss_kib()
    print(json.dumps({"contender": lib_name, "peak_kib": peak, "before_kib": before}))


def memory(nets, batches, steps):
    """Peak resident memory of each contender's training run, each in its own process."""
    import json
    import subprocess

    libs = ["fastgrad-eager", "fastgrad-compiled", "fastgrad-plain"] + (["torch"] if torch else [])
    print("\n| net | batch | steps | " + " | ".join(f"{k} peak MiB (growth)" for k in libs) + " |")
    print("|---|---|---|" + "---|" * len(libs))
    for net in nets:
        for batch in batches:
            cells = []
            for lib in libs:
                env = dict(os.environ)
                if lib != "torch":
                    env[_NO_TORCH] = "1"
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--memory-child", lib, net, str(batch), str(steps)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                cells.append(f"{r['peak_kib'] / 1024:.0f} (+{(r['peak_kib'] - r['before_kib']) / 1024:.0f})")
            print(f"| {net} | {batch} | {steps} | " + " | ".join(cells) + " |", flush=True)


def profile(net, batch, train, threads, steps=30):
    import cProfile
    import pstats

    fastgrad.set_num_threads(threads)
    c = Contender(fastgrad, net, batch, train)
    c.run(3)
    prof = cProfile.Profile()
    prof.enable()
    c.run(steps)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 64, 256])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--kind", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.3, help="length of one timed round")
    p.add_argument("--profile", choices=list(NETS), help="cProfile fastgrad's eager step of this net")
    p.add_argument(
        "--memory",
        action="store_true",
        help="peak resident memory of training runs (one process per contender) instead of speed",
    )
    p.add_argument("--steps", type=int, default=10, help="training steps of a --memory run")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--memory-child"]:
        _memory_child(argv[1:])
        return 0
    args = p.parse_args(argv)
    if args.memory:
        print(
            f"CPU: {cpu_model()}; dtype float32; 1 thread; fastgrad SIMD path {fastgrad.kernels.simd_path} "
            f"(build {fastgrad.kernels.simd_variant})"
        )
        memory(args.nets, args.batches, args.steps)
        return 0
    if not hasattr(fastgrad, "compile"):
        args.modes = [m for m in args.modes if m != "compiled"]
    if args.profile:
        for b in args.batches:
            profile(args.profile, b, "train" in args.kind, args.threads[0])
        return 0
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); dtype float32; "
        f"fastgrad backend {fastgrad.kernels.backend}, SIMD path {fastgrad.kernels.simd_path} "
        f"(build {fastgrad.kernels.simd_variant}); "
        + (f"torch {torch.__version__} eager" if torch is not None else "torch not installed")
    )
    cols = (
        [f"fastgrad {m} img/s" for m in args.modes]
        + (["torch img/s"] if torch else [])
        + ([f"{m} / torch" for m in args.modes] if torch else [])
    )
    print("\n| net | step | batch | threads | " + " | ".join(cols) + " |")
    print("|---|---|---|---|" + "---|" * len(cols))
    for net in args.nets:
        for kind in args.kind:
            for batch in args.batches:
                for threads in args.threads:
                    r = measure(net, batch, kind == "train", threads, args.modes, args.rounds, args.seconds)
                    cells = [f"{r[m]:.0f}" for m in args.modes]
                    if torch is not None:
                        cells += [f"{r['torch']:.0f}"] + [f"{r[m] / r['torch']:.2f}x" for m in args.modes]
                    print(f"| {net} | {kind} | {batch} | {threads} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
