"""conv2d and conv2d_relu as differentiable ops: finite differences in float64, PyTorch
parity in float32, argument handling (padding modes, pairs, groups, unbatched input) and
errors that name the function."""

import threading

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels
from fastgrad.autograd import gradcheck
from fastgrad.ops.conv import conv2d, conv2d_relu


def tensors(x_shape, w_shape, bias=True, dtype=np.float64, seed=0, requires_grad=True):
    rng = np.random.default_rng(seed)
    x = fastgrad.tensor(rng.standard_normal(x_shape), dtype=dtype, requires_grad=requires_grad)
    w = fastgrad.tensor(rng.standard_normal(w_shape), dtype=dtype, requires_grad=True)
    b = None
    if bias:
        b = fastgrad.tensor(rng.standard_normal(w_shape[0]), dtype=dtype, requires_grad=True)
    return x, w, b


# (x shape, weight shape, keyword arguments)
CONFIGS = [
    ((2, 3, 6, 7), (4, 3, 3, 2), {}),
    ((1, 2, 7, 6), (3, 2, 3, 3), dict(stride=2, padding=1)),
    ((2, 2, 8, 9), (2, 2, 2, 3), dict(stride=(3, 2), padding=(2, 0))),
    ((1, 2, 7, 7), (3, 2, 3, 3), dict(dilation=2, padding=2)),
    ((2, 4, 5, 6), (4, 2, 3, 3), dict(groups=2, padding=(1, 1))),
    ((1, 3, 6, 5), (6, 1, 3, 3), dict(groups=3, padding="same")),  # depthwise x2
    ((1, 2, 6, 5), (3, 2, 4, 2), dict(padding="same")),  # even kernel
    ((1, 2, 7, 6), (2, 2, 3, 2), dict(padding="same", dilation=(1, 2))),
    ((2, 2, 5, 6), (3, 2, 3, 3), dict(padding="valid")),
    ((1, 3, 7, 7), (2, 3, 5, 5), {}),  # LeNet conv2-like
]


@pytest.mark.parametrize("x_shape,w_shape,kw", CONFIGS)
def test_gradcheck_float64(x_shape, w_shape, kw):
    x, w, b = tensors(x_shape, w_shape)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, **kw), (x, w, b))


def test_gradcheck_relu_and_no_bias():
    x, w, _ = tensors((2, 2, 5, 6), (3, 2, 3, 3), bias=False, seed=3)
    assert gradcheck(lambda x, w: conv2d_relu(x, w, padding=1), (x, w))
    x, w, b = tensors((1, 2, 6, 6), (2, 2, 2, 2), seed=4)
    assert gradcheck(lambda x, w, b: conv2d_relu(x, w, b, stride=2), (x, w, b))


def test_unbatched_input():
    x, w, b = tensors((2, 6, 5), (3, 2, 3, 3))
    y = conv2d(x, w, b, padding=1)
    assert y.shape == (3, 6, 5)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, padding=1), (x, w, b))


