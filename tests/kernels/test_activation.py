"""Activation kernels: compiled against the pure-Python reference on a grid of shapes and
both dtypes, threaded against single-threaded, and bad arrays rejected by both homes."""

import importlib
import re

import numpy as np
import pytest

from fastgrad import kernels
from fastgrad.reference import activation as reference

ELEMENTWISE = ("relu", "sigmoid", "tanh")
SOFTMAX = ("softmax", "log_softmax")
DTYPES = (np.float32, np.float64)
SHAPES = [(1,), (7,), (3, 5), (2, 3, 4), (1, 1, 1, 9), (0,), (4, 0)]
ROW_SHAPES = [(1, 1), (1, 7), (5, 3), (2, 33), (17, 4), (0, 3), (3, 0)]
BIG = 70_000  # above the compiled kernels' threading thresholds
BIG_ROWS = (130, 129)  # rows * cols above the softmax threading threshold


@pytest.fixture(scope="module")
def compiled():
    pkg = "fastgrad._ext.v3" if kernels.simd_variant == "v3" else "fastgrad._ext"
    try:
        return importlib.import_module(pkg + "._activation")
    except ImportError:
        pytest.skip("the compiled activation kernels are not built")


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


def sample(shape, dtype, seed=0, scale=4.0):
    """Random values plus the edge cases every kernel must survive."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    flat = x.reshape(-1)
    specials = [0.0, -0.0, 1e4, -1e4, 88.0, -104.0, 20.0, -20.0]
    flat[: min(len(specials), flat.size)] = specials[: flat.size]
    return x.astype(dtype)


def run_forward(module, name, x, *extra):
    out = np.full(x.shape, np.nan, x.dtype)
    getattr(module, name + "_forward")(x, out, *extra)
    return out


def run_backward(module, name, saved, grad, *extra):
    grad_input = np.full(saved.shape, np.nan, saved.dtype)
    getattr(module, name + "_backward")(saved, grad, grad_input, *extra)
    return grad_input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_reference(compiled, name, shape, dtype):
    x = sample(shape, dtype)
    out_c, out_r = run_forward(compiled, name, x), run_forward(reference, name, x)
    np.testing.assert_allclose(out_c, out_r, **tol(dtype))
    assert np.isfinite(out_c).all()
    g = sample(shape, dtype, seed=1, scale=1.0)
    np.testing.assert_allclose(
        run_backward(compiled, name, out_c, g), run_backward(reference, name, out_c, g), **tol(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5, 0.0])
def test_leaky_relu_matches_reference(compiled, slope, shape, dtype):
    x = sample(shape, dtype)
    np.testing.assert_allclose(
        run_forward(compiled, "leaky_relu", x, slope), run_forward(reference, "leaky_relu", x, slope), **tol(dtype)
    )
    g = sample(shape, dtype, seed=1, scale=1.0)
    np.testing.assert_allclose(
        run_backward(compiled, "leaky_relu", x, g, slope),
        run_backward(reference, "leaky_relu", x, g, slope),
        **tol(dtype),
    )


@pytest.mark.parametrize("module_name", ["compiled", "reference"])
def test_elementwise_values(compiled, module_name):
    module = compiled if module_name == "compiled" else reference
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan, np.inf, -np.inf, 1e4, -1e4])
    np.testing.assert_array_equal(run_forward(module, "relu", x), [0, 0, 0, 3, np.nan, np.inf, 0, 1e4, 0])
    np.testing.assert_array_equal(
        run_forward(module, "leaky_relu", x, 0.1), [-0.2, -0.0, 0, 3, np.nan, np.inf, -np.inf, 1e4, -1e3]
    )
    sig = run_forward(module, "sigmoid", x)
    np.testing.assert_allclose(
        sig, [1 / (1 + np.exp(2)), 0.5, 0.5, 1 / (1 + np.exp(-3)), np.nan, 1, 0, 1, 0], rtol=1e-15
    )
    np.testing.assert_allclose(run_forward(module, "tanh", x), np.tanh(x), rtol=1e-15)
    # relu backward uses the output: zero gradient where the output is 0 (also at x = 0)
    g = np.arange(1.0, 10.0)
    np.testing.assert_array_equal(
        run_backward(module, "relu", run_forward(module, "relu", x), g), [0, 0, 0, 4, 0, 6, 0, 8, 0]
    )
    np.testing.assert_array_equal(run_backward(module, "leaky_relu", x, g, 0.5), [0.5, 1, 1.5, 4, 2.5, 6, 3.5, 8, 4.5])


def softmax_oracle(x, log):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted - lse if log else np.exp(shifted - lse)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_matches_reference(compiled, name, shape, dtype):
    x = sample(shape, dtype)
    out_c, out_r = run_forward(compiled, name, x), run_forward(reference, name, x)
    np.testing.assert_allclose(out_c, out_r, **tol(dtype))
    if x.size:
        np.testing.assert_allclose(out_c, softmax_oracle(x, name == "log_softmax"), rtol=1e-5, atol=1e-7)
    g = sample(shape, dtype, seed=1, scale=1.0)
    np.testing.assert_allclose(
        run_backward(compiled, name, out_c, g), run_backward(reference, name, out_c, g), **tol(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_stable_for_huge_logits(compiled, name, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    for module in (compiled, reference):
        out = run_forward(module, name, x)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, softmax_oracle(x, name == "log_softmax"), rtol=1e-6, atol=1e-30)
        grad = run_backward(module, name, out, np.ones_like(x))
        assert np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE + ("leaky_relu",))
def test_elementwise_threads(compiled, name, dtype):
    x = sample((BIG,), dtype)
    extra = (0.1,) if name == "leaky_relu" else ()
    one = run_forward(compiled, name, x, *extra, 1)
    two = run_forward(compiled, name, x, *extra, 2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, run_forward(reference, name, x, *extra), **tol(dtype))
    g = sample((BIG,), dtype, seed=2)
    saved = x if name == "leaky_relu" else one
    one_b = run_backward(compiled, name, saved, g, *extra, 1)
    np.testing.assert_array_equal(one_b, run_backward(compiled, name, saved, g, *extra, 2))
    np.testing.assert_allclose(one_b, run_backward(reference, name, saved, g, *extra), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_threads(compiled, name, dtype):
    x = sample(BIG_ROWS, dtype)
    one, two = run_forward(compiled, name, x, 1), run_forward(compiled, name, x, 2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, run_forward(reference, name, x), **tol(dtype))
    g = sample(BIG_ROWS, dtype, seed=3, scale=1.0)
    one_b = run_backward(compiled, name, one, g, 1)
    np.testing.assert_array_equal(one_b, run_backward(compiled, name, one, g, 2))
    np.testing.assert_allclose(one_b, run_backward(reference, name, one, g), **tol(dtype))


@pytest.mark.parametrize("name", ELEMENTWISE + SOFTMAX)
def test_in_place_output(compiled, name):
    x = sample((4, 6), np.float64)
    expected = run_forward(reference, name, x)
    for module in (compiled, reference):
        y = x.copy()
        getattr(module, name + "_forward")(y, y)
        np.testing.assert_allclose(y, expected, rtol=1e-12)


# --------------------------------------------------------------------------- bad arrays


@pytest.fixture(params=["compiled", "reference"])
def module(request, compiled):
    return compiled if request.param == "compiled" else reference


@pytest.mark.parametrize("name", ELEMENTWISE + SOFTMAX)
def test_bad_arrays_rejected(module, name):
    fwd, bwd = getattr(module, name + "_forward"), getattr(module, name + "_backward")
    x = np.ones((3, 4), np.float32)
    out = np.empty_like(x)
    with pytest.raises(ValueError, match=rf"{name}_forward: x must be C-contiguous"):
        fwd(np.ones((4, 3), np.float32).T, out)
    with pytest.raises(TypeError, match=rf"{name}_forward: x must be float32 or float64, got int64"):
        fwd(np.ones((3, 4), np.int64), out)
    with pytest.raises(TypeError, match="must be a numpy array, got list"):
        fwd([[1.0]], out)
    with pytest.raises(TypeError, match="out has dtype float64, expected float32"):
        fwd(x, np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match=r"out has shape \(3, 5\), but x has \(3, 4\)"):
        fwd(x, np.empty((3, 5), np.float32))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only, but it is an output"):
        fwd(x, ro)
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        fwd(x, out, 0)
    with pytest.raises(ValueError, match="grad_out has shape"):
        bwd(x, np.ones((2, 4), np.float32), out)
    with pytest.raises(ValueError, match="grad_input must be C-contiguous"):
        bwd(x, x, np.empty((8, 4), np.float32)[::2])


@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_needs_rows(module, name):
    for bad in (np.ones(5), np.ones((2, 3, 4))):
        with pytest.raises(ValueError, match=rf"{name}_forward: x must have 2 dimensions"):
            getattr(module, name + "_forward")(bad, np.empty_like(bad))


@pytest.mark.parametrize("name", ELEMENTWISE + SOFTMAX)
@pytest.mark.parametrize(
    "n_threads, error",
    [(0, ValueError), (-3, ValueError), (None, TypeError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_n_threads_named(module, name, n_threads, error):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(
        error,
        match=rf"^{name}_forward: n_threads must be a positive integer, "
        rf"got {re.escape(repr(n_threads))}$",
    ):
        getattr(module, name + "_forward")(x, np.empty_like(x), n_threads)
    with pytest.raises(error, match=rf"^{name}_backward: n_threads must be a positive integer"):
        getattr(module, name + "_backward")(x, x, np.empty_like(x), n_threads)
    big = np.ones((2, 3))
    getattr(module, name + "_forward")(big, np.empty_like(big), 2**70)  # clamped, not refused


def test_leaky_relu_slope_must_be_number(module):
    x = np.ones(3)
    with pytest.raises(TypeError, match="leaky_relu_forward: negative_slope must be a number"):
        module.leaky_relu_forward(x, np.empty_like(x), "steep")
    with pytest.raises(TypeError, match="leaky_relu_backward: negative_slope must be a number"):
        module.leaky_relu_backward(x, x, np.empty_like(x), None)
    with pytest.raises(TypeError, match="leaky_relu_forward: n_threads must be a positive integer"):
        module.leaky_relu_forward(x, np.empty_like(x), 0.1, None)
    with pytest.raises(ValueError, match="leaky_relu_backward: n_threads must be a positive integer"):
        module.leaky_relu_backward(x, x, np.empty_like(x), 0.1, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(BIG,)])
def test_add_relu_is_add_then_relu_bit_for_bit(compiled, shape, dtype):
    a, b = sample(shape, dtype, seed=1), sample(shape, dtype, seed=2)
    if a.size:
        b.reshape(-1)[::5] = -a.reshape(-1)[::5]  # sums of exactly 0
    want = run_forward(compiled, "relu", np.add(a, b))
    for threads in (1, 2):
        got = np.full(shape, np.nan, dtype)
        compiled.add_relu_forward(a, b, got, threads)
        np.testing.assert_array_equal(got, want)
        assert np.signbit(got).sum() == np.signbit(want).sum()  # +0 where the sum is <= 0
    if a.size <= 1000:
        got = np.full(shape, np.nan, dtype)
        reference.add_relu_forward(a, b, got)
        np.testing.assert_allclose(got, want, **tol(dtype))
    inplace = a.copy()
    compiled.add_relu_forward(inplace, b, inplace)  # the output may be an input
    np.testing.assert_array_equal(inplace, want)


@pytest.mark.parametrize("module", ["compiled", "reference"])
def test_add_relu_refuses_mismatched_arrays(compiled, module):
    kernel = compiled if module == "compiled" else reference
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="add_relu_forward: b"):
        kernel.add_relu_forward(a, np.ones((3, 2), np.float32), np.empty_like(a))
    with pytest.raises(TypeError, match="add_relu_forward: b"):
        kernel.add_relu_forward(a, np.ones((2, 3)), np.empty_like(a))
    out = np.empty_like(a)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="add_relu_forward: out"):
        kernel.add_relu_forward(a, a, out)


def test_exports_match(compiled):
    assert sorted(compiled.__all__) == sorted(reference.__all__)
    for name in reference.__all__:
        assert callable(getattr(compiled, name))


# --------------------------------------------------------------------------- property-based

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def maybe_bad_arrays(draw):
    """x, out and grad arrays: usually valid, sometimes of a wrong dtype, shape, layout or
    writability."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float64, np.float16, np.int32]))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape) * 10
    x = values.astype(dtype)
    if draw(st.booleans()) and ndim >= 2:
        x = x.T  # not C-contiguous unless degenerate
    out_dtype = dtype if draw(st.integers(0, 5)) else np.float32
    out_shape = shape if draw(st.integers(0, 5)) else shape + (1,)
    out = np.zeros(out_shape, out_dtype)
    if not draw(st.integers(0, 8)):
        out.flags.writeable = False
    return x, out


def outcome(fn, *args):
    try:
        fn(*args)
        return "ok"
    except (TypeError, ValueError) as exc:
        return type(exc).__name__


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(arrays=maybe_bad_arrays(), name=st.sampled_from(ELEMENTWISE + SOFTMAX), n_threads=st.integers(1, 3))
def test_random_arrays_never_crash(compiled, arrays, name, n_threads):
    x, out = arrays
    results = []
    for module in (compiled, reference):
        o = out.copy() if out.flags.writeable else out
        results.append((outcome(getattr(module, name + "_forward"), x, o, n_threads), o))
    (got_c, out_c), (got_r, out_r) = results
    assert got_c == got_r
    if got_c == "ok":
        np.testing.assert_allclose(out_c, out_r, **tol(out.dtype))
