"""Pooling kernels: every built compiled variant against the pure-Python reference on a
grid of window settings (overlapping kernel 3 stride 2, padding, dilation, ceil_mode
windows that run past the input, non-square kernels and inputs, batch 1), both dtypes;
ties, NaN and all-equal inputs checked against PyTorch's rules written out by hand;
threaded against single-threaded; bad arrays rejected by both homes."""

import re

import numpy as np
import pytest
from simd_builds import at_level, builds

from fastgrad.reference import pool as reference

DTYPES = (np.float32, np.float64)

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode), pairs as (h, w)
WINDOWS = [
    (1, 1, 5, 5, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), (1, 1), False),  # overlapping, padded
    (1, 2, 7, 7, (3, 3), (2, 2), (0, 0), (1, 1), True),  # ceil_mode: last window runs past
    (2, 1, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), True),  # ceil_mode and padding
    (1, 2, 8, 5, (3, 2), (1, 2), (1, 0), (1, 1), False),  # non-square kernel and stride
    (2, 2, 9, 8, (3, 2), (2, 1), (1, 1), (2, 2), False),  # dilation
    (1, 1, 7, 6, (2, 3), (3, 2), (1, 1), (3, 2), True),  # dilation and ceil_mode
    (1, 3, 4, 4, (4, 4), (1, 1), (2, 2), (1, 1), False),  # window larger than the input
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1), False),
    # wide rows: long runs of interior columns (the vectorised row loops and their tails)
    (1, 2, 5, 37, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (2, 1, 6, 45, (3, 3), (1, 1), (1, 1), (1, 1), False),
    (1, 1, 7, 61, (3, 2), (2, 3), (1, 1), (1, 1), True),
    (1, 1, 5, 40, (2, 3), (1, 2), (0, 1), (2, 2), False),
]


