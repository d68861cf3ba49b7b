"""Loss kernels: compiled against the pure-Python reference on grids of shapes, options
and both dtypes; against closed-form numpy oracles; bad arrays and out-of-range targets
rejected by both homes before any row is read."""

import importlib

import numpy as np
import pytest

from fastgrad import kernels
from fastgrad.reference import loss as reference

DTYPES = (np.float32, np.float64)
CLASS_SHAPES = [(1, 1), (1, 5), (4, 3), (7, 10), (0, 4), (33, 17)]


@pytest.fixture(scope="module")
def compiled():
    pkg = "fastgrad._ext.v3" if kernels.simd_variant == "v3" else "fastgrad._ext"
    try:
        return importlib.import_module(pkg + "._loss")
    except ImportError:
        pytest.skip("the compiled loss kernels are not built")


@pytest.fixture(params=["compiled", "reference"])
def module(request, compiled):
    return compiled if request.param == "compiled" else reference


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def logits_targets(shape, dtype, seed=0, ignore_index=-100, scale=3.0):
    rng = np.random.default_rng(seed)
    n, c = shape
    z = (rng.standard_normal(shape) * scale).astype(dtype)
    t = rng.integers(0, max(c, 1), n).astype(np.int64)
    if n > 2:
        t[1] = ignore_index
    return z, t


def class_weights(c, dtype, seed=5):
    return (np.random.default_rng(seed).random(c) + 0.25).astype(dtype)


def run_ce(module, z, t, weight=None, ignore_index=-100, eps=0.0, normalize=True, with_grad=True, n_threads=1):
    losses = np.full(z.shape[0], np.nan, z.dtype)
    grad = np.full(z.shape, np.nan, z.dtype) if with_grad else None
    sums = module.cross_entropy_forward(z, t, weight, ignore_index, eps, normalize, losses, grad, n_threads)
    return sums, losses, grad


