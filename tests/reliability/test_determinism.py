"""The same seed and thread count give bit-identical weights, run after run, in-process and
across processes; and (a property of fastgrad's fixed reduction order) across thread counts."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _lenet_run as run  # noqa: E402

# The pure-Python kernels take about a second per LeNet-5 step at batch 8: a few steps
# there. They ignore the thread count, so the thread-count tests run on compiled kernels.
COMPILED = kernels.backend == "compiled"
STEPS = 200 if COMPILED else 2
compiled_only = pytest.mark.skipif(not COMPILED, reason="the reference kernels ignore n_threads")


def _digest_in_process(threads, optimizer="sgd"):
    before = fastgrad.get_num_threads()
    fastgrad.set_num_threads(threads)
    try:
        model, opt = run.build(0, optimizer)
        xs, ys = run.make_batches(16, 8, seed=1)
        run.train(model, opt, xs, ys, STEPS)
        return run.digest(model)
    finally:
        fastgrad.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_threads_bit_identical(threads):
    assert _digest_in_process(threads) == _digest_in_process(threads)


def test_bit_identical_across_processes():
    mine = _digest_in_process(2)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + sys.path)
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_lenet_run.py"), str(STEPS), "2"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert out == mine


@compiled_only
def test_bit_identical_across_thread_counts():
    # Every kernel splits work statically and reduces in a fixed order that does not depend
    # on the number of threads, so 1 and 2 threads agree to the bit.
    assert _digest_in_process(1) == _digest_in_process(2)
    assert _digest_in_process(1, "adam") == _digest_in_process(2, "adam")


def _weights_at_batch_64(threads, optimizer, steps=5):
    before = fastgrad.get_num_threads()
    fastgrad.set_num_threads(threads)
    try:
        model, opt = run.build(0, optimizer)
        xs, ys = run.make_batches(steps, 64, seed=2)
        run.train(model, opt, xs, ys, steps)
        return run.weights(model)
    finally:
        fastgrad.set_num_threads(before)


@compiled_only
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bit_identical_across_thread_counts_at_batch_64(optimizer):
    # Batch 8 is too small for most kernels to start threads; at batch 64 the convolutions
    # (and their weight gradients, sums over the batch) run on both threads.
    conv = sys.modules[kernels.conv2d_backward_weight.__module__]
    if hasattr(conv, "_plan_info"):  # LeNet-5's second convolution, as trained below
        info = conv._plan_info(
            "backward_weight", (64, 6, 14, 14), (16, 6, 5, 5), (64, 16, 10, 10), 1, 1, 0, 0, 1, 1, 1, 2
        )
        assert info["threads"] == 2
    one, two = _weights_at_batch_64(1, optimizer), _weights_at_batch_64(2, optimizer)
    assert one.keys() == two.keys()
    for name in one:
        assert np.array_equal(one[name], two[name]), (
            f"{name}: 1 and 2 threads differ by up to {np.abs(one[name] - two[name]).max():.3g}"
        )
