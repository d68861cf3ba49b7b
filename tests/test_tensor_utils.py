"""Top-level helpers of PyTorch's namespace (eye, empty, allclose, is_tensor, where, chunk,
split, inference_mode) and the Tensor dtype casts, against PyTorch where installed."""

import numpy as np
import pytest

import fastgrad


def test_eye_empty_is_tensor():
    np.testing.assert_array_equal(fastgrad.eye(3).numpy(), np.eye(3, dtype=np.float32))
    e = fastgrad.eye(2, 4, dtype=fastgrad.float64)
    assert e.dtype == np.float64 and e.shape == (2, 4) and e.numpy()[1, 1] == 1 and e.numpy()[1, 2] == 0
    assert fastgrad.empty(2, 3).shape == (2, 3) and fastgrad.empty(2, 3).dtype == np.float32
    assert fastgrad.is_tensor(fastgrad.ones(1)) and not fastgrad.is_tensor(np.ones(1))
    with pytest.raises(RuntimeError, match="eye: n must be greater or equal to 0"):
        fastgrad.eye(-1)


def test_allclose():
    a = fastgrad.tensor([1.0, 2.0])
    assert fastgrad.allclose(a, fastgrad.tensor([1.0, 2.0 + 1e-6]))
    assert not fastgrad.allclose(a, fastgrad.tensor([1.0, 2.1]))
    assert fastgrad.allclose(a, fastgrad.tensor([1.05, 2.1]), rtol=0.06)
    nan = fastgrad.tensor([np.nan])
    assert not fastgrad.allclose(nan, nan) and fastgrad.allclose(nan, nan, equal_nan=True)
    assert fastgrad.allclose(a, fastgrad.tensor([1.0]), atol=1.5)  # broadcasts


def test_inference_mode_turns_recording_off():
    w = fastgrad.ones(2, requires_grad=True)
    with fastgrad.inference_mode():
        assert not fastgrad.is_grad_enabled()
        assert not (w * 2).requires_grad
    assert (w * 2).requires_grad
    with fastgrad.inference_mode(False):
        assert fastgrad.is_grad_enabled()

    @fastgrad.inference_mode()
    def called():
        return (w * 2).requires_grad

    @fastgrad.inference_mode
    def bare():
        return (w * 2).requires_grad

    assert called() is False and bare() is False and fastgrad.is_grad_enabled()


def test_dtype_casts_match_torch():
    torch = pytest.importorskip("torch")
    data = [[1.7, -2.2], [0.0, 3.5]]
    ours, theirs = fastgrad.tensor(data), torch.tensor(data)
    for cast in ("float", "double", "long", "int", "bool", "half"):
        a, b = getattr(ours, cast)(), getattr(theirs, cast)()
        assert a.dtype == b.numpy().dtype, cast
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_float_casts_carry_gradients():
    x = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    assert not x.long().requires_grad  # integers carry no gradient