def ce_oracle(z, t, weight, ignore_index, eps):
    """Per-sample losses and the gradient of their sum, in float64 numpy."""
    z = z.astype(np.float64)
    n, c = z.shape
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    keep = t != ignore_index
    safe_t = np.where(keep, t, 0)
    q = (1 - eps) * np.eye(c)[safe_t] * w[safe_t][:, None] + eps / c * w  # weighted target mass
    losses = -(q * logp).sum(axis=1) * keep
    grad = (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * keep[:, None]
    return losses, grad, (w[safe_t] * keep).sum()


# --------------------------------------------------------------------------- cross entropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.25, 1.0])
def test_cross_entropy_matches_reference(compiled, shape, dtype, weighted, eps):
    z, t = logits_targets(shape, dtype)
    w = class_weights(shape[1], dtype) if weighted else None
    for normalize in (True, False):
        (sum_c, wsum_c), losses_c, grad_c = run_ce(compiled, z, t, w, eps=eps, normalize=normalize)
        (sum_r, wsum_r), losses_r, grad_r = run_ce(reference, z, t, w, eps=eps, normalize=normalize)
        np.testing.assert_allclose(losses_c, losses_r, **tol(dtype))
        np.testing.assert_allclose(grad_c, grad_r, **tol(dtype))
        np.testing.assert_allclose(sum_c, sum_r, rtol=1e-6 if dtype == np.float32 else 1e-12)
        assert wsum_c == wsum_r
    losses, grad, total_weight = ce_oracle(z, t, w, -100, eps)
    np.testing.assert_allclose(losses_c, losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_c, grad, rtol=1e-5, atol=1e-6)  # normalize=False: unscaled
    np.testing.assert_allclose(wsum_c, total_weight, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_mean_scales_gradient(module, dtype):
    z, t = logits_targets((6, 4), dtype)
    w = class_weights(4, dtype)
    (_, wsum), _, grad_sum = run_ce(module, z, t, w, normalize=False)
    _, _, grad_mean = run_ce(module, z, t, w, normalize=True)
    np.testing.assert_allclose(grad_mean, grad_sum / wsum, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_huge_logits_finite(module, dtype, eps):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype)
    t = np.array([1, 2, 0, 1], np.int64)
    (loss_sum, _), losses, grad = run_ce(module, z, t, eps=eps, normalize=False)
    assert np.isfinite(losses).all() and np.isfinite(grad).all() and np.isfinite(loss_sum)
    expected, expected_grad, _ = ce_oracle(z, t, None, -100, eps)
    np.testing.assert_allclose(losses, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)
    assert losses[0] == pytest.approx((1 - eps) * 2e4 + eps / 3 * 3e4, rel=1e-6)


def test_cross_entropy_ignore_index_in_range(module):
    z, t = logits_targets((5, 4), np.float64)
    t[:] = [0, 2, 2, 3, 1]
    (loss_sum, wsum), losses, grad = run_ce(module, z, t, ignore_index=2)
    assert wsum == 3.0
    assert losses[1] == losses[2] == 0.0
    assert not grad[1:3].any()
    np.testing.assert_allclose(loss_sum, losses.sum(), rtol=1e-12)


def test_cross_entropy_all_ignored(module):
    z = np.ones((3, 4))
    t = np.full(3, -100, np.int64)
    (loss_sum, wsum), losses, grad = run_ce(module, z, t)
    assert loss_sum == 0.0 and wsum == 0.0
    assert not losses.any() and not grad.any()  # as PyTorch: zero gradient, nan mean


def test_cross_entropy_without_grad(module):
    z, t = logits_targets((6, 5), np.float32)
    _, losses_only, _ = run_ce(module, z, t, with_grad=False)
    _, losses, _ = run_ce(module, z, t)
    np.testing.assert_array_equal(losses_only, losses)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_threads(compiled, dtype):
    z, t = logits_targets((300, 60), dtype)
    w = class_weights(60, dtype)
    one = run_ce(compiled, z, t, w, eps=0.1, n_threads=1)
    two = run_ce(compiled, z, t, w, eps=0.1, n_threads=2)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[2], two[2])
    ref = run_ce(reference, z, t, w, eps=0.1)
    np.testing.assert_allclose(one[2], ref[2], **tol(dtype))


def test_cross_entropy_rejects_bad_targets(module):
    z = np.zeros((6, 5), np.float32)
    losses = np.empty(6, np.float32)
    t = np.array([0, 1, 2, 3, 4, 7], np.int64)
    with pytest.raises(ValueError, match=r"cross_entropy_forward: target\[5\] = 7 is out of range for 5 classes"):
        module.cross_entropy_forward(z, t, None, -100, 0.0, True, losses, None)
    t[5] = -1
    with pytest.raises(ValueError, match=r"target\[5\] = -1 is out of range"):
        module.cross_entropy_forward(z, t, None, -100, 0.0, True, losses, None)
    t[5] = 2**40
    with pytest.raises(ValueError, match=r"target\[5\] = 1099511627776 is out of range"):
        module.cross_entropy_forward(z, t, None, -100, 0.0, True, losses, np.zeros((6, 5), np.float32))
    t[5] = -1  # fine when it is the ignore_index
    module.cross_entropy_forward(z, t, None, -1, 0.0, True, losses, None)
    with pytest.raises(TypeError, match="target must hold int64 class indices, got int32"):
        module.cross_entropy_forward(z, t.astype(np.int32), None, -100, 0.0, True, losses, None)
    with pytest.raises(TypeError, match="target must hold int64"):
        module.cross_entropy_forward(z, t.astype(np.float32), None, -100, 0.0, True, losses, None)
    with pytest.raises(ValueError, match=r"target has shape \(5,\), expected \(6,\)"):
        module.cross_entropy_forward(z, t[:5], None, -100, 0.0, True, losses, None)
    with pytest.raises(ValueError, match="target must be C-contiguous"):
        module.cross_entropy_forward(z, np.zeros(12, np.int64)[::2], None, -100, 0.0, True, losses, None)


def test_cross_entropy_rejects_bad_arrays(module):
    z = np.zeros((6, 5), np.float32)
    t = np.zeros(6, np.int64)
    losses = np.empty(6, np.float32)
    k = module.cross_entropy_forward
    with pytest.raises(ValueError, match="logits must have 2 dimensions"):
        k(np.zeros(5, np.float32), t[:1], None, -100, 0.0, True, losses[:1], None)
    with pytest.raises(ValueError, match="logits must be C-contiguous"):
        k(np.zeros((5, 6), np.float32).T, t, None, -100, 0.0, True, losses, None)
    with pytest.raises(TypeError, match="logits must be float32 or float64, got int64"):
        k(np.zeros((6, 5), np.int64), t, None, -100, 0.0, True, losses, None)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(5,\)"):
        k(z, t, np.ones(4, np.float32), -100, 0.0, True, losses, None)
    with pytest.raises(TypeError, match="weight has dtype float64, expected float32"):
        k(z, t, np.ones(5), -100, 0.0, True, losses, None)
    with pytest.raises(ValueError, match=r"losses has shape \(5,\), expected \(6,\)"):
        k(z, t, None, -100, 0.0, True, losses[:5], None)
    with pytest.raises(ValueError, match=r"grad has shape \(6, 4\), expected \(6, 5\)"):
        k(z, t, None, -100, 0.0, True, losses, np.zeros((6, 4), np.float32))
    ro = np.empty(6, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="losses is read-only, but it is an output"):
        k(z, t, None, -100, 0.0, True, ro, None)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        k(z, t, None, -100, 1.5, True, losses, None)
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        k(z, t, None, 1.5, 0.0, True, losses, None)
    with pytest.raises(ValueError, match="n_threads must be a positive integer"):
        k(z, t, None, -100, 0.0, True, losses, None, -2)


# --------------------------------------------------------------------------- nll


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_matches_reference(compiled, shape, dtype, weighted):
    logp, t = logits_targets(shape, dtype)
    w = class_weights(shape[1], dtype) if weighted else None
    results = []
    for module in (compiled, reference):
        losses = np.full(shape[0], np.nan, dtype)
        sums = module.nll_loss_forward(logp, t, w, -100, losses)
        g = np.random.default_rng(1).standard_normal(shape[0]).astype(dtype)
        grad = np.full(shape, np.nan, dtype)
        module.nll_loss_backward(t, w, -100, g, grad)
        results.append((sums, losses, grad))
    (sums_c, losses_c, grad_c), (sums_r, losses_r, grad_r) = results
    np.testing.assert_allclose(sums_c, sums_r, rtol=1e-6)
    np.testing.assert_array_equal(losses_c, losses_r)
    np.testing.assert_array_equal(grad_c, grad_r)
    keep = t != -100
    ww = np.ones(shape[1], dtype) if w is None else w
    rows = np.arange(shape[0])[keep]
    np.testing.assert_allclose(losses_c[keep], -ww[t[keep]] * logp[rows, t[keep]], rtol=1e-6)
    assert not losses_c[~keep].any()
    assert np.count_nonzero(grad_c) == np.count_nonzero(g[keep])


def test_nll_rejects_bad_targets(module):
    logp = np.zeros((3, 4))
    t = np.array([0, 4, 1], np.int64)
    with pytest.raises(ValueError, match=r"nll_loss_forward: target\[1\] = 4 is out of range for 4 classes"):
        module.nll_loss_forward(logp, t, None, -100, np.empty(3))
    with pytest.raises(ValueError, match=r"nll_loss_backward: target\[1\] = 4 is out of range"):
        module.nll_loss_backward(t, None, -100, np.ones(3), np.empty((3, 4)))
    with pytest.raises(ValueError, match=r"grad_losses has shape \(2,\), expected \(3,\)"):
        module.nll_loss_backward(np.zeros(3, np.int64), None, -100, np.ones(2), np.empty((3, 4)))
    ro = np.empty((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_input is read-only, but it is an output"):
        module.nll_loss_backward(np.zeros(3, np.int64), None, -100, np.ones(3), ro)


# --------------------------------------------------------------------------- mse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (5,), (3, 4), (2, 3, 5), (0, 3), (70_000,)])
def test_mse_matches_reference(compiled, shape, dtype):
    rng = np.random.default_rng(0)
    x, y, g_all = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    g_one = np.array(0.7, dtype)
    res = []
    for module, threads in ((compiled, 2), (reference, 1)):
        diff, sq = np.empty(shape, dtype), np.empty(shape, dtype)
        total = module.mse_loss_forward(x, y, diff, sq, threads)
        grad_all, grad_one = np.empty(shape, dtype), np.empty(shape, dtype)
        module.mse_loss_backward(diff, g_all, 0.5, grad_all, threads)
        module.mse_loss_backward(diff, g_one, 0.25, grad_one, threads)
        res.append((total, diff, sq, grad_all, grad_one))
    (tc, dc, sc, gac, goc), (tr, dr, sr, gar, gor) = res
    np.testing.assert_allclose(tc, tr, rtol=1e-9 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(dc, dr)
    np.testing.assert_allclose(sc, sr, **tol(dtype))
    np.testing.assert_allclose(gac, gar, **tol(dtype))
    np.testing.assert_allclose(goc, gor, **tol(dtype))
    np.testing.assert_allclose(dc, (x - y), rtol=1e-6)
    np.testing.assert_allclose(goc, 2 * 0.25 * 0.7 * dc, rtol=1e-6)


def test_mse_rejects_bad_arrays(module):
    x = np.zeros((3, 4), np.float32)
    d = np.empty_like(x)
    with pytest.raises(ValueError, match=r"mse_loss_forward: target has shape \(4, 3\), expected \(3, 4\)"):
        module.mse_loss_forward(x, np.zeros((4, 3), np.float32), d, None)
    with pytest.raises(TypeError, match="target has dtype float64, expected float32"):
        module.mse_loss_forward(x, np.zeros((3, 4)), d, None)
    with pytest.raises(ValueError, match="squares must be C-contiguous"):
        module.mse_loss_forward(x, x, d, np.empty((3, 8), np.float32)[:, ::2])
    with pytest.raises(ValueError, match=r"grad_loss has shape \(3,\), expected one element"):
        module.mse_loss_backward(d, np.ones(3, np.float32), 1.0, np.empty_like(x))
    with pytest.raises(TypeError, match="scale must be a number"):
        module.mse_loss_backward(d, np.ones(1, np.float32), "half", np.empty_like(x))


# --------------------------------------------------------------------------- bce with logits


def bce_oracle(x, y, w, pw):
    x, y = x.astype(np.float64), y.astype(np.float64)
    w = 1.0 if w is None else w
    pw = 1.0 if pw is None else pw
    log_sig, log_one_minus = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    loss = -w * (pw * y * log_sig + (1 - y) * log_one_minus)
    sig = np.exp(log_sig)
    grad = w * ((1 + (pw - 1) * y) * sig - pw * y)
    return loss, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (6, 7), (0, 3), (3, 0), (200, 90)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_matches_reference(compiled, shape, dtype, weighted, pos_weighted):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if x.size:
        x.reshape(-1)[:4] = [1e4, -1e4, 0.0, -30.0][: x.size]
    y = rng.random(shape).astype(dtype)
    w = rng.random(shape).astype(dtype) if weighted else None
    pw = (rng.random(shape[1]) * 3).astype(dtype) if pos_weighted else None
    out = []
    for module, threads in ((compiled, 2), (reference, 1)):
        losses, grad = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
        total = module.binary_cross_entropy_with_logits_forward(x, y, w, pw, 0.5, losses, grad, threads)
        out.append((total, losses, grad))
    (tc, lc, gc), (tr, lr, gr) = out
    assert np.isfinite(lc).all() and np.isfinite(gc).all()
    np.testing.assert_allclose(lc, lr, **tol(dtype))
    np.testing.assert_allclose(gc, gr, **tol(dtype))
    np.testing.assert_allclose(tc, tr, rtol=1e-6 if dtype == np.float32 else 1e-12)
    loss, grad = bce_oracle(x, y, w, pw)
    np.testing.assert_allclose(lc, loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gc, 0.5 * grad, rtol=1e-5, atol=1e-6)


def test_bce_optional_outputs(module):
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    y = np.full_like(x, 0.3)
    full = np.empty_like(x)
    total = module.binary_cross_entropy_with_logits_forward(x, y, None, None, 1.0, full, None)
    assert total == pytest.approx(full.sum(), rel=1e-12)
    assert module.binary_cross_entropy_with_logits_forward(x, y, None, None, 1.0, None, None) == total


def test_bce_rejects_bad_arrays(module):
    k = module.binary_cross_entropy_with_logits_forward
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"pos_weight has shape \(3,\), expected \(4,\)"):
        k(x, x, None, np.ones(3), 1.0, None, None)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(3, 4\)"):
        k(x, x, np.ones(4), None, 1.0, None, None)
    with pytest.raises(ValueError, match="input must have 2 dimensions"):
        k(np.zeros(4), np.zeros(4), None, None, 1.0, None, None)
    with pytest.raises(TypeError, match="target has dtype float32, expected float64"):
        k(x, x.astype(np.float32), None, None, 1.0, None, None)
    with pytest.raises(TypeError, match="grad_scale must be a number"):
        k(x, x, None, None, None, None, None)


def test_exports_match(compiled):
    assert sorted(compiled.__all__) == sorted(reference.__all__)
    for name in reference.__all__:
        assert callable(getattr(compiled, name))


# --------------------------------------------------------------------------- scalars and overlaps


def _loss_calls(module, n_threads):
    """A valid call of every loss kernel, with n_threads as given."""
    z = np.zeros((3, 4), np.float32)
    t = np.array([0, 3, -100], np.int64)
    w = np.ones(4, np.float32)
    return {
        "cross_entropy_forward": lambda: module.cross_entropy_forward(
            z, t, w, -100, 0.0, True, np.empty(3, np.float32), np.empty((3, 4), np.float32), n_threads
        ),
        "nll_loss_forward": lambda: module.nll_loss_forward(z, t, w, -100, np.empty(3, np.float32), n_threads),
        "nll_loss_backward": lambda: module.nll_loss_backward(
            t, w, -100, np.ones(3, np.float32), np.empty((3, 4), np.float32), n_threads
        ),
        "mse_loss_forward": lambda: module.mse_loss_forward(z, z + 1, np.empty_like(z), np.empty_like(z), n_threads),
        "mse_loss_backward": lambda: module.mse_loss_backward(
            z, np.ones(1, np.float32), 0.5, np.empty_like(z), n_threads
        ),
        "binary_cross_entropy_with_logits_forward": lambda: module.binary_cross_entropy_with_logits_forward(
            z, z, z, w, 0.5, np.empty_like(z), np.empty_like(z), n_threads
        ),
    }


@pytest.mark.parametrize(
    "n_threads, error",
    [(0, ValueError), (-1, ValueError), (None, TypeError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_n_threads_named(module, n_threads, error):
    for name, call in _loss_calls(module, n_threads).items():
        with pytest.raises(error, match=rf"^{name}: n_threads must be a positive integer, got "):
            call()
    for call in _loss_calls(module, 2**70).values():
        call()  # a huge thread count is clamped, not refused


def test_outputs_must_not_overlap_inputs(module):
    z = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    t = np.array([0, 3, 1, 2], np.int64)
    w = np.ones(4, np.float32)
    before = z.copy()
    with pytest.raises(ValueError, match="^nll_loss_forward: losses overlaps weight in memory"):
        module.nll_loss_forward(z, t, w, -100, w, 1)
    with pytest.raises(ValueError, match="^nll_loss_forward: losses overlaps log_probs in memory"):
        module.nll_loss_forward(z, t, None, -100, z[0], 1)
    with pytest.raises(ValueError, match="^cross_entropy_forward: grad overlaps logits in memory"):
        module.cross_entropy_forward(z, t, None, -100, 0.0, True, np.empty(4, np.float32), z, 1)
    with pytest.raises(ValueError, match="^nll_loss_backward: grad_input overlaps target in memory"):
        module.nll_loss_backward(t[:2], None, -100, w[:2], t.view(np.float32).reshape(2, 4), 1)
    with pytest.raises(ValueError, match="^mse_loss_forward: squares overlaps diff in memory"):
        d = np.empty_like(z)
        module.mse_loss_forward(z, z, d, d, 1)
    with pytest.raises(ValueError, match="^mse_loss_backward: grad_input overlaps diff in memory"):
        module.mse_loss_backward(z, np.ones(1, np.float32), 1.0, z, 1)
    with pytest.raises(ValueError, match="^binary_cross_entropy_with_logits_forward: grad overlaps target in memory"):
        y = np.zeros_like(z)
        module.binary_cross_entropy_with_logits_forward(z, y, None, None, 1.0, None, y, 1)
    np.testing.assert_array_equal(z, before)


# --------------------------------------------------------------------------- property-based

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


def outcome(fn, *args):
    try:
        return fn(*args)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    n=st.integers(0, 6),
    c=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
    target_dtype=st.sampled_from([np.int64, np.int64, np.int32, np.float64]),
    target_len=st.integers(-1, 1),
    low=st.integers(-3, 0),
    high=st.integers(0, 3),
    weighted=st.booleans(),
    with_grad=st.booleans(),
    eps=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
)
def test_random_cross_entropy_calls_never_crash(
    compiled, n, c, seed, target_dtype, target_len, low, high, weighted, with_grad, eps
):
    """Targets possibly out of range, of the wrong dtype or length: both homes raise the same
    error or return the same result; the compiled kernel never reads out of bounds."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 100
    t = rng.integers(low, c + high + 1, max(n + target_len, 0)).astype(target_dtype)
    w = rng.random(c) if weighted else None
    results = []
    for module in (compiled, reference):
        losses = np.zeros(n)
        grad = np.zeros((n, c)) if with_grad else None
        results.append((outcome(module.cross_entropy_forward, z, t, w, -1, eps, True, losses, grad), losses, grad))
    (rc, lc, gc), (rr, lr, gr) = results
    if isinstance(rc, str) or isinstance(rr, str):
        assert rc == rr
        return
    np.testing.assert_allclose(rc, rr, rtol=1e-12)
    np.testing.assert_allclose(lc, lr, rtol=1e-12, atol=1e-12)
    if with_grad:
        np.testing.assert_allclose(gc, gr, rtol=1e-12, atol=1e-12)
