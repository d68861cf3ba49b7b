"""The same seed and thread count give bit-identical weights, run after run, in-process and
across processes; and (a property of fastgrad's fixed reduction order) across thread counts."""
import os
import subprocess
import sys

import pytest

import fastgrad

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _lenet_run as run  # noqa: E402

STEPS = 200


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
    out = subprocess.run([sys.executable, os.path.join(HERE, "_lenet_run.py"), str(STEPS), "2"],
                         capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert out == mine


def test_bit_identical_across_thread_counts():
    # Every kernel splits work statically and reduces in a fixed order that does not depend
    # on the number of threads, so 1 and 2 threads agree to the bit.
    assert _digest_in_process(1) == _digest_in_process(2)
    assert _digest_in_process(1, "adam") == _digest_in_process(2, "adam")
