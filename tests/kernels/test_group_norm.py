"""Layer and group norm kernels: compiled against the pure-Python reference on odd shapes,
both dtypes, with and without affine parameters; backward against central differences in
float64 and against numpy's formula; bad input raising before any loop runs."""

import numpy as np
import pytest

from fastgrad.reference import group_norm as reference

compiled = pytest.importorskip("fastgrad._ext._group_norm", reason="compiled kernels not built")
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
MODULES = [pytest.param(compiled, id="compiled"), pytest.param(reference, id="reference")]


def _ln(module, x, w, b, eps=1e-5):
    rows, k = x.shape
    out, mean, rstd = np.empty_like(x), np.empty(rows, x.dtype), np.empty(rows, x.dtype)
    module.layer_norm_forward(x, w, b, eps, out, mean, rstd)
    return out, mean, rstd


def _gn(module, x, g, w, b, eps=1e-5):
    n = x.shape[0]
    out, mean, rstd = np.empty_like(x), np.empty((n, g), x.dtype), np.empty((n, g), x.dtype)
    module.group_norm_forward(x, w, b, g, eps, out, mean, rstd)
    return out, mean, rstd


def _params(rng, n, dtype, affine):
    if not affine:
        return None, None
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 7), (1, 1), (5, 16), (0, 4), (2, 0), (4, 129)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_reference(shape, dtype, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 4 + 10).astype(dtype)  # far from zero: the two-pass variance
    w, b = _params(rng, shape[1], dtype, affine)
    g = rng.standard_normal(shape).astype(dtype)
    res = []
    for module in (compiled, reference):
        out, mean, rstd = _ln(module, x, w, b)
        gi = np.empty_like(x)
        gw = np.empty(shape[1], dtype) if affine else None
        gb = np.empty(shape[1], dtype) if affine else None
        module.layer_norm_backward(x, g, w, mean, rstd, gi, gw, gb)
        res.append([out, mean, rstd, gi] + ([gw, gb] if affine else []))
    for a, c in zip(*res):
        np.testing.assert_allclose(a, c, **TOL[dtype])
    if x.size:  # against numpy's formula
        mu, var = x.astype(np.float64).mean(1, keepdims=True), x.astype(np.float64).var(1, keepdims=True)
        want = (x - mu) / np.sqrt(var + 1e-5) * (w if affine else 1) + (b if affine else 0)
        np.testing.assert_allclose(res[0][0], want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,groups", [((2, 6, 5), 3), ((1, 4, 1), 4), ((3, 5, 7), 1), ((2, 8, 9), 2), ((0, 4, 3), 2), ((2, 4, 0), 2)]
)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_reference(shape, groups, dtype, affine):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 - 5).astype(dtype)
    w, b = _params(rng, shape[1], dtype, affine)
    g = rng.standard_normal(shape).astype(dtype)
    res = []
    for module in (compiled, reference):
        out, mean, rstd = _gn(module, x, groups, w, b)
        gi = np.empty_like(x)
        gw = np.empty(shape[1], dtype) if affine else None
        gb = np.empty(shape[1], dtype) if affine else None
        module.group_norm_backward(x, g, w, mean, rstd, groups, gi, gw, gb)
        res.append([out, mean, rstd, gi] + ([gw, gb] if affine else []))
    for a, c in zip(*res):
        np.testing.assert_allclose(a, c, **TOL[dtype])