def test_first_layer_computes_no_input_gradient(monkeypatch):
    x, w, b = tensors((2, 1, 8, 8), (4, 1, 3, 3), requires_grad=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("the input gradient was computed for an input that needs none")

    monkeypatch.setattr(kernels, "conv2d_backward_input", forbidden)
    conv2d(x, w, b, padding=1).sum().backward()
    assert x.grad is None and w.grad is not None and b.grad is not None


def test_relu_backward_masks_by_output():
    x, w, b = tensors((1, 1, 4, 4), (1, 1, 1, 1), dtype=np.float32)
    w.data[...] = 1.0
    b.data[...] = 0.0
    y = conv2d_relu(x, w, b)
    y.backward(fastgrad.ones(*y.shape))
    np.testing.assert_array_equal(x.grad.data, (x.data > 0).astype(np.float32))


def test_threads_do_not_share_workspaces():
    # Two Python threads running convolutions of different shapes at once must each get
    # the results they get alone.
    jobs = [
        tensors((2, 3, 9, 8), (4, 3, 3, 3), dtype=np.float32, seed=1),
        tensors((2, 2, 7, 9), (3, 2, 5, 5), dtype=np.float32, seed=2),
    ]
    pads = [1, 2]
    alone = [conv2d(x, w, b, padding=p).data.copy() for (x, w, b), p in zip(jobs, pads)]
    errors = []

    def work(i):
        x, w, b = jobs[i]
        for _ in range(20):
            if not np.array_equal(conv2d(x, w, b, padding=pads[i]).data, alone[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# --------------------------------------------------------------------------- PyTorch parity

# Full-size layers only on the compiled kernels: the pure-Python ones take minutes there.
_large = pytest.mark.skipif(
    kernels.backend == "reference", reason="full-size layers are too slow on the reference kernels"
)
PARITY = CONFIGS + [
    pytest.param((4, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), marks=_large),  # LeNet conv1
    pytest.param((4, 6, 14, 14), (16, 6, 5, 5), {}, marks=_large),  # LeNet conv2
    pytest.param((4, 3, 32, 32), (32, 3, 3, 3), dict(padding=1), marks=_large),  # CIFAR conv1
    pytest.param((2, 32, 16, 16), (64, 32, 3, 3), dict(padding=1), marks=_large),  # CIFAR conv2
    ((2, 8, 13, 11), (8, 1, 3, 3), dict(groups=8, stride=2, padding=1)),  # depthwise
]


def _torch_grads(torch, x, w, b, g, kw, relu, unbatched=False):
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    if relu:
        ty = torch.relu(ty)
    ty.backward(torch.tensor(g))
    return [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()] + ([tb.grad.numpy()] if b is not None else [])


def _check_parity(x_shape, w_shape, kw, relu, bias=True):
    torch = pytest.importorskip("torch")
    x, w, b = tensors(x_shape, w_shape, bias=bias, dtype=np.float32, seed=7)
    fn = conv2d_relu if relu else conv2d
    y = fn(x, w, b, **kw)
    g = np.random.default_rng(8).standard_normal(y.shape).astype(np.float32)
    y.backward(fastgrad.tensor(g))
    ours = [y.data, x.grad.data, w.grad.data] + ([b.grad.data] if bias else [])
    theirs = _torch_grads(torch, x.data, w.data, b.data if bias else None, g, kw, relu)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, theirs):
        assert a.shape == e.shape, name
        scale = float(np.max(np.abs(e))) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5 * max(scale, 1.0), err_msg=name)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("x_shape,w_shape,kw", PARITY)
def test_matches_pytorch(x_shape, w_shape, kw):
    _check_parity(x_shape, w_shape, kw, relu=False)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("x_shape,w_shape,kw", PARITY[::3])
def test_relu_matches_pytorch(x_shape, w_shape, kw):
    _check_parity(x_shape, w_shape, kw, relu=True, bias=False)


def test_unbatched_matches_pytorch():
    torch = pytest.importorskip("torch")
    x, w, b = tensors((3, 7, 6), (4, 3, 3, 3), dtype=np.float32)
    y = conv2d(x, w, b, stride=(2, 1), padding=1)
    t = torch.nn.functional.conv2d(
        torch.tensor(x.data), torch.tensor(w.data), torch.tensor(b.data), stride=(2, 1), padding=1
    )
    np.testing.assert_allclose(y.data, t.numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- bad input


def _bad(**overrides):
    x, w, b = tensors((2, 4, 6, 6), (6, 2, 3, 3), dtype=np.float32)
    args = dict(input=x, weight=w, bias=b, stride=1, padding=0, dilation=1, groups=2)
    args.update(overrides)
    return args


F32 = np.float32
BAD = [
    (dict(input=fastgrad.zeros(1, 2, 4, 6, 6)), ValueError, "4 dimensions"),
    (dict(input=fastgrad.zeros(6, 6)), ValueError, "4 dimensions"),
    (dict(weight=fastgrad.zeros(6, 2, 3)), ValueError, "weight with 4 dimensions"),
    (dict(input=fastgrad.zeros(2, 3, 6, 6)), ValueError, "channels"),
    (dict(groups=3), ValueError, "groups=3"),
    (dict(groups=0), ValueError, "groups"),
    (dict(weight=fastgrad.zeros(5, 2, 3, 3)), ValueError, "divisible by groups"),
    (dict(weight=fastgrad.zeros(6, 2, 7, 3)), ValueError, "larger than the padded input"),
    (dict(dilation=4), ValueError, "larger than the padded input"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, -2)), ValueError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=(1, 2, 3)), TypeError, "padding"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding="same", stride=2), ValueError, "strided"),
    (dict(input=fastgrad.zeros(2, 4, 6, 6, dtype=np.float64)), TypeError, "dtype"),
    (dict(bias=fastgrad.zeros(6, dtype=np.float64)), TypeError, "bias has dtype"),
    (dict(bias=fastgrad.zeros(5)), ValueError, "bias of shape"),
    (dict(input=fastgrad.tensor(np.zeros((2, 4, 6, 6), np.int64))), TypeError, "float"),
    (dict(input=np.zeros((2, 4, 6, 6), F32)), TypeError, "Tensor"),
]


@pytest.mark.parametrize("fn", [conv2d, conv2d_relu])
@pytest.mark.parametrize("overrides,exc,text", BAD, ids=[t for _, _, t in BAD])
def test_bad_input_raises_naming_the_function(fn, overrides, exc, text):
    with pytest.raises(exc, match=f"{fn.__name__}: .*{text}"):
        fn(**_bad(**overrides))


def test_same_padding_keeps_the_size():
    x, w, b = tensors((1, 2, 7, 8), (3, 2, 4, 5), dtype=np.float32)
    assert conv2d(x, w, b, padding="same").shape == (1, 3, 7, 8)
    assert conv2d(x, w, b, padding="same", dilation=2).shape == (1, 3, 7, 8)
