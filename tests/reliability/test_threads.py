"""Kernels release the GIL: two Python threads training two separate models at once each get
exactly the weights they get alone, and changing the thread count from another Python thread
never corrupts a running kernel."""

import os
import sys
import threading

import numpy as np

import fastgrad

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lenet_run as run  # noqa: E402

STEPS = 60


def _train_alone(seed, data_seed):
    model, opt = run.build(seed)
    xs, ys = run.make_batches(8, 8, seed=data_seed)
    run.train(model, opt, xs, ys, STEPS)
    return run.weights(model)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_two_threads_two_models_match_solo_runs():
    solo = [_train_alone(10, 1), _train_alone(20, 2)]
    # Build both models before starting the threads: initialization draws from the shared RNG.
    jobs = []
    for seed, data_seed in ((10, 1), (20, 2)):
        model, opt = run.build(seed)
        jobs.append((model, opt, run.make_batches(8, 8, seed=data_seed)))
    errors = []

    def work(model, opt, data):
        try:
            run.train(model, opt, *data, STEPS)
        except Exception as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (model, _, _), expected in zip(jobs, solo):
        _assert_same(run.weights(model), expected)


def test_set_num_threads_from_another_thread_is_harmless():
    expected = _train_alone(30, 3)
    model, opt = run.build(30)
    xs, ys = run.make_batches(8, 8, seed=3)
    stop = threading.Event()
    before = fastgrad.get_num_threads()

    def toggle():
        n = 0
        while not stop.is_set():
            fastgrad.set_num_threads(1 + n % 2)
            n += 1

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        run.train(model, opt, xs, ys, STEPS)
    finally:
        stop.set()
        toggler.join()
        fastgrad.set_num_threads(before)
    # Results do not depend on the thread count (see test_determinism), so any interleaving
    # of thread counts must still give the solo run's weights exactly.
    _assert_same(run.weights(model), expected)
