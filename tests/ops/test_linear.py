"""linear and linear_relu as ops: gradients against finite differences (float64), values
and gradients against PyTorch (float32), leading dimensions, skipped gradients, and
clear errors naming the function."""

import numpy as np
import pytest

import fastgrad
from fastgrad.autograd import gradcheck
from fastgrad.ops.linear import linear, linear_relu


def leaf(array, requires_grad=True):
    return fastgrad.tensor(array, requires_grad=requires_grad)


def rand(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("x_shape", [(3, 5), (1, 5), (2, 3, 5), (5,), (6, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gradcheck(x_shape, with_bias):
    inputs = [leaf(rand(x_shape, 0)), leaf(rand((4, 5), 1))]
    if with_bias:
        inputs.append(leaf(rand(4, 2)))
    assert gradcheck(lambda *t: linear(*t), inputs)


@pytest.mark.parametrize("x_shape", [(3, 7), (2, 2, 7), (6, 7)])
def test_linear_relu_gradcheck(x_shape):
    x, w, b = rand(x_shape, 3), rand((5, 7), 4), rand(5, 5)
    pre = x @ w.T + b
    assert np.abs(pre).min() > 1e-3  # no pre-activation near relu's kink
    assert (pre < 0).any() and (pre > 0).any()
    assert gradcheck(lambda *t: linear_relu(*t), [leaf(x), leaf(w), leaf(b)])


def test_only_requested_gradients_are_computed():
    x, w, b = leaf(rand((3, 4), 0), False), leaf(rand((2, 4), 1)), leaf(rand(2, 2), False)
    linear(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None
    np.testing.assert_allclose(w.grad.numpy(), np.tile(x.numpy().sum(axis=0), (2, 1)), rtol=1e-12)
    x2 = leaf(rand((3, 4), 0))
    out = linear(x2, leaf(rand((2, 4), 1), False))
    out.sum().backward()
    assert x2.grad.shape == (3, 4)


def test_shapes_dtypes_and_empty_dimensions():
    w = leaf(rand((4, 3), 0, np.float32))
    assert linear(leaf(rand((2, 5, 3), 1, np.float32)), w).shape == (2, 5, 4)
    assert linear(leaf(rand(3, 1, np.float32)), w).shape == (4,)
    y = linear(leaf(rand((2, 3), 1, np.float32)), w)
    assert y.dtype == np.float32
    # an empty batch, and no input features at all (the output is the bias)
    assert linear(leaf(np.zeros((0, 3), np.float32)), w).shape == (0, 4)
    b = leaf(np.array([1.0, -2.0], np.float32))
    out = linear_relu(leaf(np.zeros((3, 0), np.float32)), leaf(np.zeros((2, 0), np.float32)), b)
    np.testing.assert_array_equal(out.detach().numpy(), [[1.0, 0.0]] * 3)


def test_non_contiguous_inputs_work():
    xt, wt = leaf(rand((5, 3), 0)), leaf(rand((8, 5), 1))
    x, w = xt.T, wt[::2]  # a transposed view and every other row
    assert not x.data.flags.c_contiguous and not w.data.flags.c_contiguous
    out = linear(x, w)
    np.testing.assert_allclose(out.detach().numpy(), x.data @ w.data.T, rtol=1e-12)
    g = rand(out.shape, 2)
    out.backward(fastgrad.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), (g @ w.data).T, rtol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy()[::2], g.T @ x.data, rtol=1e-12)


# --------------------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize(
    "x_shape,w_shape", [((4, 400), (120, 400)), ((1, 84), (10, 84)), ((3, 2, 20), (7, 20)), ((37, 130), (33, 130))]
)
@pytest.mark.parametrize("fused", [False, True])
def test_matches_pytorch(x_shape, w_shape, fused):
    torch = pytest.importorskip("torch")
    x, w, b = rand(x_shape, 0, np.float32), rand(w_shape, 1, np.float32) * 0.1, rand(w_shape[0], 2, np.float32)
    g = rand(x_shape[:-1] + (w_shape[0],), 3, np.float32)
    ours = [leaf(a) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = (linear_relu if fused else linear)(*ours)
    ty = torch.nn.functional.linear(*theirs)
    if fused:
        ty = torch.relu(ty)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    y.backward(fastgrad.tensor(g))
    ty.backward(torch.tensor(g))
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_function():
    x, w = leaf(rand((8, 300), 0, np.float32)), leaf(rand((120, 400), 1, np.float32))
    with pytest.raises(ValueError, match="linear: input has 300 features, weight expects 400"):
        linear(x, w)
    with pytest.raises(ValueError, match="linear_relu: input has 300 features, weight expects 400"):
        linear_relu(x, w)
    w3 = leaf(rand((4, 3), 1, np.float32))
    with pytest.raises(TypeError, match="linear: input has dtype float64 but weight has float32"):
        linear(leaf(rand((2, 3), 0)), w3)
    with pytest.raises(TypeError, match="linear: bias has dtype float64"):
        linear(leaf(rand((2, 3), 0, np.float32)), w3, leaf(rand(4, 0)))
    with pytest.raises(ValueError, match=r"linear: expected bias of shape \(4,\), got \(3,\)"):
        linear(leaf(rand((2, 3), 0, np.float32)), w3, leaf(rand(3, 0, np.float32)))
    with pytest.raises(ValueError, match="linear: expected weight with 2 dimensions"):
        linear(leaf(rand((2, 3), 0, np.float32)), leaf(rand((4, 3, 1), 0, np.float32)))
    with pytest.raises(ValueError, match="linear: expected input of shape"):
        linear(leaf(np.float32(1.0)), w3)
    with pytest.raises(TypeError, match="linear: input must be a float32 or float64 tensor"):
        linear(fastgrad.tensor([[1, 2, 3]]), w3)
    with pytest.raises(TypeError, match="linear: input must be a Tensor"):
        linear(np.ones((2, 3), np.float32), w3)
    with pytest.raises(TypeError, match="linear: bias must be a Tensor or None"):
        linear(leaf(rand((2, 3), 0, np.float32)), w3, [0.0] * 4)
    huge = fastgrad.from_numpy(np.broadcast_to(np.float32(1), (10**6, 10**6)))  # occupies one element
    with pytest.raises(ValueError, match="linear_relu: input of shape .* more than this machine's memory"):
        linear_relu(huge, leaf(rand((2, 10**6), 1, np.float32)))
