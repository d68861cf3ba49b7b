"""pytest-benchmark timings of the compiled conv2d kernels on the conv layers of LeNet-5
and CIFAR-small: forward, input gradient and weight gradient, each on its own, batch 64,
float32, one thread.

    python -m pytest bench/test_bench_conv.py --benchmark-only
    python -m pytest bench/test_bench_conv.py --benchmark-only --benchmark-json conv.json

The layers, the problems (arrays, workspaces sized by conv2d_workspace_size, as the ops
layer does) and the flop count come from bench_kernels_conv.py. Each benchmark stores its
GFLOP/s and share of numpy's one-core matmul rate in extra_info; bench/conftest.py prints
them as a table at the end of the session.
"""

import numpy as np
import pytest
from bench_kernels_conv import KERNELS, LAYERS, _kernels_module, make_problem

from fastgrad import kernels

BATCH = 64
DTYPE = np.float32
THREADS = 1


@pytest.fixture(scope="module")
def conv_module():
    if kernels.backend != "compiled":
        pytest.skip(f"the kernel benchmarks time the compiled kernels (backend is {kernels.backend})")
    return _kernels_module()


_problems = {}


def problem(mod, layer):
    """The arrays of one layer, built once and shared by its three kernels."""
    if layer not in _problems:
        _problems[layer] = make_problem(mod, layer, BATCH, DTYPE, THREADS)
    return _problems[layer]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv_kernel(benchmark, record_rate, conv_module, layer, kernel):
    calls, flops, plans = problem(conv_module, layer)
    benchmark.group = layer
    benchmark.name = f"{layer} {kernel}"
    benchmark(calls[kernel])
    record_rate(
        benchmark,
        flops,
        layer=layer,
        kernel=kernel,
        batch=BATCH,
        dtype=np.dtype(DTYPE).name,
        threads=THREADS,
        how=plans.get(kernel, ""),
    )
