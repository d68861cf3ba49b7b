"""Convolution speed through the public F.conv2d, per layer and per SIMD path, as a share
of one-core numpy float32 matmul (sgemm) measured in the same run.

    OPENBLAS_NUM_THREADS=1 python bench/bench_kernels_conv.py [--batch 64] [--repeat 9]
        [--paths avx2,baseline] [--layers lenet.conv1,...] [--clock cpu|wall]
        [--scaling] [--dtype float32]

For every SIMD path this CPU runs (fastgrad.kernels.simd_paths(), switched in-process
with kernels.use_simd) and every layer it times, on one thread:
  fwd  F.conv2d under no_grad
  bwd  y.backward(g, retain_graph=True) of y = F.conv2d(x, w, b), the gradients set to
       None first (as zero_grad leaves them): the input and weight gradients (weight only
       for a first layer, whose input needs no gradient) and the bias gradient; the flops
       counted are the input and weight gradients' only.
Each layer's sgemm rate (1024^3, numpy with threadpoolctl's limit of 1 thread) is measured
right before it, alternating, and the share is the layer's median rate over the median of
all sgemm samples. Targets, printed per row: forward >= 75%, backward >= 60% of sgemm.
--scaling adds, on the best path, batch 1 and 8 (time per image against batch 64; target
<= 2x) and 2 threads at batch 64 (target >= 1.7x one thread; calls alternate between the
two thread counts). OpenBLAS runs on one thread for the whole run.

--clock cpu (the default) times with the calling thread's CPU time: on a machine shared
with other work it shows what the kernels do while they run. One-thread figures only:
the 2-thread rows always use the wall clock.
Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset: they can pin OpenBLAS to a slower
kernel. The header prints which OpenBLAS kernel (corename) runs.
"""

import argparse
import os
import platform
import time

import numpy as np

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import _config, kernels

# name: ((C_in, H, W), (C_out, C_in, kH, kW), stride, padding, first layer)
LAYERS = {
    "lenet.conv1": ((1, 28, 28), (6, 1, 5, 5), 1, 2, True),
    "lenet.conv2": ((6, 14, 14), (16, 6, 5, 5), 1, 0, False),
    "cifar.conv1": ((3, 32, 32), (32, 3, 3, 3), 1, 1, True),
    "cifar.conv2": ((32, 16, 16), (64, 32, 3, 3), 1, 1, False),
    "resnet.16-16": ((16, 32, 32), (16, 16, 3, 3), 1, 1, False),
    "resnet.16-32s2": ((16, 32, 32), (32, 16, 3, 3), 2, 1, False),
    "resnet.64-64": ((64, 8, 8), (64, 64, 3, 3), 1, 1, False),
    "resnet.1x1s2": ((32, 16, 16), (64, 32, 1, 1), 2, 0, False),
    "mnist.32-64": ((32, 26, 26), (64, 32, 3, 3), 1, 0, False),
}
KERNELS = ("forward", "backward_input", "backward_weight")
TARGET = {"fwd": 0.75, "bwd": 0.60}
CLOCK = time.thread_time


def median_time(fn, repeat, clock=None):
    clock = clock or CLOCK
    fn()  # warm-up: plans, workspaces, caches
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.median(times))


class Sgemm:
    """numpy float32 matmul on one core, sampled between the layers' measurements."""

    def __init__(self, dtype):
        self.a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
        self.samples = []

    def sample(self, repeat=3):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            t = median_time(lambda: self.a @ self.a, repeat)
        rate = 2 * 1024**3 / t / 1e9
        self.samples.append(rate)
        return rate

    def rate(self):
        return float(np.median(self.samples))


def problem(layer, batch, dtype):
    (c, h, w), wshape, stride, pad, first = LAYERS[layer]
    rng = np.random.default_rng(0)
    x = fastgrad.tensor(rng.standard_normal((batch, c, h, w)).astype(dtype), requires_grad=not first)
    weight = fastgrad.tensor((rng.standard_normal(wshape) * 0.1).astype(dtype), requires_grad=True)
    bias = fastgrad.tensor(rng.standard_normal(wshape[0]).astype(dtype), requires_grad=True)
    kh, kw = wshape[2:]
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (w + 2 * pad - kw) // stride + 1
    flops = 2.0 * batch * wshape[0] * ho * wo * wshape[1] * kh * kw
    grad = fastgrad.tensor(rng.standard_normal((batch, wshape[0], ho, wo)).astype(dtype))

    def forward():
        with fastgrad.no_grad():
            F.conv2d(x, weight, bias, stride=stride, padding=pad)

    y = F.conv2d(x, weight, bias, stride=stride, padding=pad)

    def backward():
        # as a training step after zero_grad() (set_to_none, PyTorch's default): the
        # gradients are handed over, not added into earlier ones (an extra pass over the
        # input's size, a third of a 1x1 stride-2 layer's backward)
        x.grad = weight.grad = bias.grad = None
        y.backward(grad, retain_graph=True)

    return forward, backward, flops, flops * (1 if first else 2)