@pytest.mark.parametrize("module", MODULES)
def test_group_norm_backward_matches_finite_differences(module):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    v = rng.standard_normal(x.shape)
    out, mean, rstd = _gn(module, x, 2, w, b)
    gi, gw, gb = np.empty_like(x), np.empty(4), np.empty(4)
    module.group_norm_backward(x, v, w, mean, rstd, 2, gi, gw, gb)
    eps = 1e-6

    def f(xx, ww, bb):
        return float(np.sum(_gn(module, xx, 2, ww, bb)[0] * v))

    for arr, grad in ((x, gi), (w, gw), (b, gb)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            fp = f(x, w, b)
            arr[i] = old - eps
            fm = f(x, w, b)
            arr[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_layer_norm_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    v = rng.standard_normal(x.shape)
    out, mean, rstd = _ln(compiled, x, w, b)
    gi, gw, gb = np.empty_like(x), np.empty(5), np.empty(5)
    compiled.layer_norm_backward(x, v, w, mean, rstd, gi, gw, gb)
    eps, num = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        num[i] = np.sum((_ln(compiled, xp, w, b)[0] - _ln(compiled, xm, w, b)[0]) * v) / (2 * eps)
    np.testing.assert_allclose(gi, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, v.sum(0))


def test_threads_give_the_same_result():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 16, 100)).astype(np.float32)
    w, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    res = []
    for nt in (1, 2):
        out, mean, rstd = np.empty_like(x), np.empty((64, 4), np.float32), np.empty((64, 4), np.float32)
        compiled.group_norm_forward(x, w, b, 4, 1e-5, out, mean, rstd, n_threads=nt)
        gi, gw, gb = np.empty_like(x), np.empty(16, np.float32), np.empty(16, np.float32)
        compiled.group_norm_backward(x, x, w, mean, rstd, 4, gi, gw, gb, n_threads=nt)
        res.append((out, gi, gw, gb))
    for a, c in zip(*res):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_raises(module):
    x = np.zeros((2, 4, 3), np.float32)
    m = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="group_norm_forward: num_groups=3 must be >= 1 and divide the 4 channels"):
        module.group_norm_forward(x, None, None, 3, 1e-5, x.copy(), m, m.copy())
    with pytest.raises(TypeError, match="group_norm_forward: num_groups must be an integer"):
        module.group_norm_forward(x, None, None, 2.0, 1e-5, x.copy(), m, m.copy())
    with pytest.raises(ValueError, match=r"group_norm_forward: weight has shape \(3,\), expected \(4,\)"):
        module.group_norm_forward(x, np.zeros(3, np.float32), None, 2, 1e-5, x.copy(), m, m.copy())
    with pytest.raises(ValueError, match=r"group_norm_forward: mean has shape \(4,\), expected \(2, 2\)"):
        module.group_norm_forward(x, None, None, 2, 1e-5, x.copy(), np.zeros(4, np.float32), m.copy())
    with pytest.raises(ValueError, match="group_norm_forward: x must have 3 dimensions"):
        module.group_norm_forward(x[0], None, None, 2, 1e-5, x[0].copy(), m, m.copy())
    with pytest.raises(ValueError, match="group_norm_forward: eps must be a finite number >= 0"):
        module.group_norm_forward(x, None, None, 2, -1.0, x.copy(), m, m.copy())
    x2 = np.zeros((3, 5), np.float32)
    r = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="layer_norm_forward: bias has dtype float64, expected float32"):
        module.layer_norm_forward(x2, None, np.zeros(5), 1e-5, x2.copy(), r, r.copy())
    with pytest.raises(ValueError, match="layer_norm_backward: grad_input must be C-contiguous"):
        module.layer_norm_backward(x2, x2, None, r, r, np.zeros((5, 3), np.float32).T, None, None)
    ro = r.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="layer_norm_forward: rstd is read-only, but it is an output"):
        module.layer_norm_forward(x2, None, None, 1e-5, x2.copy(), r, ro)


@pytest.mark.parametrize("module", MODULES)
def test_outputs_sharing_memory_with_inputs_are_refused(module):
    x = np.zeros((3, 3), np.float32)
    r = np.zeros(3, np.float32)
    w = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="layer_norm_forward: mean overlaps weight in memory"):
        module.layer_norm_forward(x, w, None, 1e-5, x.copy(), w, r)
    with pytest.raises(ValueError, match="layer_norm_backward: grad_input overlaps grad_out in memory"):
        g = np.ones((3, 3), np.float32)
        module.layer_norm_backward(x, g, None, r, r, g, None, None)
