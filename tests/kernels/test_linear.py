"""Linear kernels: every built compiled variant (baseline, with its AVX2 and portable
kernels, and x86-64-v3 on CPUs that have it) against the pure-Python reference on a grid
of shapes that reaches every code path (dot-product forward for small batches, packed
panels, several depth blocks, narrow column blocks, empty dimensions), both dtypes;
threaded against single-threaded; big shapes against numpy; bad arrays rejected by both
homes."""

import numpy as np
import pytest
from simd_builds import at_level, builds

from fastgrad.reference import linear as reference

DTYPES = (np.float32, np.float64)
# (N, in_features, out_features): batch 1 and small batches (dot-product forward),
# larger ones (packed), depth > 256 (two depth blocks), widths that are not multiples
# of 4, 8 or 16, LeNet's and CIFAR-small's last layers, empty dimensions.
SHAPES = [
    (1, 1, 1),
    (1, 7, 5),
    (2, 3, 17),
    (4, 33, 9),
    (5, 16, 16),
    (7, 19, 33),
    (13, 300, 11),
    (6, 260, 24),
    (9, 84, 10),
    (3, 128, 10),
    (20, 12, 40),
    (0, 4, 3),
    (3, 0, 5),
    (4, 6, 0),
]


# every build present at every SIMD level it runs here: the baseline build's portable
# 128-bit kernels and its AVX2 ones, the x86-64-v3 build's
VARIANTS = builds("linear", levels=(0, 1))


@pytest.fixture(params=VARIANTS or ["none"])
def compiled(request):
    if request.param == "none":
        pytest.skip("the compiled linear kernels are not built")
    with at_level(request.param) as module:
        yield module


def data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_product_close(actual, expected, magnitude, dtype):
    """Elementwise |actual - expected| within a relative bound of the sum of |terms|
    (the scale rounding errors of a dot product live on, whatever the summation order)."""
    rel = 1e-5 if dtype == np.float32 else 1e-12
    assert actual.shape == expected.shape
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = rel * (np.abs(expected) + magnitude) + (1e-30 if dtype == np.float64 else 1e-12)
    worst = np.argmax(err - bound) if err.size else 0
    assert not err.size or (err <= bound).all(), (
        f"mismatch at {np.unravel_index(worst, err.shape)}: {actual.flat[worst]!r} vs {expected.flat[worst]!r}"
    )


def forward(module, x, w, b, relu, n_threads=1):
    out = np.full((x.shape[0], w.shape[0]), np.nan, x.dtype)
    module.linear_forward(x, w, b, out, relu, n_threads)
    return out


def backward(module, x, w, g, n_threads=1):
    gx = np.full(x.shape, np.nan, x.dtype)
    gw = np.full(w.shape, np.nan, x.dtype)
    gb = np.full(w.shape[0], np.nan, x.dtype)
    module.linear_backward_input(g, w, gx, n_threads)
    module.linear_backward_weight(x, g, gw, n_threads)
    module.linear_backward_bias(g, gb, n_threads)
    return gx, gw, gb


# --------------------------------------------------------------------------- against reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(compiled, shape, dtype):
    n, k, o = shape
    x, w, b = data((n, k), dtype, 1), data((o, k), dtype, 2), data(o, dtype, 3)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + np.abs(b)
    for bias in (b, None):
        for relu in (False, True):
            assert_product_close(
                forward(compiled, x, w, bias, relu), forward(reference, x, w, bias, relu), magnitude, dtype
            )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference(compiled, shape, dtype):
    assert_backward_matches_reference(compiled, shape, dtype, seed=4)


def assert_backward_matches_reference(compiled, shape, dtype, seed):
    n, k, o = shape
    x, w, g = data((n, k), dtype, seed), data((o, k), dtype, seed + 1), data((n, o), dtype, seed + 2)
    x64, w64, g64 = (np.abs(a.astype(np.float64)) for a in (x, w, g))
    magnitudes = (g64 @ w64, g64.T @ x64, g64.sum(axis=0))
    for c, r, m in zip(backward(compiled, x, w, g), backward(reference, x, w, g), magnitudes):
        assert_product_close(c, r, m, dtype)