def _kernels_module():
    """The compiled conv module fastgrad.kernels binds (on the path it selected)."""
    import sys

    return sys.modules[kernels.conv2d_forward.__module__]


def make_problem(mod, layer, batch, dtype, n_threads):
    """The three kernels of one layer called directly (arrays and workspaces sized by
    conv2d_workspace_size, as the ops layer does): (calls, flops per call, how each runs)."""
    (c, h, w), wshape, stride, pad, _ = LAYERS[layer]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w)).astype(dtype)
    weight = (rng.standard_normal(wshape) * 0.1).astype(dtype)
    bias = rng.standard_normal(wshape[0]).astype(dtype)
    kh, kw = wshape[2:]
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    out = np.empty((batch, wshape[0], ho, wo), dtype)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_x, grad_w = np.empty_like(x), np.empty_like(weight)
    params = (stride, stride, pad, pad, 1, 1, 1)
    flops = 2.0 * batch * wshape[0] * ho * wo * wshape[1] * kh * kw

    def ws(kind):
        size = mod.conv2d_workspace_size(kind, x.shape, weight.shape, out.shape, *params, n_threads)
        return np.empty(size, dtype) if size else None

    wf, wi, ww = ws("forward"), ws("backward_input"), ws("backward_weight")
    plans = {}
    for kind in KERNELS:
        info = mod._plan_info(kind, x.shape, weight.shape, out.shape, *params, n_threads)
        level = {0: "baseline", 1: "avx2", 2: "avx512"}.get(info.get("simd"))
        plans[kind] = f"{info['path']} {info['tile'][0]}x{info['tile'][1]} {level}"
    calls = {
        "forward": lambda: mod.conv2d_forward(x, weight, bias, out, *params, False, wf, n_threads),
        "backward_input": lambda: mod.conv2d_backward_input(grad_out, weight, grad_x, *params, wi, n_threads),
        "backward_weight": lambda: mod.conv2d_backward_weight(x, grad_out, grad_w, *params, ww, n_threads),
    }
    return calls, flops, plans


def rates(layer, batch, dtype, repeat, clock=None):
    forward, backward, f_flops, b_flops = problem(layer, batch, dtype)
    tf = median_time(forward, repeat, clock)
    tb = median_time(backward, repeat, clock)
    return f_flops / tf / 1e9, b_flops / tb / 1e9, tf, tb


def blas_line():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl missing: BLAS kernel unknown"
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not blas:
        return "no BLAS found by threadpoolctl"
    b = blas[0]
    return (
        f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')}, "
        f"{b.get('num_threads')} threads (limited to 1 for sgemm)"
    )


