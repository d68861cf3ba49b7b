"""Smooth activation and PReLU kernels: compiled against the pure-Python reference on odd
shapes and both dtypes, backward against central differences in float64, special values,
and bad input raising before any loop runs."""

import numpy as np
import pytest

from fastgrad.reference import smooth_activation as reference

compiled = pytest.importorskip("fastgrad._ext._smooth_activation", reason="compiled kernels not built")

SHAPES = [(7,), (3, 5), (2, 3, 4), (1,), (0, 3), (130_001,)]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
# (name, extra args of forward and backward)
ELEMENTWISE = [("gelu", (False,)), ("gelu", (True,)), ("silu", ()), ("elu", (1.0,)), ("elu", (0.3,)), ("hardswish", ())]
IDS = [f"{n}{a}" for n, a in ELEMENTWISE]


def _x(shape, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape) * 3
    if x.size >= 8:  # the kinks and special values
        x.reshape(-1)[:8] = [-3.0, 3.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 40.0]
    return x.astype(dtype)


def _call(module, name, kind, args, *arrays, n_threads=1):
    fn = getattr(module, f"{name}_{kind}")
    if kind == "forward":
        x, out = arrays
        fn(x, out, *args, n_threads=n_threads)
    else:
        x, g, gi = arrays
        fn(x, g, gi, *args, n_threads=n_threads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES[:-1])
@pytest.mark.parametrize("name,args", ELEMENTWISE, ids=IDS)
def test_elementwise_matches_reference(name, args, shape, dtype):
    x = _x(shape, dtype)
    g = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    results = []
    for module in (compiled, reference):
        out, gi = np.empty_like(x), np.empty_like(x)
        _call(module, name, "forward", args, x, out)
        _call(module, name, "backward", args, x, g, gi)
        results.append((out, gi))
    (oc, gc), (orf, gr) = results
    np.testing.assert_allclose(oc, orf, equal_nan=True, **TOL[dtype])
    np.testing.assert_allclose(gc, gr, equal_nan=True, **TOL[dtype])


@pytest.mark.parametrize("name,args", ELEMENTWISE, ids=IDS)
def test_threads_give_the_same_result(name, args):
    x = _x(SHAPES[-1], np.float32)
    g = np.ones_like(x)
    outs = []
    for n_threads in (1, 2):
        out, gi = np.empty_like(x), np.empty_like(x)
        _call(compiled, name, "forward", args, x, out, n_threads=n_threads)
        _call(compiled, name, "backward", args, x, g, gi, n_threads=n_threads)
        outs.append((out, gi))
    for a, b in zip(outs[0], outs[1]):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("module", [compiled, reference], ids=["compiled", "reference"])
@pytest.mark.parametrize("name,args", ELEMENTWISE, ids=IDS)
def test_backward_matches_finite_differences(module, name, args):
    x = np.random.default_rng(2).standard_normal(40) * 3
    x = x[np.abs(np.abs(x) - 3) > 1e-3]  # away from hardswish's kinks
    eps = 1e-6
    plus, minus, gi = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    _call(module, name, "forward", args, x + eps, plus)
    _call(module, name, "forward", args, x - eps, minus)
    _call(module, name, "backward", args, x, np.ones_like(x), gi)
    np.testing.assert_allclose(gi, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_known_values():
    x = np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 4.0])
    for module in (compiled, reference):
        out = np.empty_like(x)
        module.hardswish_forward(x, out)
        np.testing.assert_allclose(out, x * np.clip(x + 3, 0, 6) / 6)
        gi = np.empty_like(x)
        module.hardswish_backward(x, np.ones_like(x), gi)
        np.testing.assert_allclose(gi, [0.0, -0.5, 1 / 6, 0.5, 5 / 6, 1.5, 1.0])  # PyTorch's kinks
        module.elu_forward(x, out, 2.0)
        np.testing.assert_allclose(out, np.where(x > 0, x, 2.0 * np.expm1(x)))
        module.silu_forward(x, out)
        np.testing.assert_allclose(out, x / (1 + np.exp(-x)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 1, 7), (4, 2, 1), (0, 3, 2), (3, 4, 0)])