def out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling output size (pooling_output_shape)."""
    o = (size + 2 * p - d * (k - 1) - 1 + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def out_shape(case):
    n, c, h, w, k, s, p, d, ceil_mode = case
    return (n, c, out_size(h, k[0], s[0], p[0], d[0], ceil_mode), out_size(w, k[1], s[1], p[1], d[1], ceil_mode))


# every build present at every SIMD level it runs here (the baseline build's portable
# loops, its AVX2 ones, the x86-64-v3 build's)
VARIANTS = builds("pool", levels=(0, 1))


@pytest.fixture(params=VARIANTS or ["none"])
def compiled(request):
    if request.param == "none":
        pytest.skip("the compiled pooling kernels are not built")
    with at_level(request.param) as module:
        yield module


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def max_forward(module, x, case, n_threads=1):
    _, _, _, _, k, s, p, d, _ = case
    shape = out_shape(case)
    out = np.full(shape, np.nan, x.dtype)
    idx = np.full(shape, -7, np.int64)
    module.max_pool2d_forward(x, out, idx, *k, *s, *p, *d, n_threads)
    return out, idx


def max_backward(module, g, idx, x_shape, n_threads=1):
    gx = np.full(x_shape, np.nan, g.dtype)
    module.max_pool2d_backward(g, idx, gx, n_threads)
    return gx


def avg_forward(module, x, case, include_pad, divisor, n_threads=1):
    _, _, _, _, k, s, p, _, _ = case
    out = np.full(out_shape(case), np.nan, x.dtype)
    module.avg_pool2d_forward(x, out, *k, *s, *p, include_pad, divisor, n_threads)
    return out


def avg_backward(module, g, x_shape, case, include_pad, divisor, n_threads=1):
    _, _, _, _, k, s, p, _, _ = case
    gx = np.full(x_shape, np.nan, g.dtype)
    module.avg_pool2d_backward(g, gx, *k, *s, *p, include_pad, divisor, n_threads)
    return gx


def adaptive(module, x, out_hw, n_threads=1):
    out = np.full(x.shape[:2] + out_hw, np.nan, x.dtype)
    module.adaptive_avg_pool2d_forward(x, out, n_threads)
    return out


def adaptive_backward(module, g, x_shape, n_threads=1):
    gx = np.full(x_shape, np.nan, g.dtype)
    module.adaptive_avg_pool2d_backward(g, gx, n_threads)
    return gx


# --------------------------------------------------------------------------- max


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINDOWS)
def test_max_pool_matches_reference(compiled, case, dtype):
    x = data(case[:4], dtype, 1)
    out_c, idx_c = max_forward(compiled, x, case)
    out_r, idx_r = max_forward(reference, x, case)
    np.testing.assert_array_equal(out_c, out_r)
    np.testing.assert_array_equal(idx_c, idx_r)
    g = data(out_c.shape, dtype, 2)
    np.testing.assert_allclose(
        max_backward(compiled, g, idx_c, x.shape), max_backward(reference, g, idx_r, x.shape), **tol(dtype)
    )


@pytest.mark.parametrize("case", WINDOWS)
def test_max_pool_all_equal_input_routes_to_first_element_of_each_window(compiled, case):
    """Ties go to the first position of each window in scan order (PyTorch's rule), so
    with a constant input every window picks its top-left in-bounds tap."""
    n, c, h, w, k, s, p, d, _ = case
    x = np.full((n, c, h, w), 2.5, np.float32)
    out_shape_ = out_shape(case)
    expected = np.empty(out_shape_, np.int64)
    for oh in range(out_shape_[2]):
        first_h = next(oh * s[0] - p[0] + t * d[0] for t in range(k[0]) if oh * s[0] - p[0] + t * d[0] >= 0)
        for ow in range(out_shape_[3]):
            first_w = next(ow * s[1] - p[1] + t * d[1] for t in range(k[1]) if ow * s[1] - p[1] + t * d[1] >= 0)
            expected[:, :, oh, ow] = first_h * w + first_w
    expected_grad = np.zeros(x.shape, np.float32)
    for (i, j, oh, ow), where in np.ndenumerate(expected):
        expected_grad[i, j].flat[where] += 1.0
    for module in (compiled, reference):
        out, idx = max_forward(module, x, case)
        assert (out == 2.5).all()
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(max_backward(module, np.ones(out.shape, np.float32), idx, x.shape), expected_grad)


def test_max_pool_ties_keep_first_and_nan_wins_as_in_pytorch(compiled):
    # one row, one window of 4: PyTorch keeps the first of equal maxima, and a NaN
    # replaces the maximum whenever it is seen (so the last NaN's index is kept)
    case = (1, 1, 1, 4, (1, 4), (1, 4), (0, 0), (1, 1), False)
    rows = {
        (1.0, 3.0, 3.0, 2.0): (3.0, 1),
        (np.nan, 5.0, 1.0, 0.0): (np.nan, 0),
        (1.0, np.nan, 3.0, np.nan): (np.nan, 3),
        (-np.inf, -np.inf, -np.inf, -np.inf): (-np.inf, 0),
    }
    for module in (compiled, reference):
        for row, (value, index) in rows.items():
            x = np.array(row, np.float64).reshape(1, 1, 1, 4)
            out, idx = max_forward(module, x, case)
            assert idx.item() == index
            np.testing.assert_equal(out.item(), value)


# The 2x2 stride-2 window has its own loops (vectors of 8 floats or 4 doubles, half
# vectors, a scalar remainder; the backward's one-pass write only for rows of 8 or more
# windows tiling the input): shapes that hit it and shapes right beside it.
POOL2X2_SHAPES = [
    (1, 1, 1, 1),
    (1, 1, 2, 2),
    (1, 2, 3, 3),
    (2, 1, 4, 6),
    (1, 1, 5, 7),
    (1, 2, 8, 8),
    (1, 1, 9, 9),
    (1, 1, 10, 10),
    (1, 1, 6, 14),
    (1, 1, 6, 15),
    (1, 3, 16, 16),
    (1, 1, 17, 17),
    (1, 1, 4, 18),
    (1, 1, 4, 30),
    (2, 3, 28, 28),
    (1, 1, 7, 33),
    (1, 1, 4, 40),
]


@pytest.fixture
def pool2x2_module(compiled):
    """The compiled module on each SIMD level (``compiled``'s parameters): the 2x2 path's
    AVX2 loops, then its portable ones."""
    return compiled


def _tricky(shape, dtype, seed):
    """Ties (small integers), NaN with distinct payloads, +-inf and signed zeros."""
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([-1.0, 0.0, -0.0, 1.0, 2.0, np.inf, -np.inf, np.nan]), size=shape)
    x = x.astype(dtype)
    bits = x.view(np.uint32 if dtype == np.float32 else np.uint64)
    nan = np.isnan(x)
    bits[nan] |= rng.integers(1, 1 << 20, nan.sum()).astype(bits.dtype)
    return x


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL2X2_SHAPES)
def test_max_pool_2x2_stride_2_matches_reference(pool2x2_module, shape, dtype, ceil_mode):
    case = shape + ((2, 2), (2, 2), (0, 0), (1, 1), ceil_mode)
    if 0 in out_shape(case):
        pytest.skip("no window fits")
    for seed, x in enumerate([data(shape, dtype, 3), _tricky(shape, dtype, 4)]):
        out_c, idx_c = max_forward(pool2x2_module, x, case)
        out_r, idx_r = max_forward(reference, x, case)
        np.testing.assert_array_equal(idx_c, idx_r)
        assert out_c.tobytes() == out_r.tobytes()  # NaN payloads and zero signs too
        g = data(out_c.shape, dtype, 5 + seed)
        g.flat[::3] = -0.0
        gx_c = max_backward(pool2x2_module, g, idx_c, x.shape)
        gx_r = max_backward(reference, g, idx_r, x.shape)
        assert gx_c.tobytes() == gx_r.tobytes()  # 0 + g: -0 arrives as +0 in both


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ow", [8, 9, 13])
def test_max_pool_2x2_backward_with_indices_outside_their_windows(pool2x2_module, dtype, ow):
    """Indices the forward pass could not have produced (another window's position, or
    two outputs routing to one input) still add up as in the reference."""
    rng = np.random.default_rng(ow)
    oh = 3
    shape = (2, 2, 2 * oh, 2 * ow)
    g = data((2, 2, oh, ow), dtype, 6)
    hh, ww = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    own = 2 * hh * shape[3] + 2 * ww + rng.choice([0, 1, shape[3], shape[3] + 1], (2, 2, oh, ow))
    for where in [(0, 0, 0, 0), (1, 1, oh - 1, ow - 1), (1, 0, 1, ow // 2)]:
        idx = own.astype(np.int64).copy()
        idx[where] = 0 if where != (0, 0, 0, 0) else shape[2] * shape[3] - 1
        np.testing.assert_allclose(
            max_backward(pool2x2_module, g, idx, shape), max_backward(reference, g, idx, shape), **tol(dtype)
        )
        idx[where] = shape[2] * shape[3]
        gx = np.full(shape, 7.0, dtype)
        with pytest.raises(ValueError, match="outside the input plane"):
            pool2x2_module.max_pool2d_backward(g, idx, gx, 1)
        assert (gx == 7.0).all(), "grad_x written before the bad index was refused"


@pytest.mark.parametrize("where", [0, 4095, 4096, 5000, 9 * 5 * 5 * 25 - 1])
def test_max_backward_names_the_first_bad_index_in_a_long_call(compiled, where):
    """Indices are checked in blocks: the one reported is still the first bad one."""
    idx = np.zeros((9, 25, 5, 5), np.int64)
    idx.reshape(-1)[where] = -1
    idx.reshape(-1)[-1 if where != idx.size - 1 else 0] = 10**6  # a later one
    if where == idx.size - 1:
        where = 0
    g = np.ones(idx.shape, np.float32)
    gx = np.zeros((9, 25, 10, 10), np.float32)
    bad = np.unravel_index(where, idx.shape)
    with pytest.raises(ValueError, match=re.escape(f"indices[{bad}]")):
        compiled.max_pool2d_backward(g, idx, gx, 1)


def test_max_pool_2x2_threads_agree(pool2x2_module):
    x = data((8, 8, 32, 32), np.float32, 7)
    case = (8, 8, 32, 32, (2, 2), (2, 2), (0, 0), (1, 1), False)
    out1, idx1 = max_forward(pool2x2_module, x, case, 1)
    out2, idx2 = max_forward(pool2x2_module, x, case, 2)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(idx1, idx2)
    g = data(out1.shape, np.float32, 8)
    np.testing.assert_array_equal(
        max_backward(pool2x2_module, g, idx1, x.shape, 1), max_backward(pool2x2_module, g, idx1, x.shape, 2)
    )


def test_max_pool_overlapping_windows_add_gradients(compiled):
    """kernel 3 stride 2: the shared column of two windows holding both maxima gets both
    gradients."""
    case = (1, 1, 3, 5, (3, 3), (2, 2), (0, 0), (1, 1), False)
    x = np.zeros((1, 1, 3, 5), np.float32)
    x[0, 0, 1, 2] = 9.0  # in both windows
    for module in (compiled, reference):
        out, idx = max_forward(module, x, case)
        np.testing.assert_array_equal(idx.ravel(), [1 * 5 + 2, 1 * 5 + 2])
        gx = max_backward(module, np.array([[[[0.5, 0.25]]]], np.float32), idx, x.shape)
        assert gx[0, 0, 1, 2] == 0.75 and np.count_nonzero(gx) == 1


# --------------------------------------------------------------------------- average

AVG_WINDOWS = [c for c in WINDOWS if c[7] == (1, 1) and 2 * c[6][0] <= c[4][0] and 2 * c[6][1] <= c[4][1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("divisor", [None, 3, -2])
@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("case", AVG_WINDOWS)
def test_avg_pool_matches_reference(compiled, case, include_pad, divisor, dtype):
    x = data(case[:4], dtype, 3)
    out_c = avg_forward(compiled, x, case, include_pad, divisor)
    np.testing.assert_allclose(out_c, avg_forward(reference, x, case, include_pad, divisor), **tol(dtype))
    g = data(out_c.shape, dtype, 4)
    np.testing.assert_allclose(
        avg_backward(compiled, g, x.shape, case, include_pad, divisor),
        avg_backward(reference, g, x.shape, case, include_pad, divisor),
        **tol(dtype),
    )


def test_avg_pool_ceil_mode_clips_window_and_divisor_as_pytorch(compiled):
    """Values printed by torch 2.x for avg_pool2d(arange(25).view(1,1,5,5), 3, 2, 1,
    ceil_mode=True): the last window runs past the padded input and is clipped."""
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    case = (1, 1, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1), True)
    with_pad = np.array([[12 / 9, 27 / 9, 24 / 9], [63 / 9, 108 / 9, 81 / 9], [72 / 9, 117 / 9, 84 / 9]])
    without_pad = np.array([[3.0, 4.5, 6.0], [10.5, 12.0, 13.5], [18.0, 19.5, 21.0]])
    for module in (compiled, reference):
        np.testing.assert_allclose(avg_forward(module, x, case, True, None)[0, 0], with_pad, rtol=1e-12)
        np.testing.assert_allclose(avg_forward(module, x, case, False, None)[0, 0], without_pad, rtol=1e-12)
    ones = np.ones((1, 1, 6, 6), np.float64)
    case = (1, 1, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), True)
    edge = [4 / 9, 6 / 9, 6 / 9, 3 / 9]  # torch: the 4th window covers 2 input + 1 pad columns
    for module in (compiled, reference):
        np.testing.assert_allclose(avg_forward(module, ones, case, True, None)[0, 0, 0], edge, rtol=1e-12)


# --------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((5, 7), (3, 4)), ((6, 6), (1, 1)), ((4, 5), (4, 5)), ((3, 3), (5, 7)), ((7, 5), (2, 3)), ((1, 1), (2, 1))],
)
def test_adaptive_avg_pool_matches_reference(compiled, in_hw, out_hw, dtype):
    x = data((2, 3) + in_hw, dtype, 5)
    out_c = adaptive(compiled, x, out_hw)
    np.testing.assert_allclose(out_c, adaptive(reference, x, out_hw), **tol(dtype))
    g = data(out_c.shape, dtype, 6)
    np.testing.assert_allclose(
        adaptive_backward(compiled, g, x.shape), adaptive_backward(reference, g, x.shape), **tol(dtype)
    )


def test_adaptive_regions_are_pytorchs(compiled):
    # H=5 into 3 rows: floor(i*5/3) .. ceil((i+1)*5/3): rows [0,2), [1,4), [3,5)
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    for module in (compiled, reference):
        np.testing.assert_allclose(adaptive(module, x, (3, 1)).ravel(), [0.5, 2.0, 3.5])


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_agree_with_one_thread(compiled, dtype):
    """Above the threading threshold (planes split over threads): bit-identical."""
    x = data((16, 8, 28, 28), dtype, 7)
    case = (16, 8, 28, 28, (3, 3), (2, 2), (1, 1), (1, 1), True)
    out1, idx1 = max_forward(compiled, x, case, 1)
    out2, idx2 = max_forward(compiled, x, case, 2)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(idx1, idx2)
    g = data(out1.shape, dtype, 8)
    np.testing.assert_array_equal(
        max_backward(compiled, g, idx1, x.shape, 1), max_backward(compiled, g, idx1, x.shape, 2)
    )
    np.testing.assert_array_equal(
        avg_forward(compiled, x, case, False, None, 1), avg_forward(compiled, x, case, False, None, 2)
    )
    np.testing.assert_array_equal(
        avg_backward(compiled, g, x.shape, case, True, None, 1), avg_backward(compiled, g, x.shape, case, True, None, 2)
    )
    np.testing.assert_array_equal(adaptive(compiled, x, (5, 3), 1), adaptive(compiled, x, (5, 3), 2))
    ga = data((16, 8, 5, 3), dtype, 9)
    np.testing.assert_array_equal(
        adaptive_backward(compiled, ga, x.shape, 1), adaptive_backward(compiled, ga, x.shape, 2)
    )


# --------------------------------------------------------------------------- bad input


@pytest.fixture(params=["compiled", "reference"])
def home(request, compiled):
    return compiled if request.param == "compiled" else reference


def test_max_forward_rejects_bad_arrays(home):
    x = data((1, 2, 5, 5), np.float32, 0)
    out, idx = np.empty((1, 2, 2, 2), np.float32), np.empty((1, 2, 2, 2), np.int64)
    args = (2, 2, 2, 2, 0, 0, 1, 1, 1)
    cases = [
        ((x.astype(np.int32), out, idx), TypeError, "x must be float32 or float64"),
        ((x, out.astype(np.float64), idx), TypeError, "out has dtype float64"),
        ((x, out, idx.astype(np.int32)), TypeError, "indices has dtype int32"),
        ((x[0], out, idx), ValueError, r"x must have 4 dimensions, got shape \(2, 5, 5\)"),
        ((x[..., ::2], out, idx), ValueError, "x must be C-contiguous"),
        ((x, np.empty((1, 3, 2, 2), np.float32), idx), ValueError, "batch and channel sizes"),
        ((x, out, np.empty((1, 2, 2, 3), np.int64)), ValueError, "indices has shape"),
        ((x, out, "idx"), TypeError, "indices must be a numpy array"),
    ]
    for arrays, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            home.max_pool2d_forward(*arrays, *args)
    for i, name in enumerate(["kernel_h", "kernel_w", "stride_h", "stride_w"]):
        bad = list(args)
        bad[i] = 0
        with pytest.raises(ValueError, match=name):
            home.max_pool2d_forward(x, out, idx, *bad)
    with pytest.raises(ValueError, match="pad_w"):
        home.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, -1, 1, 1, 1)
    with pytest.raises(ValueError, match="dil_h"):
        home.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 0, 1, 1)
    with pytest.raises(TypeError, match="stride_h"):
        home.max_pool2d_forward(x, out, idx, 2, 2, True, 2, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="kernel_h"):
        home.max_pool2d_forward(x, out, idx, 2**40, 2, 2, 2, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="n_threads"):
        home.max_pool2d_forward(x, out, idx, 2, 2, 2, 2, 0, 0, 1, 1, 0)
    # a window of only padding has no index to route a gradient to: refused
    tiny, o1, i1 = (
        np.ones((1, 1, 1, 1), np.float32),
        np.empty((1, 1, 1, 1), np.float32),
        np.empty((1, 1, 1, 1), np.int64),
    )
    with pytest.raises(ValueError, match="covers no input position"):
        home.max_pool2d_forward(tiny, o1, i1, 2, 1, 1, 1, 1, 0, 2, 1, 1)
    # more outputs than the input has windows for
    with pytest.raises(ValueError, match="covers no input position"):
        home.max_pool2d_forward(x, np.empty((1, 2, 9, 2), np.float32), np.empty((1, 2, 9, 2), np.int64), *args)


def test_max_backward_rejects_bad_indices(home):
    g = np.ones((1, 1, 2, 2), np.float32)
    gx = np.empty((1, 1, 4, 4), np.float32)
    for bad in (-1, 16, 2**40):
        idx = np.zeros((1, 1, 2, 2), np.int64)
        idx[0, 0, 1, 0] = bad
        with pytest.raises(ValueError, match=rf"indices\[.*\] = {bad} is outside the input plane"):
            home.max_pool2d_backward(g, idx, gx, 1)
    idx = np.zeros((1, 1, 2, 2), np.int64)
    with pytest.raises(ValueError, match="indices has shape"):
        home.max_pool2d_backward(g, np.zeros((1, 1, 2, 3), np.int64), gx, 1)
    with pytest.raises(TypeError, match="indices has dtype float32"):
        home.max_pool2d_backward(g, idx.astype(np.float32), gx, 1)
    with pytest.raises(TypeError, match="grad_x has dtype float64"):
        home.max_pool2d_backward(g, idx, gx.astype(np.float64), 1)
    with pytest.raises(ValueError, match="batch and channel sizes"):
        home.max_pool2d_backward(g, idx, np.empty((2, 1, 4, 4), np.float32), 1)
    read_only = np.empty((1, 1, 4, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="grad_x is read-only"):
        home.max_pool2d_backward(g, idx, read_only, 1)


def test_avg_and_adaptive_reject_bad_arrays(home):
    x = data((1, 2, 5, 5), np.float32, 0)
    out = np.empty((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="divisor_override must be a nonzero integer"):
        home.avg_pool2d_forward(x, out, 2, 2, 2, 2, 0, 0, True, 0, 1)
    with pytest.raises(TypeError, match="divisor_override must be None or an integer"):
        home.avg_pool2d_forward(x, out, 2, 2, 2, 2, 0, 0, True, 2.0, 1)
    with pytest.raises(ValueError, match="stride_w"):
        home.avg_pool2d_backward(out, x.copy(), 2, 2, 2, 0, 0, 0, True, None, 1)
    with pytest.raises(TypeError, match="grad_x has dtype float64"):
        home.avg_pool2d_backward(out, x.astype(np.float64), 2, 2, 2, 2, 0, 0, True, None, 1)
    with pytest.raises(ValueError, match="out must have 4 dimensions"):
        home.adaptive_avg_pool2d_forward(x, out[0], 1)
    with pytest.raises(ValueError, match="empty plane"):
        home.adaptive_avg_pool2d_forward(np.empty((1, 2, 0, 5), np.float32), out, 1)
    with pytest.raises(ValueError, match="empty plane"):
        home.adaptive_avg_pool2d_backward(out, np.empty((1, 2, 5, 0), np.float32), 1)
    with pytest.raises(ValueError, match="batch and channel sizes"):
        home.adaptive_avg_pool2d_backward(out, np.empty((1, 1, 5, 5), np.float32), 1)


def test_empty_batches_are_fine(home):
    x = np.empty((0, 3, 5, 5), np.float32)
    case = (0, 3, 5, 5, (2, 2), (2, 2), (0, 0), (1, 1), False)
    out, idx = max_forward(home, x, case)
    assert out.shape == (0, 3, 2, 2)
    assert max_backward(home, out, idx, x.shape).shape == x.shape
    assert avg_forward(home, x, case, True, None).shape == (0, 3, 2, 2)
    assert adaptive(home, x, (2, 2)).shape == (0, 3, 2, 2)


# --------------------------------------------------------------------------- hostile input


def test_output_sharing_memory_with_an_input_is_refused(compiled):
    for module in (compiled, reference):
        x = np.ones((1, 2, 4, 4), np.float32)
        with pytest.raises(ValueError, match="avg_pool2d_forward: out overlaps x"):
            module.avg_pool2d_forward(x, x, 1, 1, 1, 1, 0, 0, True, None, 1)
        g = np.ones((1, 2, 4, 4), np.float64)
        with pytest.raises(ValueError, match="adaptive_avg_pool2d_backward: grad_x overlaps"):
            module.adaptive_avg_pool2d_backward(g, g, 1)
        idx = np.zeros((1, 2, 4, 4), np.int64)
        with pytest.raises(ValueError, match="max_pool2d_backward: grad_x overlaps"):
            module.max_pool2d_backward(g, idx, g, 1)


# a non-integer is a TypeError, an integer out of range a ValueError
@pytest.mark.parametrize("bad,error", [(None, TypeError), (1.5, TypeError), ("2", TypeError), (2**70, ValueError)])
def test_bad_scalar_arguments_name_the_kernel(compiled, bad, error):
    x = np.ones((1, 1, 4, 4), np.float32)
    for module in (compiled, reference):
        with pytest.raises(error, match="avg_pool2d_forward: stride_h"):
            module.avg_pool2d_forward(x, np.empty((1, 1, 2, 2), np.float32), 2, 2, bad, 2, 0, 0, True, None, 1)


def test_backward_into_empty_planes_returns_at_once(compiled):
    """A gradient of zero size but enormous planes (2**28 rows of width 0) is written at
    once: there is nothing to write, grad_out is left as it was, and the arguments are
    still checked first."""
    for module in (compiled, reference):
        g = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
        empty = np.empty((1, 1, 2**28, 0), np.float32)
        assert module.avg_pool2d_backward(g, empty, 2, 2, 2, 2, 0, 0, True, None, 1) is None
        assert module.adaptive_avg_pool2d_backward(np.empty((1, 1, 0, 3), np.float32), empty, 1) is None
        np.testing.assert_array_equal(g, np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3))
        assert empty.shape == (1, 1, 2**28, 0)
        with pytest.raises(ValueError, match="avg_pool2d_backward: stride_h"):
            module.avg_pool2d_backward(g, empty, 2, 2, 0, 2, 0, 0, True, None, 1)
        with pytest.raises(TypeError, match="adaptive_avg_pool2d_backward"):
            module.adaptive_avg_pool2d_backward(g.astype(np.float64), empty, 1)
