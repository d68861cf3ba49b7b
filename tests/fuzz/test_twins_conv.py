"""The compiled conv2d kernels against their pure-Python twins on random valid
convolutions: groups, strides, dilation, explicit and 'same' padding (with the extra
bottom/right row), batch 0/1/2, both dtypes, read-only inputs, caller workspaces, thread
counts, and every internal path the compiled module can be forced onto. (The SIMD path is
not drawn here: each build runs one at a time, so .ci/run repeats the kernel tests with
FASTGRAD_SIMD set to every path this CPU runs.)"""

import contextlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import (
    assert_close,
    both,
    compiled_module,
    conv_cases,
    dtypes,
    frozen,
    magnitude,
    random_array,
    rng_of,
    seeds,
    sentinel,
    threads,
    value_kinds,
)

# Internal paths: None leaves the cost model to choose; True/False force one side.
path_choices = st.fixed_dictionaries(
    {"input_direct": st.sampled_from([None, True, False]), "flat_dot": st.sampled_from([None, True, False])}
)
workspace_modes = st.sampled_from(["none", "exact", "larger"])


@contextlib.contextmanager
def forced_paths(paths):
    """Force the compiled conv module onto the given paths (when it has the hooks)."""
    module = compiled_module("conv")
    force = getattr(module, "_force_paths", None)
    if force is not None:
        force(input_direct=paths["input_direct"], flat_dot=paths["flat_dot"])
    try:
        yield
    finally:
        if force is not None:
            force()


def workspace(kind, case, dtype, n_threads, mode):
    """None, or a NaN-filled workspace of exactly / more than the size the kernel asks."""
    if mode == "none":
        return None
    size_of, _ = both("conv2d_workspace_size")
    size = size_of(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, n_threads)
    assert isinstance(size, int) and size >= 0
    return sentinel(size + (7 if mode == "larger" else 0), dtype)


def arrays(case, dtype, seed, kind, readonly):
    rng = rng_of(seed)
    x = frozen(random_array(rng, case.x_shape, dtype, kind), readonly)
    w = frozen(random_array(rng, case.w_shape, dtype, kind), readonly)
    b = frozen(random_array(rng, case.w_shape[:1], dtype, kind), readonly)
    g = frozen(random_array(rng, case.y_shape, dtype, kind), readonly)
    return x, w, b, g


def unchanged(*pairs):
    for before, after in pairs:
        np.testing.assert_array_equal(before, after, err_msg="a kernel wrote into an input")


@given(
    case=conv_cases(),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    relu=st.booleans(),
    use_bias=st.booleans(),
    readonly=st.booleans(),
    n_threads=threads,
    ws_mode=workspace_modes,
    paths=path_choices,
)
def test_conv2d_forward(case, dtype, seed, kind, relu, use_bias, readonly, n_threads, ws_mode, paths):
    comp, ref = both("conv2d_forward")
    x, w, b, _ = arrays(case, dtype, seed, kind, readonly)
    b = b if use_bias else None
    copies = (x.copy(), w.copy())
    expected = sentinel(case.y_shape, dtype)
    ref(x, w, b, expected, *case.params, relu, None, 1)
    got = sentinel(case.y_shape, dtype)
    with forced_paths(paths):
        comp(x, w, b, got, *case.params, relu, workspace("forward", case, dtype, n_threads, ws_mode), n_threads)
    assert_close(got, expected, dtype, case.depth * magnitude(x, w) + magnitude(b), repr(case))
    unchanged((copies[0], x), (copies[1], w))


@given(
    case=conv_cases(),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    readonly=st.booleans(),
    n_threads=threads,
    ws_mode=workspace_modes,
    paths=path_choices,
)
def test_conv2d_backward_input(case, dtype, seed, kind, readonly, n_threads, ws_mode, paths):
    comp, ref = both("conv2d_backward_input")
    _, w, _, g = arrays(case, dtype, seed, kind, readonly)
    expected = sentinel(case.x_shape, dtype)
    ref(g, w, expected, *case.params, None, 1)
    got = sentinel(case.x_shape, dtype)
    with forced_paths(paths):
        comp(g, w, got, *case.params, workspace("backward_input", case, dtype, n_threads, ws_mode), n_threads)
    assert_close(got, expected, dtype, case.fan_out * magnitude(g, w), repr(case))


@given(
    case=conv_cases(),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    readonly=st.booleans(),
    n_threads=threads,
    ws_mode=workspace_modes,
    paths=path_choices,
)
def test_conv2d_backward_weight(case, dtype, seed, kind, readonly, n_threads, ws_mode, paths):
    comp, ref = both("conv2d_backward_weight")
    x, _, _, g = arrays(case, dtype, seed, kind, readonly)
    expected = sentinel(case.w_shape, dtype)
    ref(x, g, expected, *case.params, None, 1)
    got = sentinel(case.w_shape, dtype)
    with forced_paths(paths):
        comp(x, g, got, *case.params, workspace("backward_weight", case, dtype, n_threads, ws_mode), n_threads)
    n, _, ho, wo = case.y_shape
    assert_close(got, expected, dtype, n * ho * wo * magnitude(x, g), repr(case))


@given(case=conv_cases(), dtype=dtypes, seed=seeds, kind=value_kinds, readonly=st.booleans(), n_threads=threads)
def test_conv2d_backward_bias(case, dtype, seed, kind, readonly, n_threads):
    comp, ref = both("conv2d_backward_bias")
    *_, g = arrays(case, dtype, seed, kind, readonly)
    expected = sentinel(case.w_shape[:1], dtype)
    ref(g, expected, 1)
    got = sentinel(case.w_shape[:1], dtype)
    comp(g, got, n_threads)
    n, _, ho, wo = case.y_shape
    assert_close(got, expected, dtype, n * ho * wo * magnitude(g), repr(case))
