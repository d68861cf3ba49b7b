"""The compiled pooling kernels against their pure-Python twins: max pooling (ties, NaN,
dilation, padding, ceil_mode windows; any in-range indices for the backward pass),
average pooling (count_include_pad, divisor_override, output sizes off the usual formula,
which the kernels accept), adaptive average pooling (outputs larger than the input)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import (
    assert_close,
    both,
    dtypes,
    frozen,
    magnitude,
    outcome,
    pool_cases,
    random_array,
    rng_of,
    same_outcome,
    seeds,
    sentinel,
    threads,
    value_kinds,
    with_specials,
)


@given(
    case=pool_cases(pad_limit="kernel"),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    nan=st.booleans(),
    readonly=st.booleans(),
    n_threads=threads,
)
def test_max_pool2d_forward(case, dtype, seed, kind, nan, readonly, n_threads):
    comp, ref = both("max_pool2d_forward")
    rng = rng_of(seed)
    x = random_array(rng, case.x_shape, dtype, kind)
    x = frozen(with_specials(rng, x, 0.1) if nan else x, readonly)
    args = case.kernel + case.stride + case.pad + case.dil
    results = []
    for kernel, n in ((ref, 1), (comp, n_threads)):
        out, idx = sentinel(case.y_shape, dtype), np.full(case.y_shape, -7, np.int64)
        results.append((outcome(kernel, x, out, idx, *args, n), out, idx))
    (comp_result, got, got_idx), (ref_result, expected, expected_idx) = results[1], results[0]
    if same_outcome("max_pool2d_forward", comp_result, ref_result):
        np.testing.assert_array_equal(got, expected, err_msg=repr(case))
        np.testing.assert_array_equal(got_idx, expected_idx, err_msg=repr(case))


@given(case=pool_cases(pad_limit="kernel"), dtype=dtypes, seed=seeds, kind=value_kinds, n_threads=threads)
def test_max_pool2d_backward(case, dtype, seed, kind, n_threads):
    comp, ref = both("max_pool2d_backward")
    rng = rng_of(seed)
    n, c, h, w = case.x_shape
    grad = random_array(rng, case.y_shape, dtype, kind)
    # any in-range index is valid (overlapping windows send several gradients to one input)
    indices = rng.integers(0, h * w, size=case.y_shape).astype(np.int64)
    expected, got = sentinel(case.x_shape, dtype), sentinel(case.x_shape, dtype)
    ref(grad, indices, expected, 1)
    comp(grad, indices, got, n_threads)
    assert_close(got, expected, dtype, case.y_shape[2] * case.y_shape[3] * magnitude(grad), repr(case))


avg_options = st.fixed_dictionaries(
    {
        "count_include_pad": st.booleans(),
        "divisor_override": st.one_of(st.none(), st.integers(-3, 5).filter(bool)),
        # the kernels take any output size: windows past the padded input average nothing
        "out_delta": st.tuples(st.sampled_from([0, 0, 0, 1, 2, -1]), st.sampled_from([0, 0, 0, 1, 2, -1])),
    }
)


def avg_args(case, options):
    return case.kernel + case.stride + case.pad + (options["count_include_pad"], options["divisor_override"])


def avg_out_shape(case, options):
    return case.y_shape[:2] + tuple(max(0, o + d) for o, d in zip(case.out_hw, options["out_delta"]))


@given(
    case=pool_cases(dilation=False, pad_limit="kernel"),
    options=avg_options,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    readonly=st.booleans(),
    n_threads=threads,
)
def test_avg_pool2d_forward(case, options, dtype, seed, kind, readonly, n_threads):
    comp, ref = both("avg_pool2d_forward")
    x = frozen(random_array(rng_of(seed), case.x_shape, dtype, kind), readonly)
    shape = avg_out_shape(case, options)
    expected, got = sentinel(shape, dtype), sentinel(shape, dtype)
    ref(x, expected, *avg_args(case, options), 1)
    comp(x, got, *avg_args(case, options), n_threads)
    assert_close(got, expected, dtype, case.kernel[0] * case.kernel[1] * magnitude(x), f"{case} {options}")


@given(
    case=pool_cases(dilation=False, pad_limit="kernel"),
    options=avg_options,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    n_threads=threads,
)
def test_avg_pool2d_backward(case, options, dtype, seed, kind, n_threads):
    comp, ref = both("avg_pool2d_backward")
    shape = avg_out_shape(case, options)
    grad = random_array(rng_of(seed), shape, dtype, kind)
    expected, got = sentinel(case.x_shape, dtype), sentinel(case.x_shape, dtype)
    ref(grad, expected, *avg_args(case, options), 1)
    comp(grad, got, *avg_args(case, options), n_threads)
    assert_close(got, expected, dtype, shape[2] * shape[3] * magnitude(grad), f"{case} {options}")


adaptive_shapes = st.tuples(
    st.integers(0, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.integers(0, 9), st.integers(0, 9)
)


@given(shapes=adaptive_shapes, dtype=dtypes, seed=seeds, kind=value_kinds, n_threads=threads)
def test_adaptive_avg_pool2d_forward_and_backward(shapes, dtype, seed, kind, n_threads):
    n, c, h, w, oh, ow = shapes
    rng = rng_of(seed)
    x = random_array(rng, (n, c, h, w), dtype, kind)
    grad = random_array(rng, (n, c, oh, ow), dtype, kind)
    comp, ref = both("adaptive_avg_pool2d_forward")
    expected, got = sentinel((n, c, oh, ow), dtype), sentinel((n, c, oh, ow), dtype)
    ref(x, expected, 1)
    comp(x, got, n_threads)
    assert_close(got, expected, dtype, h * w * magnitude(x), f"forward {shapes}")
    comp, ref = both("adaptive_avg_pool2d_backward")
    expected, got = sentinel((n, c, h, w), dtype), sentinel((n, c, h, w), dtype)
    ref(grad, expected, 1)
    comp(grad, got, n_threads)
    assert_close(got, expected, dtype, (oh + 1) * (ow + 1) * magnitude(grad), f"backward {shapes}")