# Backward products of depth <= 16 (a batch of at most 16, in the weight gradient; at
# most 16 output features, in the input gradient) skip packing: register tiles of 4 rows
# of C by 2 vectors, then one vector, then single columns; rows left over in 3, 2, 1.
# So do input gradients of a batch of 1 or 2 up to depth 256 (tiles of 8 or 4 vectors).
# Depths on both sides of each switch, widths that leave every kind of remainder.
SHALLOW_SHAPES = [
    (n, k, o) for n in (1, 2, 3, 15, 16, 17) for k, o in ((400, 120), (37, 7), (5, 1), (16, 10), (17, 17), (8, 3))
]
SHALLOW_SHAPES += [(n, k, o) for n in (1, 2, 3) for k, o in ((75, 256), (70, 257), (129, 40))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHALLOW_SHAPES)
def test_shallow_backward_matches_reference(compiled, shape, dtype):
    assert_backward_matches_reference(compiled, shape, dtype, seed=7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one_weight_gradient_is_the_rounded_outer_product(compiled, dtype):
    """With one row, each element is 0 + g[i] * x[j] rounded once (fused or not), so the
    result is known exactly, signed zeros included (0 + -0 is +0)."""
    x, g = data((1, 45), dtype, 10), data((1, 13), dtype, 11)
    x[0, ::4] = -0.0
    g[0, 5] = 0.0
    gw = np.full((13, 45), np.nan, dtype)
    compiled.linear_backward_weight(x, g, gw, 1)
    expected = (g[0][:, None] * x[0][None, :]) + dtype(0)
    assert gw.tobytes() == expected.tobytes()


@pytest.mark.parametrize("n", [1, 3, 16])
def test_shallow_backward_with_output_sharing_an_input(compiled, n):
    """Outputs may be inputs (nothing refuses it): such calls keep the packed path's order
    of reads and writes, which gives the reference's result."""
    x, g = data((n, 20), np.float32, 12), data((n, n), np.float32, 13)
    expected = backward(reference, x, data((n, 20), np.float32, 14), g)[1]
    compiled.linear_backward_weight(x, g, x, 1)  # grad_weight (n, 20) is x
    assert_product_close(x, expected, np.abs(g.T) @ np.abs(data((n, 20), np.float32, 12)), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 5, 40])
def test_an_output_sharing_an_input_gives_the_unshared_result(compiled, n, dtype):
    """out is x (k == out_features): the small-batch forward reads x while it writes out;
    found by the long fuzz profile at (N, in, out) = (1, 5, 5), where out[0, 4] came from
    an x already overwritten. Inputs sharing an output's memory are read from a copy."""
    k = 5
    x, w, b, g = data((n, k), dtype, 1), data((k, k), dtype, 2), data(k, dtype, 3), data((n, k), dtype, 4)
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + np.abs(b)
    expected = forward(reference, x, w, b, False)
    compiled.linear_forward(x, w, b, x, False, 1)  # out is x
    assert_product_close(x, expected, magnitude, dtype)
    expected_gx = backward(reference, g, w, g)[0]
    compiled.linear_backward_input(g, w, g, 1)  # grad_x is grad_out
    assert_product_close(g, expected_gx, magnitude, dtype)
    w2 = w.copy()
    expected = forward(reference, w2, w2, b, False)
    compiled.linear_forward(w2, w2, b, w2, False, 1)  # out is x and weight
    assert_product_close(w2, expected, np.abs(w) @ np.abs(w).T + np.abs(b), dtype)


