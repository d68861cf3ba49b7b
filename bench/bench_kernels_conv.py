"""Convolution kernel speed: GFLOP/s of the compiled conv2d kernels on the conv layers of
LeNet-5 and CIFAR-small, and their speed-up over the pure-Python reference.

    python bench/bench_kernels_conv.py [--batch 64] [--threads 1,2] [--repeat 15]
                                       [--dtype float32] [--clock wall|cpu] [--no-reference]

For each layer, each thread count and each kernel (forward, backward_input,
backward_weight) it prints the median time of --repeat calls, the useful GFLOP/s
(2 * N * C_out * H_out * W_out * C_in/groups * kH * kW flops per call, the same for all
three), that rate as a share of numpy's float32 matmul measured on one core in the same
process, and how the kernel ran (path, register tile, SIMD level). Then it times both
backends on one small shape and prints the ratio.

--clock cpu times with the calling thread's CPU time instead of the wall clock: on a
machine shared with other work it shows what the kernels do while they run (meaningful
with one thread only; the threaded kernels' helper threads are not counted).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np


from fastgrad import _config
from fastgrad._ext import _conv as compiled  # the baseline build
from fastgrad.reference import conv as reference

# name: (x shape at batch 1, weight shape, padding)
LAYERS = {
    "lenet.conv1": ((1, 28, 28), (6, 1, 5, 5), 2),
    "lenet.conv2": ((6, 14, 14), (16, 6, 5, 5), 0),
    "cifar.conv1": ((3, 32, 32), (32, 3, 3, 3), 1),
    "cifar.conv2": ((32, 16, 16), (64, 32, 3, 3), 1),
}
KERNELS = ("forward", "backward_input", "backward_weight")


def _kernels_module():
    try:
        from fastgrad import kernels
        return sys.modules[kernels.conv2d_forward.__module__]
    except Exception:
        return compiled


CLOCK = time.perf_counter


def median_time(fn, repeat):
    fn()  # warm-up: workspace pages, caches
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return float(np.median(times))


def matmul_rate(dtype, repeat):
    """numpy matmul GFLOP/s on one core: the yardstick for 'share of peak'."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
    with threadpool_limits(1):
        t = median_time(lambda: a @ a, repeat)
    return 2 * 1024 ** 3 / t / 1e9


def make_problem(mod, layer, batch, dtype, n_threads):
    (c, h, w), wshape, pad = LAYERS[layer]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w)).astype(dtype)
    weight = (rng.standard_normal(wshape) * 0.1).astype(dtype)
    bias = rng.standard_normal(wshape[0]).astype(dtype)
    kh, kw = wshape[2:]
    ho, wo = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
    out = np.empty((batch, wshape[0], ho, wo), dtype)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_x, grad_w = np.empty_like(x), np.empty_like(weight)
    params = (1, 1, pad, pad, 1, 1, 1)
    flops = 2.0 * batch * wshape[0] * ho * wo * wshape[1] * kh * kw

    def ws(kind):
        size = mod.conv2d_workspace_size(kind, x.shape, weight.shape, out.shape, *params, n_threads)
        return np.empty(size, dtype) if size else None

    wf, wi, ww = ws("forward"), ws("backward_input"), ws("backward_weight")
    plans = {}
    if hasattr(mod, "_plan_info"):
        for kind in KERNELS:
            info = mod._plan_info(kind, x.shape, weight.shape, out.shape, *params, n_threads)
            level = {0: "portable", 1: "avx2", 2: "avx512"}.get(info.get("simd", mod._simd_level()))
            plans[kind] = f"{info['path']} {info['tile'][0]}x{info['tile'][1]} {level}"
    calls = {
        "forward": lambda: mod.conv2d_forward(x, weight, bias, out, *params, False, wf, n_threads),
        "backward_input": lambda: mod.conv2d_backward_input(grad_out, weight, grad_x, *params, wi,
                                                            n_threads),
        "backward_weight": lambda: mod.conv2d_backward_weight(x, grad_out, grad_w, *params, ww,
                                                              n_threads),
    }
    return calls, flops, plans


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall clock (default) or this thread's CPU time")
    ap.add_argument("--no-reference", action="store_true", help="skip the pure-Python race")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.thread_time
    dtype = np.dtype(args.dtype)
    threads = [int(t) for t in args.threads.split(",")]
    mod = _kernels_module()

    print(f"cpu: {_config._cpu_model()} ({os.cpu_count()} logical cores), {platform.machine()}")
    print(f"module: {mod.__name__}, SIMD level {mod._simd_level()} (0 portable, 1 AVX2+FMA, "
          f"2 AVX-512F)")
    print(f"batch {args.batch}, dtype {dtype}, threads {threads}, median of {args.repeat} runs, "
          f"{args.clock} clock")
    peak = matmul_rate(dtype, max(5, args.repeat // 3))
    if peak:
        print(f"numpy matmul 1024^3 on one core: {peak:.1f} GFLOP/s (the 'share' column)")
    print()
    print(f"{'layer':<13} {'thr':>3} {'kernel':<16} {'ms':>8} {'GFLOP/s':>8} {'share':>6}  how")
    for layer in LAYERS:
        for nt in threads:
            calls, flops, plans = make_problem(mod, layer, args.batch, dtype, nt)
            for kernel in KERNELS:
                t = median_time(calls[kernel], args.repeat)
                rate = flops / t / 1e9
                share = f"{rate / peak:6.0%}" if peak else "     -"
                print(f"{layer:<13} {nt:>3} {kernel:<16} {t * 1e3:8.3f} {rate:8.1f} {share}  "
                      f"{plans.get(kernel, '')}")

    if args.no_reference:
        return
    print()
    print("speed-up over the pure-Python reference, x (2, 3, 12, 12), weight (8, 3, 3, 3), "
          "padding 1, 1 thread:")
    small = {}
    for name, m in (("compiled", mod), ("reference", reference)):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 12, 12)).astype(dtype)
        w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
        out = np.empty((2, 8, 12, 12), dtype)
        g = rng.standard_normal(out.shape).astype(dtype)
        gx, gw = np.empty_like(x), np.empty_like(w)
        p = (1, 1, 1, 1, 1, 1, 1)
        rep = args.repeat if name == "compiled" else 3
        small[name] = {
            "forward": median_time(
                lambda: m.conv2d_forward(x, w, None, out, *p, False, None, 1), rep),
            "backward_input": median_time(
                lambda: m.conv2d_backward_input(g, w, gx, *p, None, 1), rep),
            "backward_weight": median_time(
                lambda: m.conv2d_backward_weight(x, g, gw, *p, None, 1), rep),
        }
    for kernel in KERNELS:
        c, r = small["compiled"][kernel], small["reference"][kernel]
        print(f"  {kernel:<16} compiled {c * 1e6:9.1f} us   reference {r * 1e3:9.1f} ms   "
              f"x{r / c:,.0f}")


if __name__ == "__main__":
    main()
