"""The new layers' forward + backward (GELU, SiLU, LayerNorm, GroupNorm, ConvTranspose2d)
against PyTorch's, in one process, alternating, on the same data.

    python bench/bench_compat_ops.py                  # batch 64, float32, 1 thread
    python bench/bench_compat_ops.py --batch 16 --threads 2

Each case runs forward and backward (a weighted sum's gradient) through the public API
(fastgrad.nn.functional against torch.nn.functional); the two are timed one after the
other, round after round, and the table shows both medians and torch / fastgrad (above
1: fastgrad is faster).
"""

import argparse
import statistics
import time

import numpy as np

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import kernels
from fastgrad.benchmarks import cpu_model


def cases(n):
    rng = np.random.default_rng(0)
    act = rng.standard_normal((n, 16, 14, 14)).astype(np.float32)
    feat = rng.standard_normal((n, 256)).astype(np.float32)
    lw, lb = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    gw, gb = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    small = rng.standard_normal((n, 16, 7, 7)).astype(np.float32)
    tw = (rng.standard_normal((16, 8, 4, 4)) * 0.1).astype(np.float32)
    return [
        ("gelu (N,16,14,14)", [act], lambda f, x: f.gelu(x)),
        ("silu (N,16,14,14)", [act], lambda f, x: f.silu(x)),
        ("layer_norm (N,256)", [feat, lw, lb], lambda f, x, w, b: f.layer_norm(x, (256,), w, b)),
        ("group_norm 4 groups (N,16,14,14)", [act, gw, gb], lambda f, x, w, b: f.group_norm(x, 4, w, b)),
        (
            "conv_transpose2d 16->8 k4 s2 (N,16,7,7)",
            [small, tw],
            lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1),
        ),
    ]


def run_ours(fn, arrays):
    ts = [fastgrad.tensor(a, requires_grad=True) for a in arrays]
    out = fn(F, *ts)
    out.sum().backward()


def run_torch(torch, fn, arrays):
    ts = [torch.from_numpy(a).requires_grad_() for a in arrays]
    out = fn(torch.nn.functional, *ts)
    out.sum().backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    fastgrad.set_num_threads(args.threads)
    print(
        f"CPU: {cpu_model()}; fastgrad backend {kernels.backend}, SIMD variant {kernels.simd_variant}; "
        f"threads {args.threads}; batch {args.batch}; float32; torch {torch.__version__}"
    )
    print(f"{'case (forward + backward)':44s} {'fastgrad ms':>12s} {'torch ms':>10s} {'torch/fastgrad':>15s}")
    for name, arrays, fn in cases(args.batch):
        ours, theirs = [], []
        for _ in range(3):  # warm up both
            run_ours(fn, arrays)
            run_torch(torch, fn, arrays)
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            run_ours(fn, arrays)
            t1 = time.perf_counter()
            run_torch(torch, fn, arrays)
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
        a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        print(f"{name:44s} {a:12.3f} {b:10.3f} {b / a:15.2f}")


if __name__ == "__main__":
    main()
