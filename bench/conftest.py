"""pytest-benchmark setup for the kernel benchmarks in bench/ (not collected by a plain
`pytest`: pyproject.toml's testpaths is tests/).

    python -m pytest bench/test_bench_conv.py --benchmark-only

Everything here runs on one thread: BLAS is limited to one thread for the whole session,
and the kernels are called with n_threads=1. The yardstick for "share of peak" is numpy's
float32 matmul (1024 x 1024) on one core, measured once per session. Each benchmark
records its GFLOP/s and share in ``benchmark.extra_info`` (so they land in --benchmark-json)
and a table of them is printed at the end of the session.
"""

import os
import platform
import sys

import numpy as np
import pytest

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:  # bench/ is not a package: its scripts are imported by name
    sys.path.insert(0, BENCH_DIR)

_rows = []  # one dict per finished benchmark, for the summary table
_session_info = {}  # the matmul yardstick and the timer it was measured with


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """One thread owns the core: no BLAS pool spinning next to the kernels."""
    from threadpoolctl import threadpool_limits

    import fastgrad

    before = fastgrad.get_num_threads()
    fastgrad.set_num_threads(1)
    with threadpool_limits(1):
        yield
    fastgrad.set_num_threads(before)


@pytest.fixture(scope="session")
def matmul_gflops(request, one_blas_thread):
    """numpy float32 matmul GFLOP/s on one core (1024^3, median of 31), once per session,
    timed with the benchmarks' own timer (--benchmark-timer): on a loaded machine
    `--benchmark-timer time.thread_time` takes time-sharing out of both sides."""
    import bench_kernels_conv
    from pytest_benchmark.utils import load_timer

    timer = load_timer(request.config.getoption("benchmark_timer")).target
    saved = bench_kernels_conv.CLOCK
    bench_kernels_conv.CLOCK = timer  # the clock its median_time reads
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is needed to pin BLAS to one thread")
    try:
        rate = bench_kernels_conv.Sgemm(np.float32).sample(repeat=31)
    finally:
        bench_kernels_conv.CLOCK = saved
    _session_info.update(matmul=rate, timer=f"{timer.__module__}.{timer.__name__}")
    return rate


@pytest.fixture
def record_rate(matmul_gflops):
    """record_rate(benchmark, flops, **labels): GFLOP/s and share of the matmul rate from
    the benchmark's median, into extra_info and the summary table."""

    def record(benchmark, flops, **labels):
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: the function ran once, untimed
            return None
        median = stats.stats.median
        gflops = flops / median / 1e9
        share = gflops / matmul_gflops
        benchmark.extra_info.update(
            labels,
            flops=flops,
            gflops=round(gflops, 2),
            share_of_matmul=round(share, 4),
            matmul_gflops=round(matmul_gflops, 2),
        )
        _rows.append(dict(labels, ms=median * 1e3, gflops=gflops, share=share))
        return gflops

    return record


def pytest_terminal_summary(terminalreporter):
    if not _rows:
        return
    from fastgrad import _config, kernels

    tr = terminalreporter
    tr.section("conv kernels: GFLOP/s on one thread (median)")
    tr.write_line(
        f"cpu: {_config._cpu_model()} ({os.cpu_count()} logical cores), "
        f"{platform.machine()}; backend {kernels.backend}, variant "
        f"{kernels.simd_variant}"
    )
    tr.write_line(
        f"numpy float32 matmul 1024^3 on one core: {_session_info['matmul']:.1f} "
        f"GFLOP/s (the 'share' column); timer {_session_info['timer']}"
    )
    tr.write_line("")
    tr.write_line("| layer | kernel | batch | dtype | ms | GFLOP/s | share of matmul | how |")
    tr.write_line("|---|---|---|---|---|---|---|---|")
    for r in _rows:
        tr.write_line(
            f"| {r['layer']} | {r['kernel']} | {r['batch']} | {r['dtype']} | "
            f"{r['ms']:.3f} | {r['gflops']:.1f} | {r['share']:.0%} | {r['how']} |"
        )