def header(args):
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"cpu: {_config._cpu_model()} ({os.cpu_count()} logical cores), {platform.machine()}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)")
    print(f"blas: {blas_line()}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var):
            print(f"  note: {var}={os.environ[var]} is set")
    print(f"fastgrad {fastgrad.__version__}: paths this CPU runs {kernels.simd_paths()}, build {kernels.simd_variant}")
    print(f"batch {args.batch}, dtype {args.dtype}, 1 thread, median of {args.repeat}, {args.clock} clock")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--paths", default="", help="comma-separated SIMD paths (default: all)")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    ap.add_argument("--clock", default="cpu", choices=("wall", "cpu"))
    ap.add_argument("--scaling", action="store_true", help="also batch 1 and 8 and 2 threads, on the first path")
    ap.add_argument(
        "--kernels",
        action="store_true",
        help="also each kernel called directly (forward, input and weight gradients) with the plan it runs",
    )
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    # OpenBLAS on one thread throughout: its idle workers would otherwise spin on the
    # second core after each sgemm sample, under the 2-thread measurements
    with threadpool_limits(1):
        run(args)


def run(args):
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    dtype = np.dtype(args.dtype)
    paths = [p for p in args.paths.split(",") if p] or kernels.simd_paths()
    layers = [name for name in args.layers.split(",") if name] or list(LAYERS)
    header(args)
    sgemm = Sgemm(dtype)
    rows = []
    fastgrad.set_num_threads(1)
    start = kernels.simd_path
    for path in paths:
        kernels.use_simd(path)
        for layer in layers:
            sgemm.sample()
            fwd, bwd, tf, tb = rates(layer, args.batch, dtype, args.repeat)
            rows.append((path, layer, fwd, bwd, tf, tb))
    kernels.use_simd(start)
    peak = sgemm.rate()
    print(
        f"sgemm 1024^3, one core: median {peak:.1f} GFLOP/s over {len(sgemm.samples)} samples "
        f"(min {min(sgemm.samples):.1f}, max {max(sgemm.samples):.1f})"
    )
    print()
    print(
        f"{'path':<9} {'layer':<15} {'fwd ms':>8} {'GF/s':>6} {'share':>6} "
        f"{'bwd ms':>8} {'GF/s':>6} {'share':>6}  targets (fwd>=75%, bwd>=60%)"
    )
    for path, layer, fwd, bwd, tf, tb in rows:
        ok_f, ok_b = fwd / peak >= TARGET["fwd"], bwd / peak >= TARGET["bwd"]
        verdict = (
            "met"
            if ok_f and ok_b
            else ("NOT met: " + ", ".join(n for n, ok in (("fwd", ok_f), ("bwd", ok_b)) if not ok))
        )
        print(
            f"{path:<9} {layer:<15} {tf * 1e3:8.2f} {fwd:6.1f} {fwd / peak:6.0%} "
            f"{tb * 1e3:8.2f} {bwd:6.1f} {bwd / peak:6.0%}  {verdict}"
        )
    if args.kernels:
        kernel_rows(paths, layers, dtype, args.repeat, args.batch, peak)
    if args.scaling:
        scaling(paths[0], layers, dtype, args.repeat, args.batch)


def kernel_rows(paths, layers, dtype, repeat, batch, peak):
    print()
    print(f"the kernels alone, batch {batch}, 1 thread (share of the same sgemm median)")
    print(f"{'path':<9} {'layer':<15} {'kernel':<16} {'ms':>8} {'GF/s':>6} {'share':>6}  how")
    start = kernels.simd_path
    for path in paths:
        kernels.use_simd(path)
        for layer in layers:
            calls, flops, plans = make_problem(_kernels_module(), layer, batch, dtype, 1)
            for kernel in KERNELS:
                t = median_time(calls[kernel], repeat)
                rate = flops / t / 1e9
                print(
                    f"{path:<9} {layer:<15} {kernel:<16} {t * 1e3:8.3f} {rate:6.1f} {rate / peak:6.0%}  {plans[kernel]}"
                )
    kernels.use_simd(start)


def scaling(path, layers, dtype, repeat, batch):
    kernels.use_simd(path)
    print()
    print(
        f"scaling on {path}: time per image at batch 1 and 8 over batch {batch} "
        f"(target <= 2x), 2 threads over 1 at batch {batch} (target >= 1.7x, wall clock)"
    )
    print(f"{'layer':<15} {'b1 fwd':>7} {'b1 bwd':>7} {'b8 fwd':>7} {'b8 bwd':>7} {'2thr fwd':>8} {'2thr bwd':>8}")
    for layer in layers:
        fastgrad.set_num_threads(1)
        base = rates(layer, batch, dtype, repeat)
        per = {}
        for b in (1, 8):
            r = rates(layer, b, dtype, max(repeat, 15))
            per[b] = (base[0] / r[0], base[1] / r[1])  # time per image ratio = rate ratio
        speedup = thread_speedups(layer, batch, dtype, max(repeat, 15))
        print(
            f"{layer:<15} {per[1][0]:6.2f}x {per[1][1]:6.2f}x {per[8][0]:6.2f}x "
            f"{per[8][1]:6.2f}x {speedup[0]:7.2f}x {speedup[1]:7.2f}x"
        )


def thread_speedups(layer, batch, dtype, repeat):
    """(forward, backward) time on one thread over two, wall clock, medians of calls
    alternating between a 1-thread and a 2-thread problem (each thread count set right
    before its call, so that a change in the machine's load hits both alike)."""
    problems = {}
    for n in (1, 2):
        fastgrad.set_num_threads(n)  # the graph of a problem's backward is made with n
        problems[n] = problem(layer, batch, dtype)
    result = []
    for which in (0, 1):  # forward, backward
        times = {1: [], 2: []}
        for r in range(repeat + 1):
            for n in (1, 2):
                fastgrad.set_num_threads(n)
                call = problems[n][which]
                t0 = time.perf_counter()
                call()
                if r:  # the first round warms up plans and workspaces
                    times[n].append(time.perf_counter() - t0)
        result.append(float(np.median(times[1]) / np.median(times[2])))
    fastgrad.set_num_threads(1)
    return result


if __name__ == "__main__":
    main()
