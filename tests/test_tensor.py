"""Tensor: construction, dtypes, conversions, operators, in-place rules and bad input."""

import numpy as np
import pytest

import fastgrad


def test_default_dtypes():
    assert fastgrad.tensor([1.0, 2.0]).dtype == np.float32
    assert fastgrad.tensor([1, 2]).dtype == np.int64
    assert fastgrad.tensor([True]).dtype == np.bool_
    assert fastgrad.tensor([1.0], dtype=fastgrad.float64).dtype == np.float64
    assert fastgrad.tensor(np.zeros(3)).dtype == np.float64  # a numpy array keeps its dtype
    assert fastgrad.zeros(2, 3).shape == (2, 3) and fastgrad.zeros(2, 3).dtype == np.float32
    assert fastgrad.ones((2, 3)).shape == (2, 3)
    assert fastgrad.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert fastgrad.arange(4).tolist() == [0, 1, 2, 3]
    assert fastgrad.arange(0.0, 1.0, 0.5).dtype == np.float32


def test_from_numpy_shares_memory():
    a = np.zeros(3, dtype=np.float32)
    t = fastgrad.from_numpy(a)
    a[0] = 5
    assert t.data[0] == 5
    with pytest.raises(TypeError, match="from_numpy"):
        fastgrad.from_numpy([1, 2])


def test_manual_seed_reproducible():
    fastgrad.manual_seed(3)
    a = fastgrad.randn(4, 5)
    fastgrad.manual_seed(3)
    b = fastgrad.randn(4, 5)
    assert np.array_equal(a.data, b.data) and a.dtype == np.float32
    r = fastgrad.rand(1000)
    assert 0 <= r.data.min() and r.data.max() < 1


def test_like_factories():
    t = fastgrad.randn(2, 3, dtype=fastgrad.float64)
    assert fastgrad.zeros_like(t).dtype == np.float64
    assert fastgrad.ones_like(t).data.sum() == 6


def test_item_and_conversions():
    t = fastgrad.tensor([[3.5]])
    assert t.item() == 3.5
    with pytest.raises(ValueError, match=r"item: .*shape \(2,\)"):
        fastgrad.tensor([1.0, 2.0]).item()
    assert fastgrad.tensor([1.7]).long().dtype == np.int64
    assert fastgrad.tensor([1]).float().dtype == np.float32
    assert fastgrad.tensor([1.0]).double().dtype == np.float64


def test_requires_grad_only_on_floats():
    with pytest.raises(RuntimeError, match="int64"):
        fastgrad.tensor([1, 2], requires_grad=True)


def test_numpy_refuses_when_grad_required():
    t = fastgrad.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        t.numpy()
    assert t.detach().numpy().tolist() == [1.0]


def test_comparisons_have_no_grad():
    a = fastgrad.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = a > 1.5
    assert m.dtype == np.bool_ and m.tolist() == [False, True, True]
    assert not m.requires_grad
    assert (a == a).data.all()


def test_dtype_mixing_raises_naming_op_and_dtypes():
    a = fastgrad.tensor([1.0])
    b = fastgrad.tensor([1.0], dtype=fastgrad.float64)
    with pytest.raises(TypeError, match=r"add: dtype mismatch: float32 and float64"):
        a + b
    with pytest.raises(TypeError, match="matmul"):
        fastgrad.ones(2, 2) @ fastgrad.ones(2, 2, dtype=fastgrad.float64)


def test_int_tensor_promotes_to_float_operand():
    a = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    mask = fastgrad.tensor([1, 0])
    (a * mask).sum().backward()
    assert a.grad.tolist() == [1.0, 0.0]


def test_broadcast_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        fastgrad.ones(2, 3) * fastgrad.ones(4)


def test_matmul_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"):
        fastgrad.ones(2, 3) @ fastgrad.ones(4, 5)


def test_inplace_rules():
    w = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="in place"):
        w -= 1.0
    with fastgrad.no_grad():
        w -= 1.0
    assert w.tolist() == [0.0, 1.0] and w.requires_grad
    w.grad = fastgrad.tensor([3.0, 3.0])
    w.grad.zero_()
    assert w.grad.tolist() == [0.0, 0.0]


def test_repr_like_pytorch():
    assert repr(fastgrad.tensor([1.0, 2.0], requires_grad=True)) == "tensor([1., 2.], requires_grad=True)"
    assert "grad_fn=<MulBackward>" in repr(fastgrad.tensor([1.0], requires_grad=True) * 2)


def test_shape_methods():
    t = fastgrad.arange(24.0).reshape(2, 3, 4)
    assert t.view(6, 4).shape == (6, 4)
    assert t.reshape(-1).shape == (24,)
    assert t.flatten(1).shape == (2, 12)
    assert t.transpose(0, 2).shape == (4, 3, 2)
    assert t.permute(2, 0, 1).shape == (4, 2, 3)
    assert t.T.shape == (4, 3, 2)
    assert t.unsqueeze(0).shape == (1, 2, 3, 4)
    assert t.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert t.unsqueeze(0).squeeze(0).shape == (2, 3, 4)
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.numel() == 24
    with pytest.raises(ValueError, match=r"reshape: shape \(5, 5\) is invalid for a tensor of shape \(2, 3, 4\)"):
        t.reshape(5, 5)
    with pytest.raises(ValueError, match="permute"):
        t.permute(0, 1)


def test_reductions_and_max_pair():
    t = fastgrad.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    assert t.sum().item() == 22.0
    assert t.sum(dim=1).tolist() == [8.0, 14.0]
    assert t.mean(0, keepdim=True).shape == (1, 3)
    values, indices = t.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    v2, i2 = fastgrad.max(t.data, 1)  # torch.max(outputs.data, 1) idiom
    assert i2.tolist() == [1, 0]
    assert t.argmax(dim=1).tolist() == [1, 0]
    assert t.max().item() == 7.0 and t.min().item() == 0.0
    assert (t.argmax(1) == fastgrad.tensor([1, 0])).sum().item() == 2
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        t.sum(dim=2)


def test_indexing_values():
    t = fastgrad.arange(12.0).reshape(3, 4)
    assert t[1].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert t[:, 1:3].shape == (3, 2)
    assert t[fastgrad.tensor([0, 2])].shape == (2, 4)
    assert t[t > 9].tolist() == [10.0, 11.0]
    with pytest.raises(IndexError, match="index"):
        t[5]


def test_cat_stack():
    a, b = fastgrad.ones(2, 3), fastgrad.zeros(1, 3)
    assert fastgrad.cat([a, b]).shape == (3, 3)
    assert fastgrad.stack([a, a], dim=1).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="stack"):
        fastgrad.stack([a, b])


def test_no_grad_context_and_decorator():
    w = fastgrad.tensor([1.0], requires_grad=True)
    with fastgrad.no_grad():
        assert not (w * 2).requires_grad
    assert (w * 2).requires_grad

    @fastgrad.no_grad()
    def f(x):
        return x * 2

    @fastgrad.no_grad
    def g(x):
        return x * 2

    assert not f(w).requires_grad and not g(w).requires_grad
    assert fastgrad.is_grad_enabled()


def test_no_grad_is_per_thread():
    import threading

    seen = []
    w = fastgrad.tensor([1.0], requires_grad=True)
    with fastgrad.no_grad():
        t = threading.Thread(target=lambda: seen.append((w * 2).requires_grad))
        t.start()
        t.join()
    assert seen == [True]
