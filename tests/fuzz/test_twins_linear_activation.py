"""The compiled linear and activation kernels against their pure-Python twins: empty
and odd matrix sizes (the gemm path above 4 rows, the dot path below), bias and fused
ReLU; activations on any shape including empty, NaN, infinities and signed zeros, in
place (out is x). Threaded runs: test_threads.py; each SIMD path: .ci/run repeats the
kernel tests under FASTGRAD_SIMD."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import (
    assert_close,
    both,
    dtypes,
    frozen,
    magnitude,
    random_array,
    rng_of,
    seeds,
    sentinel,
    threads,
    value_kinds,
    with_specials,
)

matrix_sizes = st.tuples(st.integers(0, 12), st.integers(0, 9), st.integers(0, 9))


@given(
    sizes=matrix_sizes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    use_bias=st.booleans(),
    relu=st.booleans(),
    readonly=st.booleans(),
    n_threads=threads,
)
def test_linear_kernels(sizes, dtype, seed, kind, use_bias, relu, readonly, n_threads):
    n, k, o = sizes
    rng = rng_of(seed)
    x = frozen(random_array(rng, (n, k), dtype, kind), readonly)
    w = frozen(random_array(rng, (o, k), dtype, kind), readonly)
    b = frozen(random_array(rng, (o,), dtype, kind), readonly) if use_bias else None
    g = frozen(random_array(rng, (n, o), dtype, kind), readonly)
    calls = [  # kernel, arguments before the output, output shape, extra arguments, scale
        ("linear_forward", (x, w, b), (n, o), (relu,), k * magnitude(x, w) + magnitude(b)),
        ("linear_backward_input", (g, w), (n, k), (), o * magnitude(g, w)),
        ("linear_backward_weight", (x, g), (o, k), (), n * magnitude(x, g)),
        ("linear_backward_bias", (g,), (o,), (), n * magnitude(g)),
    ]
    for name, inputs, shape, extra, scale in calls:
        comp, ref = both(name)
        expected, got = sentinel(shape, dtype), sentinel(shape, dtype)
        ref(*inputs, expected, *extra, 1)
        comp(*inputs, got, *extra, n_threads)
        assert_close(got, expected, dtype, scale, f"{name} n={n} k={k} o={o}")
    # all three gradients in one pass, with the forward's ReLU output as the mask or not
    y = frozen(random_array(rng, (n, o), dtype, kind), readonly) if relu else None
    comp, ref = both("linear_backward")
    shapes = [(n, k), (o, k), (o,)]
    expected = [sentinel(s, dtype) for s in shapes]
    got = [sentinel(s, dtype) for s in shapes]
    ref(x, g, y, w, *expected, 1)
    comp(x, g, y, w, *got, n_threads)
    for name, a, b, scale in zip(
        ("grad_x", "grad_weight", "grad_bias"),
        got,
        expected,
        (o * magnitude(g, w), n * magnitude(x, g), n * magnitude(g)),
    ):
        assert_close(a, b, dtype, scale, f"linear_backward {name} n={n} k={k} o={o}")


ELEMENTWISE = ["relu", "leaky_relu", "sigmoid", "tanh"]
any_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
slopes = st.one_of(st.floats(-3, 3, allow_nan=False), st.sampled_from([0.0, 0.01, 1.0, -1.0]))


@given(
    name=st.sampled_from(ELEMENTWISE),
    shape=any_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    specials=st.booleans(),
    in_place=st.booleans(),
    slope=slopes,
    n_threads=threads,
)
def test_elementwise_activations(name, shape, dtype, seed, kind, specials, in_place, slope, n_threads):
    rng = rng_of(seed)
    x = random_array(rng, shape, dtype, kind)
    g = random_array(rng, shape, dtype, kind)
    if specials:
        x, g = with_specials(rng, x), with_specials(rng, g)
    slope_arg = (slope,) if name == "leaky_relu" else ()
    comp, ref = both(f"{name}_forward")
    expected = sentinel(shape, dtype)
    ref(x, expected, *slope_arg, 1)
    got = x.copy() if in_place else sentinel(shape, dtype)
    comp(got if in_place else x, got, *slope_arg, n_threads)
    assert_close(got, expected, dtype, 1.0, f"{name}_forward {shape}")
    # leaky_relu's backward reads the forward input, the others the forward output
    saved = x if name == "leaky_relu" else expected
    comp, ref = both(f"{name}_backward")
    expected_grad, got_grad = sentinel(shape, dtype), sentinel(shape, dtype)
    ref(saved, g, expected_grad, *slope_arg, 1)
    comp(saved, g, got_grad, *slope_arg, n_threads)
    assert_close(got_grad, expected_grad, dtype, magnitude(g), f"{name}_backward {shape}")


row_shapes = st.tuples(st.integers(0, 6), st.integers(0, 40))


@given(
    log=st.booleans(),
    shape=row_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    large=st.booleans(),
    in_place=st.booleans(),
    n_threads=threads,
)
def test_softmax_rows(log, shape, dtype, seed, kind, large, in_place, n_threads):
    name = "log_softmax" if log else "softmax"
    rng = rng_of(seed)
    x = random_array(rng, shape, dtype, kind) * (dtype(1e4) if large else dtype(1))
    g = random_array(rng, shape, dtype, kind)
    comp, ref = both(f"{name}_forward")
    expected = sentinel(shape, dtype)
    ref(x, expected, 1)
    got = x.copy() if in_place else sentinel(shape, dtype)
    comp(got if in_place else x, got, n_threads)
    # log_softmax subtracts a log-sum-exp from each logit: errors scale with the logits
    assert_close(got, expected, dtype, 1.0 + (magnitude(x) if log else 0.0), f"{name} {shape}")
    assert np.isfinite(got).all(), f"{name}: non-finite output for finite logits"
    comp, ref = both(f"{name}_backward")
    expected_grad, got_grad = sentinel(shape, dtype), sentinel(shape, dtype)
    ref(expected, g, expected_grad, 1)
    comp(expected, g, got_grad, n_threads)
    assert_close(got_grad, expected_grad, dtype, shape[1] * magnitude(g), f"{name}_backward")
