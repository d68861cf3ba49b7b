"""Every kernel of a LeNet-5 and a CIFAR-small training step, compiled against pure Python.

For each layer of the two nets (at a small batch, so that the pure-Python reference
finishes), it times the forward kernel and each backward kernel separately on both
backends, with the same arrays, and prints the median times and the speed-up.

    python bench/bench_kernels.py                 # batch 2, float32, 1 thread
    python bench/bench_kernels.py --batch 4 --threads 2 --nets lenet5

The reference kernels are honest Python loops: the CIFAR-small convolutions take seconds
per call there, so the reference is timed once or twice (--ref-repeat) and the compiled
kernels many times (--repeat). The speed-up is reference median / compiled median.

    python bench/bench_kernels.py --bandwidth     # memory-bound kernels, GB/s

--bandwidth instead times the memory-bound kernels (linear at batch 1, 2x2 max pooling,
BatchNorm, ReLU, SGD-momentum and Adam steps) on arrays larger than L2, on the SIMD path
fastgrad runs, and prints the bytes each call must read and write per second, against
numpy's copy of an array of the same size measured right before it (bytes read +
written per second; target >= 70% of it).
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
        (
            f"{name} conv forward (+bias+relu)",
            lambda t: (lambda s=ws("forward", t): lambda: kernels.conv2d_forward(x, wt, b, out, *geo, True, s, t))(),
        ),
        (
            f"{name} conv backward input",
            lambda t: (
                lambda s=ws("backward_input", t): lambda: kernels.conv2d_backward_input(gy, wt, gx, *geo, s, t)
            )(),
        ),
        (
            f"{name} conv backward weight",
            lambda t: (
                lambda s=ws("backward_weight", t): lambda: kernels.conv2d_backward_weight(x, gy, gw, *geo, s, t)
            )(),
        ),
        (f"{name} conv backward bias", lambda t: lambda: kernels.conv2d_backward_bias(gy, gb, t)),
    ]


def pool_cases(name, n, c, hw, rng):
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    out = np.empty((n, c, hw // 2, hw // 2), np.float32)
    idx = np.empty(out.shape, np.int64)
    gy, gx = rng.standard_normal(out.shape).astype(np.float32), np.empty_like(x)
    kernels.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
    return [
        (
            f"{name} max_pool forward",
            lambda t: lambda: kernels.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 1, 1, t),
        ),
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
    return [
        (
            f"{name} cross_entropy forward+grad",
            lambda t: lambda: kernels.cross_entropy_forward(logits, target, None, -100, 0.0, True, losses, grad, t),
        )
    ]


def other_cases(n, rng):
    """The kernels the two nets do not use, on LeNet-5-sized activations (conv1's output)."""
    shape = (n, 6, 28, 28)
    x = rng.standard_normal(shape).astype(np.float32)
    out, gy, gx = np.empty_like(x), rng.standard_normal(shape).astype(np.float32), np.empty_like(x)
    pooled = np.empty((n, 6, 14, 14), np.float32)
    gp = rng.standard_normal(pooled.shape).astype(np.float32)
    logits = rng.standard_normal((n * 32, 10)).astype(np.float32)
    probs, glog = np.empty_like(logits), rng.standard_normal(logits.shape).astype(np.float32)
    target = rng.integers(0, 10, n * 32).astype(np.int64)
    losses, glosses = np.empty(n * 32, np.float32), np.ones(n * 32, np.float32)
    flat, ftarget = x.reshape(-1), rng.standard_normal(x.size).astype(np.float32)
    diff, squares, gflat = np.empty_like(flat), np.empty_like(flat), np.empty_like(flat)
    flat2 = flat.reshape(-1, 49)  # (N, C) logits of independent binary targets
    target2 = (np.abs(ftarget) % 1).astype(np.float32).reshape(flat2.shape)
    losses2, bce_grad = np.empty_like(flat2), np.empty_like(flat2)
    mean, invstd = np.empty(6, np.float32), np.empty(6, np.float32)
    rmean, rvar = np.zeros(6, np.float32), np.ones(6, np.float32)
    gamma, beta = np.ones(6, np.float32), np.zeros(6, np.float32)
    gg, gbeta = np.empty(6, np.float32), np.empty(6, np.float32)
    # batch norm works on an (N, C, S) view of NCHW data
    x3, out3, gy3, gx3 = (a.reshape(n, 6, -1) for a in (x, out, gy, gx))
    cases = []
    for act in ("sigmoid", "tanh"):
        # looked up when called: the backend is switched between the two timings
        cases += [
            (f"{act} forward {shape}", lambda t, a=act: lambda: getattr(kernels, f"{a}_forward")(x, out, t)),
            (f"{act} backward {shape}", lambda t, a=act: lambda: getattr(kernels, f"{a}_backward")(out, gy, gx, t)),
        ]
    cases += [
        (f"leaky_relu forward {shape}", lambda t: lambda: kernels.leaky_relu_forward(x, out, 0.01, t)),
        (f"leaky_relu backward {shape}", lambda t: lambda: kernels.leaky_relu_backward(x, gy, gx, 0.01, t)),
        (f"softmax forward {logits.shape}", lambda t: lambda: kernels.softmax_forward(logits, probs, t)),
        (f"softmax backward {logits.shape}", lambda t: lambda: kernels.softmax_backward(probs, glog, probs.copy(), t)),
        (f"log_softmax forward {logits.shape}", lambda t: lambda: kernels.log_softmax_forward(logits, probs, t)),
        (
            f"log_softmax backward {logits.shape}",
            lambda t: lambda: kernels.log_softmax_backward(probs, glog, probs.copy(), t),
        ),
        (
            f"avg_pool2d 2x2 forward {shape}",
            lambda t: lambda: kernels.avg_pool2d_forward(x, pooled, 2, 2, 2, 2, 0, 0, True, None, t),
        ),
        (
            f"avg_pool2d 2x2 backward {shape}",
            lambda t: lambda: kernels.avg_pool2d_backward(gp, gx, 2, 2, 2, 2, 0, 0, True, None, t),
        ),
        (f"adaptive_avg_pool2d forward {shape}", lambda t: lambda: kernels.adaptive_avg_pool2d_forward(x, pooled, t)),
        (f"adaptive_avg_pool2d backward {shape}", lambda t: lambda: kernels.adaptive_avg_pool2d_backward(gp, gx, t)),
        (
            f"nll_loss forward {logits.shape}",
            lambda t: lambda: kernels.nll_loss_forward(logits, target, None, -100, losses, t),
        ),
        (
            f"nll_loss backward {logits.shape}",
            lambda t: lambda: kernels.nll_loss_backward(target, None, -100, glosses, probs, t),
        ),
        (f"mse_loss forward {flat.shape}", lambda t: lambda: kernels.mse_loss_forward(flat, ftarget, diff, squares, t)),
        (
            f"mse_loss backward {flat.shape}",
            lambda t: lambda: kernels.mse_loss_backward(diff, np.ones(1, np.float32), 1.0 / flat.size, gflat, t),
        ),
        (
            f"bce_with_logits forward+grad {flat2.shape}",
            lambda t: (
                lambda: kernels.binary_cross_entropy_with_logits_forward(
                    flat2, target2, None, None, 1.0 / flat.size, losses2, bce_grad, t
                )
            ),
        ),
        (
            f"batch_norm forward (train) {shape}",
            lambda t: (
                lambda: kernels.batch_norm_forward_train(x3, gamma, beta, rmean, rvar, 0.1, 1e-5, out3, mean, invstd, t)
            ),
        ),
        (
            f"batch_norm forward (eval) {shape}",
            lambda t: lambda: kernels.batch_norm_forward_eval(x3, gamma, beta, rmean, rvar, 1e-5, out3, invstd, t),
        ),
        (
            f"batch_norm backward {shape}",
            lambda t: lambda: kernels.batch_norm_backward(gy3, x3, gamma, mean, invstd, True, gx3, gg, gbeta, t),
        ),
    ]
    return cases


def net_cases(net, n, rng):
    if net == "other":
        return other_cases(n, rng)
    if net == "lenet5":
        return (
            conv_cases("lenet5.conv1", n, 1, 28, 6, 5, 2, rng)
            + relu_cases("lenet5.conv1", (n, 6, 28, 28), rng)
            + pool_cases("lenet5.pool1", n, 6, 28, rng)
            + conv_cases("lenet5.conv2", n, 6, 14, 16, 5, 0, rng)
            + pool_cases("lenet5.pool2", n, 16, 10, rng)
            + linear_cases("lenet5.fc1", n, 400, 120, rng)
            + linear_cases("lenet5.fc2", n, 120, 84, rng)
            + linear_cases("lenet5.fc3", n, 84, 10, rng)
            + loss_cases("lenet5", n, 10, rng)
        )
    return (
        conv_cases("cifar.conv1", n, 3, 32, 32, 3, 1, rng)
        + relu_cases("cifar.conv1", (n, 32, 32, 32), rng)
        + pool_cases("cifar.pool1", n, 32, 32, rng)
        + conv_cases("cifar.conv2", n, 32, 16, 64, 3, 1, rng)
        + pool_cases("cifar.pool2", n, 64, 16, rng)
        + linear_cases("cifar.fc1", n, 4096, 128, rng)
        + linear_cases("cifar.fc2", n, 128, 10, rng)
        + loss_cases("cifar", n, 10, rng)
    )


def median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth_cases(rng, n_threads):
    """(label, call, bytes read + written per call) of the memory-bound kernels."""
    f32 = np.float32
    cases = []
    x = rng.standard_normal((1, 4096)).astype(f32)  # linear at batch 1: the weight
    w = rng.standard_normal((512, 4096)).astype(f32)
    b = rng.standard_normal(512).astype(f32)
    y = np.empty((1, 512), f32)
    cases.append(("linear fwd 1x4096 -> 512", lambda: kernels.linear_forward(x, w, b, y, False, n_threads), w.nbytes))
    a = rng.standard_normal((64, 32, 32, 32)).astype(f32)
    o = np.empty((64, 32, 16, 16), f32)
    i = np.empty(o.shape, np.int64)
    cases.append(
        (
            "max_pool2d 2x2 fwd (64, 32, 32, 32)",
            lambda: kernels.max_pool2d_forward(a, o, i, 2, 2, 2, 2, 0, 0, 1, 1, n_threads),
            a.nbytes + o.nbytes + i.nbytes,
        )
    )
    r = np.empty_like(a)
    cases.append(("relu fwd (64, 32, 32, 32)", lambda: kernels.relu_forward(a, r, n_threads), 2 * a.nbytes))
    a3 = a.reshape(64, 32, -1)  # BatchNorm kernels take (N, C, S)
    r3 = r.reshape(a3.shape)
    c = a.shape[1]
    bw, bb = np.ones(c, f32), np.zeros(c, f32)
    rm, rv, sm, si = np.zeros(c, f32), np.ones(c, f32), np.empty(c, f32), np.empty(c, f32)
    cases.append(
        (
            "batch_norm fwd train (64, 32, 32, 32)",
            lambda: kernels.batch_norm_forward_train(a3, bw, bb, rm, rv, 0.1, 1e-5, r3, sm, si, n_threads),
            3 * a.nbytes,
        )
    )
    g, gi = rng.standard_normal(a3.shape).astype(f32), np.empty_like(a3)
    gw, gb = np.empty(c, f32), np.empty(c, f32)
    kernels.batch_norm_forward_train(a3, bw, bb, rm, rv, 0.1, 1e-5, r3, sm, si, n_threads)
    cases.append(
        (
            "batch_norm bwd (64, 32, 32, 32)",
            lambda: kernels.batch_norm_backward(g, a3, bw, sm, si, True, gi, gw, gb, n_threads),
            5 * a.nbytes,
        )
    )
    params = [rng.standard_normal(1 << 20).astype(f32) for _ in range(4)]
    grads = [rng.standard_normal(p.shape).astype(f32) for p in params]
    bufs = [np.zeros_like(p) for p in params]
    size = sum(p.nbytes for p in params)
    cases.append(
        (
            "sgd momentum step 4 x 1M",
            lambda: kernels.sgd_step(params, grads, bufs, 1e-3, 0.9, 0.0, 0.0, False, False, False, n_threads),
            5 * size,
        )
    )
    m1, m2 = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    cases.append(
        (
            "adam step 4 x 1M",
            lambda: kernels.adam_step(
                params, grads, m1, m2, [], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, False, False, n_threads
            ),
            7 * size,
        )
    )
    return cases


def bandwidth(args):
    """Memory-bound kernels in GB/s against numpy's copy in the same run (medians)."""
    rng = np.random.default_rng(0)
    print(
        f"CPU: {cpu_model()}; float32; {args.threads} thread(s); SIMD path "
        f"{kernels.simd_path}; medians of {args.repeat}, alternating with the copy, "
        "thread CPU clock"
    )
    print("\n| kernel | GB/s | copy GB/s | share of copy |\n|---|---|---|---|")
    for label, call, nbytes in bandwidth_cases(rng, args.threads):
        src = np.ones(nbytes // 8, np.float32)  # copying it reads and writes nbytes in all
        dst = np.empty_like(src)
        np.copyto(dst, src)
        call()  # warm-up: pages, plans
        copies, times = [], []
        for _ in range(args.repeat):  # alternating, on this thread's CPU clock
            t0 = time.thread_time()
            np.copyto(dst, src)
            t1 = time.thread_time()
            call()
            t2 = time.thread_time()
            copies.append(t1 - t0)
            times.append(t2 - t1)
        t, copy = statistics.median(times), statistics.median(copies)
        rate, copy_rate = nbytes / t / 1e9, nbytes / copy / 1e9
        print(f"| {label} | {rate:.1f} | {copy_rate:.1f} | {rate / copy_rate:.0%} |", flush=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=50, help="timed calls of each compiled kernel")
    p.add_argument("--ref-repeat", type=int, default=1, help="timed calls of each reference kernel")
    p.add_argument(
        "--nets",
        default="lenet5,cifar_small,other",
        help="lenet5, cifar_small and/or other (the kernels neither net uses)",
    )
    p.add_argument(
        "--bandwidth", action="store_true", help="the memory-bound kernels in GB/s against numpy's copy instead"
    )
    args = p.parse_args(argv)
    if kernels.backend != "compiled":
        print("the compiled kernels are not installed: nothing to compare")
        return 1
    if args.bandwidth:
        return bandwidth(args)
    print(
        f"CPU: {cpu_model()}; float32; batch {args.batch}; {args.threads} thread(s); "
        f"fastgrad {fastgrad.__version__}, variant {kernels.simd_variant}"
    )
    print("\n| kernel | compiled | pure Python | speed-up |\n|---|---|---|---|")
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
            print(
                f"| {label} | {compiled * 1e6:,.1f} us | {reference * 1e3:,.1f} ms | {reference / compiled:,.0f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
