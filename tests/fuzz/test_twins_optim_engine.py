"""The compiled optimizer updates and gradient accumulation against their pure-Python
twins. The optimizer kernels promise the same bits as the reference (same operations
in the same order, no fused multiply-add), so they are compared exactly, over several
steps, several tensors per call (empty ones included), every option. Threaded runs:
test_threads.py."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import both, dtypes, random_array, rng_of, seeds, threads, value_kinds

tensor_shapes = st.lists(st.lists(st.integers(0, 4), max_size=3).map(tuple), max_size=4)
small = st.floats(0, 0.5, allow_nan=False)
unit = st.floats(0, 0.999, allow_nan=False)


def group(rng, shapes, dtype, kind, n_state):
    """Params, grads and n_state state lists of arrays (state starts as small positives)."""
    params = [random_array(rng, s, dtype, kind) for s in shapes]
    grads = [random_array(rng, s, dtype, kind) for s in shapes]
    state = [[random_array(rng, s, dtype, kind) for s in shapes] for _ in range(n_state)]
    for arrays in state:
        for a in arrays:
            np.abs(a, out=a)  # in place: a 0-d array stays an array
    return params, grads, state


def copies(lists):
    return [[a.copy() for a in arrays] for arrays in lists]


def step_both_homes(name, lists, steps, n_threads, call):
    """``steps`` updates of kernel ``name`` in each home on its own copy of ``lists`` (the
    compiled one with ``n_threads`` threads); ``call(kernel, lists, step, n)`` makes the
    call of step 1, 2, ...; after each step both homes must hold the same bits."""
    comp, ref = both(name)
    homes = ((comp, lists, n_threads), (ref, copies(lists), 1))
    for step in range(1, steps + 1):
        for kernel, arrays, n in homes:
            call(kernel, arrays, step, n)
        assert_same_bits(homes[0][1], homes[1][1], f"{name} step {step}")


def assert_same_bits(got_lists, expected_lists, what):
    for role, (got, expected) in enumerate(zip(got_lists, expected_lists)):
        for i, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_array_equal(g, e, err_msg=f"{what}: role {role}, tensor {i}")


@given(
    shapes=tensor_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    steps=st.integers(1, 3),
    lr=small,
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=small,
    weight_decay=small,
    nesterov=st.booleans(),
    maximize=st.booleans(),
    n_threads=threads,
)
def test_sgd_step(
    shapes, dtype, seed, kind, steps, lr, momentum, dampening, weight_decay, nesterov, maximize, n_threads
):
    params, grads, (bufs,) = group(rng_of(seed), shapes, dtype, kind, 1)

    def call(kernel, arrays, step, n):
        p, g, b = arrays
        kernel(p, g, b if momentum else [], lr, momentum, dampening, weight_decay, nesterov, maximize, step == 1, n)

    step_both_homes("sgd_step", [params, grads, bufs], steps, n_threads, call)


@given(
    shapes=tensor_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    steps=st.integers(1, 3),
    lr=small,
    betas=st.tuples(unit, unit),
    eps=st.sampled_from([1e-8, 1e-3, 0.0]),
    weight_decay=small,
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    decoupled=st.booleans(),
    n_threads=threads,
)
def test_adam_step(
    shapes, dtype, seed, kind, steps, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled, n_threads
):
    params, grads, state = group(rng_of(seed), shapes, dtype, kind, 3)

    def call(kernel, arrays, step, n):
        p, g, m, v, vmax = arrays
        kernel(
            p,
            g,
            m,
            v,
            vmax if amsgrad else [],
            step,
            lr,
            betas[0],
            betas[1],
            eps,
            weight_decay,
            amsgrad,
            maximize,
            decoupled,
            n,
        )

    step_both_homes("adam_step", [params, grads] + state, steps, n_threads, call)


@given(
    shapes=tensor_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    steps=st.integers(1, 3),
    lr=small,
    alpha=unit,
    eps=st.sampled_from([1e-8, 1e-3, 0.0]),
    weight_decay=small,
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    centered=st.booleans(),
    maximize=st.booleans(),
    n_threads=threads,
)
def test_rmsprop_step(
    shapes, dtype, seed, kind, steps, lr, alpha, eps, weight_decay, momentum, centered, maximize, n_threads
):
    params, grads, state = group(rng_of(seed), shapes, dtype, kind, 3)
    state[1] = [np.zeros_like(a) for a in state[1]]  # grad_avg starts at zero, as RMSprop's

    def call(kernel, arrays, step, n):
        p, g, sq, ga, buf = arrays
        kernel(
            p,
            g,
            sq,
            ga if centered else [],
            buf if momentum else [],
            lr,
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
            maximize,
            n,
        )

    step_both_homes("rmsprop_step", [params, grads] + state, steps, n_threads, call)


@given(shape=st.lists(st.integers(0, 5), max_size=4).map(tuple), dtype=dtypes, seed=seeds, kind=value_kinds)
def test_accumulate(shape, dtype, seed, kind):
    comp, ref = both("accumulate")
    rng = rng_of(seed)
    dst, src = random_array(rng, shape, dtype, kind), random_array(rng, shape, dtype, kind)
    got, expected = dst.copy(), dst.copy()
    comp(got, src)
    ref(expected, src)
    np.testing.assert_array_equal(got, expected)


@given(
    shapes=tensor_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    steps=st.integers(1, 3),
    lr=st.floats(0, 2, allow_nan=False),
    rho=unit,
    eps=st.sampled_from([1e-6, 1e-3, 0.0]),
    weight_decay=small,
    maximize=st.booleans(),
    n_threads=threads,
)
def test_adadelta_step(shapes, dtype, seed, kind, steps, lr, rho, eps, weight_decay, maximize, n_threads):
    params, grads, state = group(rng_of(seed), shapes, dtype, kind, 2)

    def call(kernel, arrays, step, n):
        kernel(*arrays, lr, rho, eps, weight_decay, maximize, n)

    step_both_homes("adadelta_step", [params, grads] + state, steps, n_threads, call)


@given(
    shapes=tensor_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    steps=st.integers(1, 3),
    lr=small,
    lr_decay=st.sampled_from([0.0, 1e-3, 0.5]),
    eps=st.sampled_from([1e-10, 1e-3, 0.0]),
    weight_decay=small,
    maximize=st.booleans(),
    n_threads=threads,
)
def test_adagrad_step(shapes, dtype, seed, kind, steps, lr, lr_decay, eps, weight_decay, maximize, n_threads):
    params, grads, (sums,) = group(rng_of(seed), shapes, dtype, kind, 1)

    def call(kernel, arrays, step, n):
        kernel(*arrays, step, lr, lr_decay, eps, weight_decay, maximize, n)

    step_both_homes("adagrad_step", [params, grads, sums], steps, n_threads, call)
