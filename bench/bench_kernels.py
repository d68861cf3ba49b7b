"""Every kernel of a LeNet-5 and a CIFAR-small training step, compiled against pure Python.

For each layer of the two nets (at a small batch, so that the pure-Python reference
finishes), it times the forward kernel and each backward kernel separately on both
backends, with the same arrays, and prints the median times and the speed-up.

    python bench/bench_kernels.py                 # batch 2, float32, 1 thread
    python bench/bench_kernels.py --batch 4 --threads 2 --nets lenet5

The reference kernels are honest Python loops: the CIFAR-small convolutions take seconds
per call there, so the reference is timed once or twice (--ref-repeat) and the compiled
kernels many times (--repeat). The speed-up is reference median / compiled median.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastgrad
from fastgrad import kernels
from fastgrad.benchmarks import cpu_model


def conv_cases(name, n, c_in, hw, c_out, k, pad, rng):
    h = w = hw
    ho = wo = h + 2 * pad - k + 1
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c_out, c_in, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    gy = rng.standard_normal((n, c_out, ho, wo)).astype(np.float32)
    out = np.empty_like(gy)
    gx, gw, gb = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    geo = (1, 1, pad, pad, 1, 1, 1)

    def ws(kind, threads):
        size = kernels.conv2d_workspace_size(kind, x.shape, wt.shape, out.shape, *geo, threads)
        return np.empty(max(size, 1), np.float32)

    return [
        (f"{name} conv forward (+bias+relu)", lambda t: (lambda s=ws("forward", t): lambda: kernels.conv2d_forward(
            x, wt, b, out, *geo, True, s, t))()),
        (f"{name} conv backward input", lambda t: (lambda s=ws("backward_input", t): lambda: kernels.conv2d_backward_input(
            gy, wt, gx, *geo, s, t))()),
        (f"{name} conv backward weight", lambda t: (lambda s=ws("backward_weight", t): lambda: kernels.conv2d_backward_weight(
            x, gy, gw, *geo, s, t))()),
        (f"{name} conv backward bias", lambda t: lambda: kernels.conv2d_backward_bias(gy, gb, t)),
    ]


def pool_cases(name, n, c, hw, rng):
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    out = np.empty((n, c, hw // 2, hw // 2), np.float32)
    idx = np.empty(out.shape, np.int64)
    gy, gx = rng.standard_normal(out.shape).astype(np.float32), np.empty_like(x)
    kernels.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
    return [
        (f"{name} max_pool forward", lambda t: lambda: kernels.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 1, 1, t)),
        (f"{name} max_pool backward", lambda t: lambda: kernels.max_pool2d_backward(gy, idx, gx, t)),
    ]


def relu_cases(name, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    out, gy, gx = np.empty_like(x), rng.standard_normal(shape).astype(np.float32), np.empty_like(x)
    kernels.relu_forward(x, out, 1)
    return [
        (f"{name} relu forward", lambda t: lambda: kernels.relu_forward(x, out, t)),
        (f"{name} relu backward", lambda t: lambda: kernels.relu_backward(out, gy, gx, t)),
    ]


def linear_cases(name, n, fin, fout, rng):
    x = rng.standard_normal((n, fin)).astype(np.float32)
    wt = (rng.standard_normal((fout, fin)) * 0.1).astype(np.float32)
    b = rng.standard_normal(fout).astype(np.float32)
    out, gy = np.empty((n, fout), np.float32), rng.standard_normal((n, fout)).astype(np.float32)
    gx, gw, gb = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    return [
        (f"{name} linear forward", lambda t: lambda: kernels.linear_forward(x, wt, b, out, False, t)),
        (f"{name} linear backward input", lambda t: lambda: kernels.linear_backward_input(gy, wt, gx, t)),
        (f"{name} linear backward weight", lambda t: lambda: kernels.linear_backward_weight(x, gy, gw, t)),
        (f"{name} linear backward bias", lambda t: lambda: kernels.linear_backward_bias(gy, gb, t)),
    ]


def loss_cases(name, n, classes, rng):
    logits = rng.standard_normal((n, classes)).astype(np.float32)
    target = rng.integers(0, classes, n).astype(np.int64)
    losses, grad = np.empty(n, np.float32), np.empty_like(logits)
    return [(f"{name} cross_entropy forward+grad", lambda t: lambda: kernels.cross_entropy_forward(
        logits, target, None, -100, 0.0, True, losses, grad, t))]


def net_cases(net, n, rng):
    if net == "lenet5":
        return (conv_cases("lenet5.conv1", n, 1, 28, 6, 5, 2, rng) + relu_cases("lenet5.conv1", (n, 6, 28, 28), rng)
                + pool_cases("lenet5.pool1", n, 6, 28, rng)
                + conv_cases("lenet5.conv2", n, 6, 14, 16, 5, 0, rng) + pool_cases("lenet5.pool2", n, 16, 10, rng)
                + linear_cases("lenet5.fc1", n, 400, 120, rng) + linear_cases("lenet5.fc2", n, 120, 84, rng)
                + linear_cases("lenet5.fc3", n, 84, 10, rng) + loss_cases("lenet5", n, 10, rng))
    return (conv_cases("cifar.conv1", n, 3, 32, 32, 3, 1, rng) + relu_cases("cifar.conv1", (n, 32, 32, 32), rng)
            + pool_cases("cifar.pool1", n, 32, 32, rng)
            + conv_cases("cifar.conv2", n, 32, 16, 64, 3, 1, rng) + pool_cases("cifar.pool2", n, 64, 16, rng)
            + linear_cases("cifar.fc1", n, 4096, 128, rng) + linear_cases("cifar.fc2", n, 128, 10, rng)
            + loss_cases("cifar", n, 10, rng))


def median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=50, help="timed calls of each compiled kernel")
    p.add_argument("--ref-repeat", type=int, default=1, help="timed calls of each reference kernel")
    p.add_argument("--nets", default="lenet5,cifar_small")
    args = p.parse_args(argv)
    if kernels.backend != "compiled":
        print("the compiled kernels are not installed: nothing to compare")
        return 1
    print(f"CPU: {cpu_model()}; float32; batch {args.batch}; {args.threads} thread(s); "
          f"fastgrad {fastgrad.__version__}, variant {kernels.simd_variant}")
    print(f"\n| kernel | compiled | pure Python | speed-up |\n|---|---|---|---|")
    for net in args.nets.split(","):
        rng = np.random.default_rng(0)
        for label, make in net_cases(net, args.batch, rng):
            kernels.use_backend("compiled")
            compiled = median_time(make(args.threads), args.repeat)
            kernels.use_backend("reference")
            try:
                reference = median_time(make(args.threads), args.ref_repeat)
            finally:
                kernels.use_backend("compiled")
            print(f"| {label} | {compiled * 1e6:,.1f} us | {reference * 1e3:,.1f} ms | "
                  f"{reference / compiled:,.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