def test_prelu_matches_reference_and_finite_differences(shape, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    res = []
    for module in (compiled, reference):
        out, gi, gw = np.empty_like(x), np.empty_like(x), np.empty_like(w)
        module.prelu_forward(x, w, out)
        module.prelu_backward(x, w, g, gi, gw)
        res.append((out, gi, gw))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, **TOL[dtype])
    if dtype == np.float64 and x.size:
        eps, gw_num = 1e-6, np.zeros_like(w)
        for c in range(w.size):
            wp, wm = w.copy(), w.copy()
            wp[c] += eps
            wm[c] -= eps
            op, om = np.empty_like(x), np.empty_like(x)
            compiled.prelu_forward(x, wp, op)
            compiled.prelu_forward(x, wm, om)
            gw_num[c] = np.sum((op - om) * g) / (2 * eps)
        np.testing.assert_allclose(res[0][2], gw_num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("module", [compiled, reference], ids=["compiled", "reference"])
def test_bad_input_raises(module):
    f32 = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="gelu_forward: x must be float32 or float64, got int64"):
        module.gelu_forward(np.zeros(3, np.int64), np.zeros(3, np.int64), False)
    with pytest.raises(ValueError, match="silu_forward: out has shape \\(3, 2\\), but x has \\(2, 3\\)"):
        module.silu_forward(f32, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="elu_backward: grad_out has dtype float64, expected float32"):
        module.elu_backward(f32, np.zeros((2, 3)), f32.copy(), 1.0)
    with pytest.raises(TypeError, match="elu_forward: alpha must be a number"):
        module.elu_forward(f32, f32.copy(), "1")
    with pytest.raises(ValueError, match="hardswish_forward: x must be C-contiguous"):
        module.hardswish_forward(np.zeros((3, 2), np.float32).T, f32.copy())
    ro = f32.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="hardswish_forward: out is read-only, but it is an output"):
        module.hardswish_forward(f32, ro)
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        module.silu_forward(f32, f32.copy(), n_threads=0)
    x3 = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="prelu_forward: x must have 3 dimensions"):
        module.prelu_forward(f32, np.zeros(3, np.float32), f32.copy())
    with pytest.raises(ValueError, match=r"prelu_forward: weight has shape \(4,\), expected \(3,\)"):
        module.prelu_forward(x3, np.zeros(4, np.float32), x3.copy())
    with pytest.raises(TypeError, match="prelu_backward: weight has dtype float64, expected float32"):
        module.prelu_backward(x3, np.zeros(3), x3, x3.copy(), np.zeros(3))


@pytest.mark.parametrize("name,args", ELEMENTWISE, ids=IDS)
def test_float32_approximations_stay_accurate_over_a_wide_range(name, args):
    """The float32 kernels use plain-arithmetic exp, sigmoid, normal CDF and expm1: against
    the float64 kernels (libm), the forward stays within a few float32 ulps of each value
    (GELU's tails: within the rounding of their exponent), and the derivative within a few
    ulps of its scale."""
    x = np.linspace(-12, 12, 48_001).astype(np.float32)
    x64 = x.astype(np.float64)
    out, out64 = np.empty_like(x), np.empty_like(x64)
    _call(compiled, name, "forward", args, x, out)
    _call(compiled, name, "forward", args, x64, out64)
    # GELU's tails are exp(-x^2 / 2) (of the tanh form: exp(2u)): the float32 rounding of
    # an exponent near 70 is about 1e-5 relative in the result, for any exp
    tol = {("gelu", (True,)): 4e-5, ("gelu", (False,)): 2e-5}.get((name, args), 2e-6)
    np.testing.assert_allclose(out, out64, rtol=tol, atol=1e-30)
    gi, gi64 = np.empty_like(x), np.empty_like(x64)
    _call(compiled, name, "backward", args, x, np.ones_like(x), gi)
    _call(compiled, name, "backward", args, x64, np.ones_like(x64), gi64)
    np.testing.assert_allclose(gi, gi64, rtol=1e-5, atol=3e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("module", [compiled, reference], ids=["compiled", "reference"])
def test_gelu_tanh_slope_far_from_zero(module, dtype):
    """The tanh form's slope is 1 far right and 0 far left, also where x * x overflows in
    float32 (a fuzz finding: the compiled kernel gave NaN for |x| past ~1e19); +-inf and
    NaN give NaN, as PyTorch's does."""
    x = np.array([1e20, -1e20, 1e30, -1e30, 3e38, -3e38, np.inf, -np.inf, np.nan], dtype)
    gi = np.empty_like(x)
    module.gelu_backward(x, np.ones_like(x), gi, True)
    np.testing.assert_array_equal(gi[:6], [1, 0, 1, 0, 1, 0])
    assert np.isnan(gi[6:]).all()


@pytest.mark.parametrize("module", [compiled, reference], ids=["compiled", "reference"])
def test_elu_alpha_is_used_in_the_arrays_dtype(module):
    """A float32 call rounds alpha to float32 (a fuzz finding: the twin used it in double,
    so an alpha below float32's range met an infinite gradient as inf, not 0 * inf)."""
    for dtype, want in ((np.float32, [np.nan, 0.0]), (np.float64, [np.inf, 1e-300 * np.exp(-1.0)])):
        x = np.array([-1.0, -1.0], dtype)
        gi, out = np.empty_like(x), np.empty_like(x)
        module.elu_backward(x, np.array([np.inf, 1.0], dtype), gi, 1e-300)
        np.testing.assert_allclose(gi, want, rtol=1e-12)
        module.elu_forward(x, out, 1e-300)
        np.testing.assert_allclose(out, [1e-300 * np.expm1(-1.0) if dtype == np.float64 else 0.0] * 2, rtol=1e-12)
