"""Activation ops: gradients against finite differences (float64), values and gradients
against PyTorch (float32), softmax over every dim of 3-D inputs, and clear errors."""

import warnings

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels
from fastgrad.autograd import gradcheck
from fastgrad.ops import activation as A


def away_from_kinks(shape, seed=0):
    """Random float64 values with |x| >= 0.1, so relu's kink is never straddled."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)


def leaf(array, requires_grad=True):
    return fastgrad.tensor(array, requires_grad=requires_grad)


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    "op",
    [
        A.relu,
        A.sigmoid,
        A.tanh,
        lambda x: A.leaky_relu(x, 0.2),
        lambda x: A.leaky_relu(x, -0.5),
        lambda x: A.leaky_relu(x),
    ],
)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 2)])
def test_elementwise_gradcheck(op, shape):
    assert gradcheck(op, (leaf(away_from_kinks(shape)),))


@pytest.mark.parametrize("op", [A.softmax, A.log_softmax])
@pytest.mark.parametrize(
    "shape,dim", [((4,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((), 0)]
)
def test_softmax_gradcheck(op, shape, dim):
    x = leaf(np.random.default_rng(1).standard_normal(shape) * 2)
    assert gradcheck(lambda t: op(t, dim), (x,))


def test_softmax_dtype_argument_gradcheck():
    x = leaf(np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32))
    y = A.softmax(x, 1, dtype=np.float64)
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert gradcheck(lambda t: A.log_softmax(t, 0, dtype=np.float64), (x,))


# --------------------------------------------------------------------------- PyTorch parity

torch_ops = {
    "relu": lambda torch, x: torch.relu(x),
    "sigmoid": lambda torch, x: torch.sigmoid(x),
    "tanh": lambda torch, x: torch.tanh(x),
    "leaky_relu": lambda torch, x: torch.nn.functional.leaky_relu(x, 0.1),
}
our_ops = {
    "relu": A.relu,
    "sigmoid": A.sigmoid,
    "tanh": A.tanh,
    "leaky_relu": lambda x: A.leaky_relu(x, 0.1),
}


def against_torch(ours, theirs, x_np, seed=3):
    """Forward values and input gradients (for a random upstream gradient), both float32."""
    torch = pytest.importorskip("torch")
    x = leaf(x_np)
    out = ours(x)
    g = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    out.backward(fastgrad.tensor(g))
    xt = torch.tensor(x_np, requires_grad=True)
    out_t = theirs(torch, xt)
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize("name", sorted(our_ops))
@pytest.mark.parametrize("shape", [(7,), (4, 9), (2, 3, 5, 5)])
def test_elementwise_matches_torch(name, shape):
    x = (np.random.default_rng(4).standard_normal(shape) * 5).astype(np.float32)
    x.reshape(-1)[:3] = [1e4, -1e4, 0.0]
    against_torch(our_ops[name], torch_ops[name], x)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_softmax_3d_matches_torch(log, dim):
    x = (np.random.default_rng(5).standard_normal((3, 4, 5)) * 3).astype(np.float32)
    ours = (lambda t: A.log_softmax(t, dim)) if log else (lambda t: A.softmax(t, dim))
    theirs = (lambda torch, t: torch.log_softmax(t, dim)) if log else (lambda torch, t: torch.softmax(t, dim))
    against_torch(ours, theirs, x)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_huge_logits_match_torch(log):
    x = np.array([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 3.0]], np.float32)
    ours = (lambda t: A.log_softmax(t, 1)) if log else (lambda t: A.softmax(t, 1))
    theirs = (lambda torch, t: torch.log_softmax(t, 1)) if log else (lambda torch, t: torch.softmax(t, 1))
    against_torch(ours, theirs, x)


def test_tensor_methods_and_top_level_functions():
    x = leaf(np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32))
    np.testing.assert_array_equal(x.relu().data, [[0, 2], [3, 0]])
    np.testing.assert_allclose(x.softmax(1).data.sum(axis=1), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(np.exp(x.log_softmax(0).data).sum(axis=0), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(fastgrad.sigmoid(x).data, 1 / (1 + np.exp(-x.data)), rtol=1e-6)
    np.testing.assert_allclose(fastgrad.tanh(x).data, np.tanh(x.data), rtol=1e-6)
    np.testing.assert_allclose(fastgrad.softmax(x, dim=0).data, x.softmax(0).data)
    np.testing.assert_allclose(fastgrad.log_softmax(x, -1).data, x.log_softmax(1).data)


def test_inplace_flag_computes_out_of_place():
    data = np.array([-1.0, 2.0], np.float32)
    x = fastgrad.tensor(data.copy())
    np.testing.assert_array_equal(A.relu(x, inplace=True).data, [0, 2])
    np.testing.assert_array_equal(A.leaky_relu(x, 0.5, inplace=True).data, [-0.5, 2])
    np.testing.assert_array_equal(x.data, data)  # the input is left as it was


def test_non_contiguous_input_and_gradient():
    base = np.random.default_rng(6).standard_normal((4, 6))
    x = leaf(base)
    y = A.tanh(x.transpose(0, 1))  # a strided view reaches the op
    np.testing.assert_allclose(y.data, np.tanh(base.T), rtol=1e-12)
    z = A.softmax(x, 0)
    (z * fastgrad.tensor(np.ones((1, 6)))).sum().backward()  # broadcast gradient view
    np.testing.assert_allclose(x.grad.data, 0, atol=1e-12)


def test_implicit_dim_warns_like_torch():
    x = fastgrad.tensor(np.random.default_rng(7).standard_normal((2, 3)))
    with pytest.warns(UserWarning, match="implicit dimension choice"):
        y = A.softmax(x)
    np.testing.assert_allclose(y.data, A.softmax(x, 1).data)
    x3 = fastgrad.tensor(np.random.default_rng(7).standard_normal((2, 3, 4)))
    with pytest.warns(UserWarning):
        y3 = A.log_softmax(x3)
    np.testing.assert_allclose(y3.data, A.log_softmax(x3, 0).data)


def test_same_results_on_both_backends():
    x_np = np.random.default_rng(8).standard_normal((3, 5))
    results = {}
    previous = kernels.backend
    try:
        for backend in ("reference", "compiled"):
            try:
                kernels.use_backend(backend)
            except ImportError:
                pytest.skip("compiled kernels are not built")
            x = leaf(x_np)
            (A.log_softmax(x, 0) * A.sigmoid(x) + A.leaky_relu(A.tanh(x), 0.3)).sum().backward()
            results[backend] = x.grad.data
    finally:
        kernels.use_backend(previous)
    np.testing.assert_allclose(results["compiled"], results["reference"], rtol=1e-12)


def test_no_grad_records_nothing():
    x = leaf(np.ones(3))
    with fastgrad.no_grad():
        y = A.relu(x)
    assert y.grad_fn is None and not y.requires_grad


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_integer_input_rejected(name):
    with pytest.raises(TypeError, match=rf"{name}: expected a float32 or float64 tensor, got dtype int64"):
        getattr(A, name)(fastgrad.tensor([1, 2]))


def test_non_tensor_rejected():
    with pytest.raises(TypeError, match="relu: expected a Tensor as input, got ndarray"):
        A.relu(np.ones(3))
    with pytest.raises(TypeError, match="softmax: expected a Tensor as input, got list"):
        A.softmax([1.0, 2.0], 0)


def test_bad_softmax_dim():
    x = fastgrad.tensor(np.ones((2, 3)))
    with pytest.raises(IndexError, match="softmax: dim 2 is out of range for a tensor with 2 dimensions"):
        A.softmax(x, 2)
    with pytest.raises(IndexError, match="log_softmax: dim -3 is out of range"):
        A.log_softmax(x, -3)
    with pytest.raises(TypeError, match=r"softmax: dim must be an integer, got \(0, 1\)"):
        A.softmax(x, (0, 1))
    with pytest.raises(TypeError, match="log_softmax: dtype must be float32 or float64, got int64"):
        A.log_softmax(x, 1, dtype=np.int64)


def test_bad_negative_slope():
    with pytest.raises(TypeError, match="leaky_relu: negative_slope must be a real number"):
        A.leaky_relu(fastgrad.tensor([1.0]), "0.1")


def test_no_warning_with_explicit_dim():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.softmax(fastgrad.tensor(np.ones((2, 2))), dim=1)


def huge_view(dtype=np.float32):
    """A (10**6, 10**6) tensor that occupies one element: copies of it would need terabytes."""
    return fastgrad.from_numpy(np.broadcast_to(np.ones((), dtype), (10**6, 10**6)))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_enormous_input_refused_before_allocating(name):
    kwargs = {"dim": 1} if "softmax" in name else {}
    with pytest.raises(
        ValueError,
        match=rf"^{name}: input of shape \(1000000, 1000000\) has "
        r"1,000,000,000,000 elements",
    ):
        getattr(A, name)(huge_view(), **kwargs)


def test_enormous_softmax_cast_refused():
    with pytest.raises(ValueError, match="log_softmax: input of shape"):
        A.log_softmax(huge_view(), dim=0, dtype=np.float64)