def test_any_positive_thread_count_is_accepted(compiled):
    """Thread counts beyond a C long (2**70 once raised OverflowError) are clamped, as
    the reference accepts them."""
    x, w, b, g = (
        data((3, 4), np.float32, 1),
        data((5, 4), np.float32, 2),
        data(5, np.float32, 3),
        data((3, 5), np.float32, 4),
    )
    magnitude = np.abs(x) @ np.abs(w).T + np.abs(b)
    for n_threads in (2**31, 2**70, np.uint64(2**64 - 1)):
        assert_product_close(
            forward(compiled, x, w, b, False, n_threads), forward(reference, x, w, b, False), magnitude, np.float32
        )
        for got, want in zip(backward(compiled, x, w, g, n_threads), backward(reference, x, w, g)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_relu_keeps_nan_and_zeroes_negatives(compiled):
    for module in (compiled, reference):
        for n in (1, 8):  # the dot-product path and the packed path
            x = np.ones((n, 3), np.float32)
            w = np.array([[1, 1, 1], [-1, -1, -1], [np.nan, 0, 0]], np.float32)
            out = forward(module, x, w, None, True)
            assert (out[:, 0] == 3).all() and (out[:, 1] == 0).all() and np.isnan(out[:, 2]).all()


def test_read_only_inputs_are_accepted(compiled):
    x, w, b = data((3, 5), np.float32, 0), data((4, 5), np.float32, 1), data(4, np.float32, 2)
    for a in (x, w, b):
        a.flags.writeable = False
    np.testing.assert_allclose(forward(compiled, x, w, b, False), x @ w.T + b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- big shapes, threads


def matmul64(a, b):
    """a @ b in float64 without BLAS: numpy's BLAS threads, spinning after a call, would
    compete with the kernels' OpenMP threads for the cores."""
    return np.einsum("ik,kj->ij", a.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(256, 400, 120), (40, 1100, 128), (4, 4100, 130), (300, 700, 10), (100, 700, 70)])
def test_big_shapes_match_float64_and_threads_agree(compiled, shape, dtype):
    """Above the threading threshold (2**21 multiply-adds); threads split columns (or
    rows, for narrow outputs; the dot-product path for a batch of 4) so every element
    is computed the same way: results are bit-identical."""
    n, k, o = shape
    x, w, b, g = data((n, k), dtype, 7), data((o, k), dtype, 8), data(o, dtype, 9), data((n, o), dtype, 10)
    one = forward(compiled, x, w, b, True, 1)
    np.testing.assert_array_equal(forward(compiled, x, w, b, True, 2), one)
    assert_product_close(one, np.maximum(matmul64(x, w.T) + b, 0), matmul64(np.abs(x), np.abs(w).T), dtype)
    grads_one = backward(compiled, x, w, g, 1)
    for a, c in zip(grads_one, backward(compiled, x, w, g, 2)):
        np.testing.assert_array_equal(a, c)
    expected = (matmul64(g, w), matmul64(g.T, x), g.astype(np.float64).sum(axis=0))
    magnitudes = (
        matmul64(np.abs(g), np.abs(w)),
        matmul64(np.abs(g).T, np.abs(x)),
        np.abs(g.astype(np.float64)).sum(axis=0),
    )
    for a, e, m in zip(grads_one, expected, magnitudes):
        assert_product_close(a, e, m, dtype)


# --------------------------------------------------------------------------- bad input


def _homes(compiled):
    return [compiled, reference]


def _ok(dtype=np.float32):
    return data((3, 5), dtype, 0), data((4, 5), dtype, 1), data(4, dtype, 2), np.empty((3, 4), dtype)


@pytest.mark.parametrize("home", ["compiled", "reference"])
def test_forward_rejects_bad_arrays(compiled, home):
    m = compiled if home == "compiled" else reference
    x, w, b, out = _ok()
    cases = [
        ((x.astype(np.int64), w, b, out), TypeError, "float32 or float64"),
        ((x, w.astype(np.float64), b, out), TypeError, "weight has dtype float64"),
        ((x, w, b.astype(np.float64), out), TypeError, "bias has dtype float64"),
        ((x, w, b, out.astype(np.float64)), TypeError, "out has dtype float64"),
        ((x.tolist(), w, b, out), TypeError, "x must be a numpy array"),
        ((x[None], w, b, out), ValueError, "x must have 2 dimensions"),
        ((x, w, b[None], out), ValueError, "bias must have 1 dimensions"),
        ((np.asfortranarray(data((3, 5), np.float32, 3)), w, b, out), ValueError, "C-contiguous"),
        ((x, data((4, 6), np.float32, 0), b, out), ValueError, "x has 5 features"),
        ((x, w, b, np.empty((3, 5), np.float32)), ValueError, r"out has shape \(3, 5\)"),
        ((x, w, data(5, np.float32, 0), out), ValueError, r"bias has shape \(5,\)"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            m.linear_forward(*args, False, 1)
    read_only = np.empty((3, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.linear_forward(x, w, b, read_only, False, 1)
    for bad_threads, error in (
        (0, ValueError),
        (-1, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        (None, TypeError),
    ):
        with pytest.raises(error, match="n_threads must be a positive integer"):
            m.linear_forward(x, w, b, out, False, bad_threads)


@pytest.mark.parametrize("home", ["compiled", "reference"])
def test_backward_rejects_bad_arrays(compiled, home):
    m = compiled if home == "compiled" else reference
    x, w, _, _ = _ok()
    g = data((3, 4), np.float32, 5)
    with pytest.raises(ValueError, match="weight has 4 output features|grad_out has 3 features"):
        m.linear_backward_input(data((3, 3), np.float32, 0), w, np.empty((3, 5), np.float32), 1)
    with pytest.raises(ValueError, match=r"grad_x has shape \(3, 4\)"):
        m.linear_backward_input(g, w, np.empty((3, 4), np.float32), 1)
    with pytest.raises(TypeError, match="grad_x has dtype float64"):
        m.linear_backward_input(g, w, np.empty((3, 5), np.float64), 1)
    with pytest.raises(ValueError, match="x has 3 rows"):
        m.linear_backward_weight(x, data((2, 4), np.float32, 0), np.empty((4, 5), np.float32), 1)
    with pytest.raises(ValueError, match=r"grad_weight has shape \(5, 4\)"):
        m.linear_backward_weight(x, g, np.empty((5, 4), np.float32), 1)
    with pytest.raises(ValueError, match=r"grad_bias has shape \(3,\)"):
        m.linear_backward_bias(g, np.empty(3, np.float32), 1)
    with pytest.raises(ValueError, match="grad_out must be C-contiguous"):
        m.linear_backward_bias(data((4, 3), np.float32, 0).T, np.empty(3, np.float32), 1)
    with pytest.raises(ValueError, match="must have 1 dimensions"):
        m.linear_backward_bias(g, np.empty((4, 1), np.float32), 1)


# --------------------------------------------------------------------------- fused backward


def fused(module, x, g, relu_out, w, outputs=(True, True, True)):
    gx = np.full(x.shape, np.nan, x.dtype) if outputs[0] else None
    gw = np.full(w.shape, np.nan, x.dtype) if outputs[1] else None
    gb = np.full(w.shape[0], np.nan, x.dtype) if outputs[2] else None
    module.linear_backward(x, g, relu_out, w, gx, gw, gb, 1)
    return gx, gw, gb


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_fused_backward_matches_the_three_products(compiled, shape, dtype, relu):
    """linear_backward = relu mask, then linear_backward_input/_weight/_bias: against the
    reference twin of both, and numpy in float64; the bias gradient bit for bit (same
    order of additions) and the others within a product's rounding."""
    n, k, o = shape
    x, w, g = data((n, k), dtype, 1), data((o, k), dtype, 2), data((n, o), dtype, 3)
    y = data((n, o), dtype, 4) if relu else None
    if relu and y.size:
        y.flat[0] = 0.0  # a ReLU output of exactly zero passes no gradient
    masked = np.where(y > 0, g, 0).astype(dtype) if relu else g
    separate = backward(compiled, x, w, np.ascontiguousarray(masked))
    for home in (compiled, reference):
        got = fused(home, x, g, y, w)
        want64 = (
            masked.astype(np.float64) @ w.astype(np.float64),
            masked.T.astype(np.float64) @ x.astype(np.float64),
            masked.astype(np.float64).sum(axis=0),
        )
        mags = (
            np.abs(masked) @ np.abs(w.astype(np.float64)),
            np.abs(masked.T) @ np.abs(x.astype(np.float64)),
            np.abs(masked).sum(axis=0),
        )
        for a, want, mag in zip(got, want64, mags):
            assert_product_close(a, want, mag, dtype)
        if home is compiled:
            np.testing.assert_array_equal(got[2], separate[2])


def test_fused_backward_writes_only_the_outputs_given(compiled):
    x, w, g = data((2, 6), np.float32, 1), data((3, 6), np.float32, 2), data((2, 3), np.float32, 3)
    full = fused(compiled, x, g, None, w)
    for mask in [(True, False, False), (False, True, False), (False, False, True), (False, False, False)]:
        got = fused(compiled, x, g, None, w, mask)
        for a, want, wanted in zip(got, full, mask):
            assert (a is None) if not wanted else np.array_equal(a, want)


def test_fused_backward_relu_mask_drops_nan_outputs_and_keeps_nan_gradients(compiled):
    x, w = np.ones((1, 2), np.float32), np.ones((2, 2), np.float32)
    g = np.array([[np.nan, 2.0]], np.float32)
    y = np.array([[1.0, np.nan]], np.float32)  # NaN output: not positive, no gradient
    gx, gw, gb = fused(compiled, x, g, y, w)
    assert np.isnan(gb[0]) and gb[1] == 0 and np.isnan(gw[0]).all() and (gw[1] == 0).all()
    assert np.isnan(gx).all()


def test_fused_backward_with_outputs_sharing_inputs_gives_the_unshared_result(compiled):
    x, w, g = data((2, 4), np.float32, 1), data((4, 4), np.float32, 2), data((2, 4), np.float32, 3)
    want = fused(compiled, x.copy(), g.copy(), None, w.copy())
    gx = g  # grad_x (2, 4) written over grad_out (2, 4)
    gw, gb = np.empty((4, 4), np.float32), np.empty(4, np.float32)
    compiled.linear_backward(x, g, None, w, gx, gw, gb, 1)
    np.testing.assert_allclose(gx, want[0], rtol=1e-6)
    np.testing.assert_allclose(gw, want[1], rtol=1e-6)
    np.testing.assert_allclose(gb, want[2], rtol=1e-6)


@pytest.mark.parametrize("home", ["compiled", "reference"])
def test_fused_backward_rejects_bad_arrays(compiled, home):
    m = compiled if home == "compiled" else reference
    x, w = data((3, 5), np.float32, 0), data((4, 5), np.float32, 1)
    g, y = data((3, 4), np.float32, 2), data((3, 4), np.float32, 3)
    gx, gw, gb = np.empty((3, 5), np.float32), np.empty((4, 5), np.float32), np.empty(4, np.float32)
    cases = [
        ((x, g, y, w, gx, gw, gb.astype(np.float64), 1), TypeError, "grad_bias has dtype float64"),
        ((x, g.astype(np.float64), y, w, gx, gw, gb, 1), TypeError, "grad_out has dtype float64"),
        ((x, g, y[:, :3], w, gx, gw, gb, 1), ValueError, "relu_out must be C-contiguous|relu_out has shape"),
        ((x, g, np.ones((3, 3), np.float32), w, gx, gw, gb, 1), ValueError, r"relu_out has shape \(3, 3\)"),
        ((x, g[:2], y, w, gx, gw, gb, 1), ValueError, r"grad_out has shape \(2, 4\)"),
        ((x, g, y, w[:, :4].copy(), gx, gw, gb, 1), ValueError, "x has 5 features"),
        ((x, g, y, w, np.empty((3, 4), np.float32), gw, gb, 1), ValueError, r"grad_x has shape \(3, 4\)"),
        ((x, g, y, w, gx, np.empty((5, 4), np.float32), gb, 1), ValueError, r"grad_weight has shape \(5, 4\)"),
        ((x, g, y, w, gx, gw, np.empty(3, np.float32), 1), ValueError, r"grad_bias has shape \(3,\)"),
        ((x, g, y, w, gx, gw, gb, 0), ValueError, "n_threads must be a positive integer"),
        ((x.tolist(), g, y, w, gx, gw, gb, 1), TypeError, "x must be a numpy array"),
        (
            (x, g, y, w, gw.reshape(-1)[:15].reshape(3, 5), gw, gb, 1),
            ValueError,
            "outputs grad_x and grad_weight share memory",
        ),
    ]
    read_only = np.empty((4, 5), np.float32)
    read_only.flags.writeable = False
    cases.append(((x, g, y, w, gx, read_only, gb, 1), ValueError, "read-only"))
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            m.linear_backward(*args)
