"""The compiled smooth activations (GELU both forms, SiLU, ELU, Hardswish, PReLU) and the
layer and group norm kernels against their pure-Python twins: any shape including empty,
NaN, infinities and signed zeros, in place (out is x) for the activations, with and
without affine parameters for the norms, every thread count. Each SIMD path: .ci/run
repeats the kernel tests under FASTGRAD_SIMD."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import (
    RTOL,
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

# (kernel name, extra arguments of forward and backward)
SMOOTH = [
    ("gelu", st.tuples(st.booleans())),
    ("silu", st.just(())),
    ("elu", st.tuples(st.one_of(st.floats(0, 3, allow_nan=False), st.sampled_from([1.0, 0.0])))),
    ("hardswish", st.just(())),
]
any_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def smooth_calls(draw):
    name, extra = draw(st.sampled_from(SMOOTH))
    return name, draw(extra)


@given(
    call=smooth_calls(),
    shape=any_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    specials=st.booleans(),
    in_place=st.booleans(),
    readonly=st.booleans(),
    n_threads=threads,
)
def test_smooth_activations(call, shape, dtype, seed, kind, specials, in_place, readonly, n_threads):
    name, extra = call
    rng = rng_of(seed)
    x = random_array(rng, shape, dtype, kind)
    g = random_array(rng, shape, dtype, kind)
    if specials:
        x, g = with_specials(rng, x), with_specials(rng, g)
    comp, ref = both(f"{name}_forward")
    expected = sentinel(shape, dtype)
    ref(x, expected, *extra, 1)
    got = x.copy() if in_place else sentinel(shape, dtype)
    comp(got if in_place else frozen(x.copy(), readonly), got, *extra, n_threads)
    assert_close(got, expected, dtype, 1.0, f"{name}_forward{extra} {shape}")
    # every backward reads the forward input
    comp, ref = both(f"{name}_backward")
    expected_grad, got_grad = sentinel(shape, dtype), sentinel(shape, dtype)
    ref(x, g, expected_grad, *extra, 1)
    comp(frozen(x.copy(), readonly), frozen(g.copy(), readonly), got_grad, *extra, n_threads)
    # The slopes agree to within RTOL * (|slope| + 1) (the comparison below, with grad_out
    # 1): a slope below RTOL may be 0 in one home (an underflowed intermediate in the far
    # tails) and not in the other, so an infinite grad_out times it is inf or NaN. There
    # each home must give inf or NaN, never a finite number; elsewhere they agree.
    slope = sentinel(shape, dtype)
    ref(x, np.ones(shape, dtype), slope, *extra, 1)
    tails = np.isinf(g) & (np.abs(slope) <= RTOL[np.dtype(dtype)])
    assert not np.isfinite(got_grad[tails]).any(), f"{name}_backward{extra}: finite grad for an infinite grad_out"
    got_grad[tails] = expected_grad[tails] = 0
    assert_close(got_grad, expected_grad, dtype, magnitude(g), f"{name}_backward{extra} {shape}")


@given(
    shape=st.tuples(st.integers(0, 3), st.integers(1, 5), st.integers(0, 6)),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    specials=st.booleans(),
    n_threads=threads,
)
def test_prelu(shape, dtype, seed, kind, specials, n_threads):
    rng = rng_of(seed)
    x = random_array(rng, shape, dtype, kind)
    g = random_array(rng, shape, dtype, kind)
    w = random_array(rng, shape[1:2], dtype, kind)
    if specials:
        x = with_specials(rng, x)
    comp, ref = both("prelu_forward")
    expected, got = sentinel(shape, dtype), sentinel(shape, dtype)
    ref(x, w, expected, 1)
    comp(x, w, got, n_threads)
    assert_close(got, expected, dtype, 1.0, f"prelu_forward {shape}")
    comp, ref = both("prelu_backward")
    homes = {}
    for home, kernel, n in (("compiled", comp, n_threads), ("reference", ref, 1)):
        gi, gw = sentinel(shape, dtype), sentinel(shape[1:2], dtype)
        kernel(x, w, g, gi, gw, n)
        homes[home] = (gi, gw)
    (gi_c, gw_c), (gi_r, gw_r) = homes["compiled"], homes["reference"]
    assert_close(gi_c, gi_r, dtype, magnitude(g, w), f"prelu grad_input {shape}")
    # grad_weight sums N * S products
    assert_close(gw_c, gw_r, dtype, shape[0] * shape[2] * magnitude(g, x), f"prelu grad_weight {shape}")


def _norm_case(rng, shape, dtype, kind, affine, offset):
    x = random_array(rng, shape, dtype, kind) + dtype(offset)
    g = random_array(rng, shape, dtype, kind)
    width = shape[1]
    w = random_array(rng, (width,), dtype, kind) if affine else None
    b = random_array(rng, (width,), dtype, kind) if affine else None
    return x, g, w, b


def _run_norm(name, x, g, w, b, stats_shape, params_shape, extra, eps, n_threads):
    """Forward then backward in both homes; {home: (out, mean, rstd, gi, gw, gb)}."""
    dtype = x.dtype.type
    results = {}
    (fwd_c, fwd_r), (bwd_c, bwd_r) = both(f"{name}_forward"), both(f"{name}_backward")
    kernels = {"compiled": (fwd_c, bwd_c, n_threads), "reference": (fwd_r, bwd_r, 1)}
    for home, (fwd, bwd, n) in kernels.items():
        out, mean, rstd = sentinel(x.shape, dtype), sentinel(stats_shape, dtype), sentinel(stats_shape, dtype)
        fwd(x, w, b, *extra, eps, out, mean, rstd, n)
        gi = sentinel(x.shape, dtype)
        gw = sentinel(params_shape, dtype) if w is not None else None
        gb = sentinel(params_shape, dtype) if w is not None else None
        bwd(x, g, w, mean, rstd, *extra, gi, gw, gb, n)
        results[home] = (out, mean, rstd, gi, gw, gb)
    return results


def _assert_norms_close(results, dtype, group_size, count, g, w, what):
    """Rounding of a normalization: the mean and variance are sums of ``group_size``
    terms; the input gradient subtracts two such sums of g*w (and g*w*xhat) from g*w,
    times rstd; the parameter gradients sum ``count`` terms."""
    (oc, mc, rc, gic, gwc, gbc), (orf, mr, rr, gir, gwr, gbr) = results["compiled"], results["reference"]
    rstd = magnitude(rr)
    xhat = max(1.0, np.sqrt(group_size))  # |x - mean| * rstd is at most sqrt(group size)
    assert_close(mc, mr, dtype, magnitude(mr) + 1.0, f"{what} mean")
    assert_close(rc, rr, dtype, group_size * rstd, f"{what} rstd")
    assert_close(oc, orf, dtype, group_size * xhat * (magnitude(w) + 1.0) + magnitude(orf), f"{what} out")
    assert_close(gic, gir, dtype, group_size * xhat * rstd * magnitude(g, w), f"{what} grad_input")
    if gwc is not None:
        assert_close(gwc, gwr, dtype, count * xhat * magnitude(g) * group_size, f"{what} grad_weight")
        assert_close(gbc, gbr, dtype, count * magnitude(g), f"{what} grad_bias")


eps_values = st.sampled_from([1e-5, 1e-3, 0.1])
offsets = st.sampled_from([0.0, 10.0])  # far from zero: the variance is a difference of large sums


@given(
    shape=st.tuples(st.integers(0, 5), st.integers(0, 40)),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    affine=st.booleans(),
    eps=eps_values,
    offset=offsets,
    n_threads=threads,
)
def test_layer_norm(shape, dtype, seed, kind, affine, eps, offset, n_threads):
    x, g, w, b = _norm_case(rng_of(seed), shape, dtype, kind, affine, offset)
    results = _run_norm("layer_norm", x, g, w, b, (shape[0],), (shape[1],), (), eps, n_threads)
    _assert_norms_close(results, dtype, shape[1], shape[0], g, w, f"layer_norm {shape}")


@given(
    n=st.integers(0, 3),
    groups=st.integers(1, 4),
    per_group=st.integers(1, 3),
    spatial=st.integers(0, 9),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    affine=st.booleans(),
    eps=eps_values,
    offset=offsets,
    n_threads=threads,
)
def test_group_norm(n, groups, per_group, spatial, dtype, seed, kind, affine, eps, offset, n_threads):
    c = groups * per_group
    shape = (n, c, spatial)
    x, g, w, b = _norm_case(rng_of(seed), shape, dtype, kind, affine, offset)
    results = _run_norm("group_norm", x, g, w, b, (n, groups), (c,), (groups,), eps, n_threads)
    _assert_norms_close(results, dtype, per_group * spatial, n * spatial, g, w, f"group_norm {shape} G={groups}")
