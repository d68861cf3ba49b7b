"""Optimizer step time: fastgrad's compiled kernels against its pure-Python reference
kernels and against torch.optim (when installed), on a LeNet-5-sized parameter set and on
10 million parameters, float32, 1 and 2 threads.

Each contender runs ``optimizer.step()`` on the same parameters and fixed gradients. The
contenders take turns: every round runs each of them for a few timed steps, and the
reported figure is the median step time over all rounds (the reference kernels, which
take about a second per LeNet-5 step, run on the small set only and fewer times).

    python bench/bench_optim.py                  # everything
    python bench/bench_optim.py --rounds 3 --threads 1 --sizes lenet5
"""

import argparse
import os
import statistics
import time

import numpy as np

import fastgrad
from fastgrad import _config, kernels, optim
from fastgrad.tensor import Tensor

try:
    import torch
except ImportError:
    torch = None

SIZES = {
    "lenet5": [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)],
    "10M": [(2500, 4000)],
}
OPTIMIZERS = {  # name -> (class name, keyword arguments), the same in both libraries
    "sgd-momentum": ("SGD", dict(lr=0.01, momentum=0.9)),
    "adam": ("Adam", dict(lr=1e-3)),
    "adamw": ("AdamW", dict(lr=1e-3)),
    "rmsprop": ("RMSprop", dict(lr=1e-3, momentum=0.9)),
}


class Contender:
    """One library's optimizer over its own copy of the parameters, ready to step."""

    def __init__(self, label, step, n_threads_setter, before=None, after=None):
        self.label = label
        self.step = step
        self.set_threads = n_threads_setter
        self.before = before or (lambda: None)
        self.after = after or (lambda: None)
        self.times = []

    def run(self, n_steps, n_threads):
        self.set_threads(n_threads)
        self.before()
        try:
            for _ in range(n_steps):
                t0 = time.perf_counter()
                self.step()
                self.times.append(time.perf_counter() - t0)
        finally:
            self.after()


def _fastgrad_contender(label, arrays, grads, opt_name, backend):
    cls_name, kw = OPTIMIZERS[opt_name]
    params = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    for p, g in zip(params, grads):
        p.grad = Tensor(g)
    opt = getattr(optim, cls_name)(params, **kw)
    switch_to = (lambda: kernels.use_backend(backend)) if backend != "compiled" else None
    switch_back = (lambda: kernels.use_backend("compiled")) if backend != "compiled" else None
    return Contender(label, opt.step, fastgrad.set_num_threads, switch_to, switch_back)


def _torch_contender(arrays, grads, opt_name):
    cls_name, kw = OPTIMIZERS[opt_name]
    params = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g)
    opt = getattr(torch.optim, cls_name)(params, **kw)  # default (single-tensor loop on the CPU)
    return Contender("torch.optim", opt.step, torch.set_num_threads)


def bench_case(size, opt_name, n_threads, rounds, steps_per_round, with_reference, with_torch):
    shapes = SIZES[size]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in shapes]
    n_params = sum(a.size for a in arrays)
    contenders = [_fastgrad_contender("fastgrad", arrays, grads, opt_name, "compiled")]
    if with_torch and torch is not None:
        contenders.append(_torch_contender(arrays, grads, opt_name))
    reference = None
    if with_reference:
        reference = _fastgrad_contender("fastgrad-reference", arrays, grads, opt_name, "reference")
    for c in contenders:  # warm-up: first-step state allocation, thread pools, caches
        c.run(3, n_threads)
        c.times.clear()
    for r in range(rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            c.run(steps_per_round, n_threads)
        if reference is not None and r < 2:
            reference.run(1, n_threads)
    if reference is not None:
        contenders.append(reference)
    base = statistics.median(contenders[0].times)
    rows = []
    for c in contenders:
        med = statistics.median(c.times)
        rows.append((size, n_params, opt_name, n_threads, c.label, med, med / n_params * 1e9, med / base))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--sizes", default="lenet5,10M", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help=f"comma-separated, of {list(OPTIMIZERS)}")
    parser.add_argument("--no-reference", action="store_true", help="skip the pure-Python reference kernels")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"bench_optim: CPU {_config._cpu_model()}, {os.cpu_count()} logical CPUs, dtype float32")
    print(
        f"fastgrad {fastgrad.__version__}: backend {kernels.backend}, SIMD variant {kernels.simd_variant}; "
        f"torch {torch.__version__ if torch is not None else 'not installed'}; numpy {np.__version__}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.2f} (other processes on the cores skew 2-thread figures most)")
    print(
        "median time per optimizer.step() over alternating rounds; ratio = contender / fastgrad "
        "(above 1: fastgrad is faster)"
    )
    header = (
        f"{'params':>18} {'optimizer':>13} {'threads':>7} {'contender':>19} {'per step':>12} "
        f"{'ns/param':>9} {'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        steps = 50 if size == "lenet5" else 3
        for opt_name in args.optimizers.split(","):
            for n_threads in threads:
                rows = bench_case(
                    size,
                    opt_name,
                    n_threads,
                    args.rounds,
                    steps,
                    with_reference=(size == "lenet5" and not args.no_reference and n_threads == 1),
                    with_torch=not args.no_torch,
                )
                for size_, n_params, name, nt, label, med, ns, ratio in rows:
                    per_step = f"{med * 1e6:,.1f} us" if med < 0.1 else f"{med * 1e3:,.1f} ms"
                    print(
                        f"{size_ + f' ({n_params:,})':>18} {name:>13} {nt:>7} {label:>19} {per_step:>12} "
                        f"{ns:>9.3f} {ratio:>8.2f}",
                        flush=True,
                    )
    fastgrad.set_num_threads(_config._default_threads())


if __name__ == "__main__":
    main()
