"""Pooling ops: gradients against finite differences (float64, max-pool inputs without
ties), values, indices and gradients against PyTorch (float32) over a grid with
overlapping windows, padding, dilation and ceil_mode, ties and NaN as PyTorch, unbatched
inputs, and clear errors naming the function."""

import numpy as np
import pytest

import fastgrad
from fastgrad.autograd import gradcheck
from fastgrad.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d


def leaf(array, requires_grad=True):
    return fastgrad.tensor(array, requires_grad=requires_grad)


def distinct(shape, seed=0):
    """float64 values at least 0.01 apart: finite differences (eps 1e-6) never swap a
    window's maximum."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.01 - n * 0.005).reshape(shape)


def rand(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# (input shape, kwargs shared by max and avg pooling)
GRID = [
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((1, 2, 7, 9), dict(kernel_size=3, stride=2)),  # overlapping windows
    ((2, 1, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 7, 7), dict(kernel_size=3, stride=2, ceil_mode=True)),  # last window runs past
    ((1, 1, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 2, 5, 8), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))),
    ((1, 3, 4, 4), dict(kernel_size=4, stride=1, padding=2)),
]
MAX_ONLY = [
    ((1, 2, 9, 8), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=2)),
    ((1, 1, 7, 6), dict(kernel_size=(2, 3), stride=(3, 2), padding=1, dilation=(3, 2), ceil_mode=True)),
]


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("shape,kw", GRID + MAX_ONLY)
def test_max_pool_gradcheck(shape, kw):
    assert gradcheck(lambda t: max_pool2d(t, **kw), (leaf(distinct(shape)),))


@pytest.mark.parametrize("shape,kw", GRID)
@pytest.mark.parametrize("extra", [{}, dict(count_include_pad=False), dict(divisor_override=5)])
def test_avg_pool_gradcheck(shape, kw, extra):
    assert gradcheck(lambda t: avg_pool2d(t, **kw, **extra), (leaf(rand(shape, 1)),))


@pytest.mark.parametrize("in_hw,out", [((5, 7), (3, 4)), ((6, 6), 1), ((3, 3), (5, 7)), ((4, 5), (None, 2))])
def test_adaptive_avg_pool_gradcheck(in_hw, out):
    assert gradcheck(lambda t: adaptive_avg_pool2d(t, out), (leaf(rand((2, 2) + in_hw, 2)),))


def test_unbatched_input_and_indices():
    x = leaf(distinct((3, 6, 5)))
    y, idx = max_pool2d(x, 2, return_indices=True)
    assert y.shape == (3, 3, 2) and idx.shape == (3, 3, 2) and idx.dtype == np.int64
    assert not idx.requires_grad
    assert avg_pool2d(x, 2).shape == (3, 3, 2)
    assert adaptive_avg_pool2d(x, (2, 4)).shape == (3, 2, 4)
    assert gradcheck(lambda t: max_pool2d(t, 3, 2, 1), (x,))


# --------------------------------------------------------------------------- PyTorch parity


def _compare(ours, theirs, x, g, torch):
    xt = leaf(x)
    tx = torch.tensor(x, requires_grad=True)
    y, ty = ours(xt), theirs(tx)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-6)
    y.backward(fastgrad.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape,kw", GRID + MAX_ONLY)
def test_max_pool_matches_pytorch(shape, kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rand(shape, 3, np.float32)
    y, idx = max_pool2d(leaf(x), **kw, return_indices=True)
    ty, tidx = F.max_pool2d(torch.tensor(x), **kw, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    g = rand(y.shape, 4, np.float32)
    _compare(lambda t: max_pool2d(t, **kw), lambda t: F.max_pool2d(t, **kw), x, g, torch)


@pytest.mark.parametrize("shape,kw", GRID)
@pytest.mark.parametrize("extra", [{}, dict(count_include_pad=False), dict(divisor_override=3)])
def test_avg_pool_matches_pytorch(shape, kw, extra):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rand(shape, 5, np.float32)
    g = rand(F.avg_pool2d(torch.tensor(x), **kw, **extra).shape, 6, np.float32)
    _compare(lambda t: avg_pool2d(t, **kw, **extra), lambda t: F.avg_pool2d(t, **kw, **extra), x, g, torch)


@pytest.mark.parametrize(
    "in_hw,out", [((5, 7), (3, 4)), ((8, 8), 1), ((3, 3), (5, 7)), ((10, 6), (4, None)), ((7, 7), 7)]
)
def test_adaptive_avg_pool_matches_pytorch(in_hw, out):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rand((2, 3) + in_hw, 7, np.float32)
    g = rand(F.adaptive_avg_pool2d(torch.tensor(x), out).shape, 8, np.float32)
    _compare(lambda t: adaptive_avg_pool2d(t, out), lambda t: F.adaptive_avg_pool2d(t, out), x, g, torch)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2),
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=2, stride=1, dilation=2),
    ],
)
def test_max_pool_ties_route_like_pytorch(kw):
    """An all-equal input: every gradient goes to the first element of each window."""
    torch = pytest.importorskip("torch")
    x = np.full((2, 2, 7, 6), 1.5, np.float32)
    y = max_pool2d(leaf(x), **kw)
    g = rand(y.shape, 9, np.float32)
    _compare(lambda t: max_pool2d(t, **kw), lambda t: torch.nn.functional.max_pool2d(t, **kw), x, g, torch)
    # and in the steps of a plateau with a few ties at the top
    x = np.round(rand((1, 2, 9, 8), 10, np.float32))
    g = rand(max_pool2d(leaf(x), **kw).shape, 11, np.float32)
    _compare(lambda t: max_pool2d(t, **kw), lambda t: torch.nn.functional.max_pool2d(t, **kw), x, g, torch)


def test_max_pool_nan_like_pytorch():
    torch = pytest.importorskip("torch")
    x = rand((1, 1, 6, 6), 12, np.float32)
    x[0, 0, 1, 1] = x[0, 0, 4, 2] = x[0, 0, 4, 3] = np.nan
    y, idx = max_pool2d(leaf(x), 3, 2, 1, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y.detach().numpy(), ty.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())


# --------------------------------------------------------------------------- errors


def test_errors_name_the_function():
    x = leaf(rand((1, 2, 5, 5), 0, np.float32))
    cases = [
        (
            lambda: max_pool2d(leaf(rand((5, 5), 0, np.float32)), 2),
            ValueError,
            r"max_pool2d: expected input with 4 dimensions \(N, C, H, W\) or 3 \(C, H, W\), got shape \(5, 5\)",
        ),
        (
            lambda: avg_pool2d(leaf(rand((1, 1, 1, 5, 5), 0, np.float32)), 2),
            ValueError,
            "avg_pool2d: expected input with 4 dimensions",
        ),
        (
            lambda: max_pool2d(x, 3, padding=2),
            ValueError,
            r"max_pool2d: padding \(2, 2\) must be at most half of kernel_size \(3, 3\)",
        ),
        (lambda: avg_pool2d(x, 2, padding=(0, 2)), ValueError, "avg_pool2d: padding .* at most half"),
        (lambda: max_pool2d(x, 2, stride=0), ValueError, "max_pool2d: stride must be >= 1"),
        (lambda: avg_pool2d(x, 2, stride=(1, -1)), ValueError, "avg_pool2d: stride must be >= 1"),
        (lambda: max_pool2d(x, 0), ValueError, "max_pool2d: kernel_size must be >= 1"),
        (lambda: max_pool2d(x, 2, padding=-1), ValueError, "max_pool2d: padding must be >= 0"),
        (lambda: max_pool2d(x, 2, dilation=0), ValueError, "max_pool2d: dilation must be >= 1"),
        (
            lambda: max_pool2d(x, 6),
            ValueError,
            r"max_pool2d: the window spans 6 along height .* larger than the padded input \(5 \+ 2\*0 = 5\)",
        ),
        (lambda: max_pool2d(x, 3, dilation=3), ValueError, "max_pool2d: the window spans 7"),
        (lambda: avg_pool2d(x, (2, 8), padding=(0, 1)), ValueError, "avg_pool2d: the window spans 8 along width"),
        (
            lambda: max_pool2d(leaf(rand((1, 1, 1, 4), 0, np.float32)), (2, 1), 1, (1, 0), (2, 1)),
            ValueError,
            "max_pool2d: .* covers only padding",
        ),
        (lambda: max_pool2d(x, 2.0), TypeError, "max_pool2d: kernel_size must be an int or a pair"),
        (lambda: max_pool2d(x, (2, 2, 2)), TypeError, "max_pool2d: kernel_size must be an int or a pair"),
        (lambda: avg_pool2d(x, 2, divisor_override=0), ValueError, "avg_pool2d: divisor_override must not be zero"),
        (lambda: avg_pool2d(x, 2, divisor_override=1.5), TypeError, "avg_pool2d: divisor_override must be None"),
        (lambda: adaptive_avg_pool2d(x, (2, -1)), ValueError, "adaptive_avg_pool2d: output_size entries"),
        (lambda: adaptive_avg_pool2d(x, (1, 2, 3)), TypeError, "adaptive_avg_pool2d: output_size must be"),
        (
            lambda: adaptive_avg_pool2d(leaf(np.zeros((1, 2, 0, 3), np.float32)), 2),
            ValueError,
            "adaptive_avg_pool2d: expected non-empty channel and spatial dimensions",
        ),
        (
            lambda: max_pool2d(fastgrad.tensor(np.ones((1, 1, 4, 4), np.int64)), 2),
            TypeError,
            "max_pool2d: input must be a float32 or float64 tensor, got dtype int64",
        ),
        (lambda: avg_pool2d(np.ones((1, 1, 4, 4), np.float32), 2), TypeError, "avg_pool2d: input must be a Tensor"),
    ]
    for call, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call()


def test_defaults_and_empty_batch():
    x = leaf(rand((2, 1, 6, 4), 0, np.float32))
    assert max_pool2d(x, 2).shape == (2, 1, 3, 2)  # stride defaults to kernel_size
    assert avg_pool2d(x, (3, 2), stride=[]).shape == (2, 1, 2, 2)
    assert max_pool2d(x, [2]).shape == (2, 1, 3, 2)
    assert adaptive_avg_pool2d(x, (0, 2)).shape == (2, 1, 0, 2)
    empty = leaf(np.zeros((0, 2, 5, 5), np.float32))
    y = max_pool2d(empty, 2)
    assert y.shape == (0, 2, 2, 2)
    y.sum().backward()
    assert empty.grad.shape == (0, 2, 5, 5)
