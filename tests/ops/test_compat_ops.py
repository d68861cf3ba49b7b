"""The functional ops of PyTorch scripts: gelu, silu, elu, hardswish, prelu, layer_norm,
group_norm, conv1d, conv_transpose2d, 1-D pools, pad, interpolate, one_hot, embedding,
dropout2d, where, masked_fill, chunk, split. Gradients against central differences in
float64 (no torch needed) and values and gradients against PyTorch where installed."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn.functional as F
from fastgrad.autograd import gradcheck

RNG = np.random.default_rng(0)


def _r(*shape, scale=1.0):
    return RNG.standard_normal(shape) * scale


# (name, fastgrad call, torch call, input arrays); every float input gets a gradient
CASES = [
    ("gelu", lambda x: F.gelu(x), lambda F_, x: F_.gelu(x), [_r(3, 4, scale=2)]),
    (
        "gelu_tanh",
        lambda x: F.gelu(x, approximate="tanh"),
        lambda F_, x: F_.gelu(x, approximate="tanh"),
        [_r(5, 2, scale=2)],
    ),
    ("silu", lambda x: F.silu(x), lambda F_, x: F_.silu(x), [_r(2, 3, 4, scale=3)]),
    ("elu", lambda x: F.elu(x, 0.7), lambda F_, x: F_.elu(x, 0.7), [_r(11, scale=2)]),
    ("hardswish", lambda x: F.hardswish(x), lambda F_, x: F_.hardswish(x), [_r(4, 5, scale=3)]),
    ("prelu", lambda x, w: F.prelu(x, w), lambda F_, x, w: F_.prelu(x, w), [_r(2, 3, 4), np.array([0.1, -0.5, 2.0])]),
    ("prelu_shared", lambda x, w: F.prelu(x, w), lambda F_, x, w: F_.prelu(x, w), [_r(2, 3, 4), np.array([0.3])]),
    (
        "layer_norm",
        lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
        lambda F_, x, w, b: F_.layer_norm(x, (3, 4), w, b),
        [_r(2, 3, 4, scale=3) + 1, _r(3, 4), _r(3, 4)],
    ),
    (
        "layer_norm_plain",
        lambda x: F.layer_norm(x, 5, eps=1e-3),
        lambda F_, x: F_.layer_norm(x, (5,), eps=1e-3),
        [_r(4, 5)],
    ),
    (
        "group_norm",
        lambda x, w, b: F.group_norm(x, 2, w, b),
        lambda F_, x, w, b: F_.group_norm(x, 2, w, b),
        [_r(2, 4, 3, 2), _r(4), _r(4)],
    ),
    ("group_norm_2d", lambda x: F.group_norm(x, 3), lambda F_, x: F_.group_norm(x, 3), [_r(3, 6)]),
    (
        "conv1d",
        lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2),
        lambda F_, x, w, b: F_.conv1d(x, w, b, stride=2, padding=1, dilation=2),
        [_r(2, 4, 9), _r(6, 4, 3), _r(6)],
    ),
    (
        "conv1d_groups_same",
        lambda x, w: F.conv1d(x, w, padding="same", groups=2),
        lambda F_, x, w: F_.conv1d(x, w, padding="same", groups=2),
        [_r(1, 4, 7), _r(2, 2, 4)],
    ),
    (
        "conv_transpose2d",
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        lambda F_, x, w, b: F_.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        [_r(2, 3, 4, 5), _r(3, 2, 3, 2), _r(2)],
    ),
    (
        "conv_transpose2d_groups",
        lambda x, w: F.conv_transpose2d(x, w, stride=(1, 2), groups=2, dilation=2),
        lambda F_, x, w: F_.conv_transpose2d(x, w, stride=(1, 2), groups=2, dilation=2),
        [_r(1, 4, 3, 3), _r(4, 1, 2, 2)],
    ),
    ("max_pool1d", lambda x: F.max_pool1d(x, 3, 2, 1), lambda F_, x: F_.max_pool1d(x, 3, 2, 1), [_r(2, 3, 10)]),
    (
        "avg_pool1d",
        lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
        lambda F_, x: F_.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
        [_r(2, 3, 9)],
    ),
    (
        "pad_constant",
        lambda x: F.pad(x, (1, 2, 0, 3), value=0.5),
        lambda F_, x: F_.pad(x, (1, 2, 0, 3), value=0.5),
        [_r(2, 3, 4)],
    ),
    (
        "pad_reflect",
        lambda x: F.pad(x, (2, 3, 1, 1), mode="reflect"),
        lambda F_, x: F_.pad(x, (2, 3, 1, 1), mode="reflect"),
        [_r(1, 2, 3, 4)],
    ),
    (
        "pad_replicate",
        lambda x: F.pad(x, (3, 1), mode="replicate"),
        lambda F_, x: F_.pad(x, (3, 1), mode="replicate"),
        [_r(2, 2, 3)],
    ),
    (
        "pad_circular",
        lambda x: F.pad(x, (2, 1, 1, 2), mode="circular"),
        lambda F_, x: F_.pad(x, (2, 1, 1, 2), mode="circular"),
        [_r(1, 1, 3, 4)],
    ),
    (
        "interp_nearest",
        lambda x: F.interpolate(x, scale_factor=2),
        lambda F_, x: F_.interpolate(x, scale_factor=2),
        [_r(1, 2, 3, 4)],
    ),
    (
        "interp_nearest_size",
        lambda x: F.interpolate(x, size=(5, 3)),
        lambda F_, x: F_.interpolate(x, size=(5, 3)),
        [_r(2, 1, 3, 7)],
    ),
    ("interp_nearest_1d", lambda x: F.interpolate(x, size=7), lambda F_, x: F_.interpolate(x, size=7), [_r(1, 2, 3)]),
    (
        "interp_bilinear",
        lambda x: F.interpolate(x, size=(7, 5), mode="bilinear"),
        lambda F_, x: F_.interpolate(x, size=(7, 5), mode="bilinear"),
        [_r(1, 2, 3, 4)],
    ),
    (
        "interp_bilinear_corners",
        lambda x: F.interpolate(x, scale_factor=(1.5, 2.5), mode="bilinear", align_corners=True),
        lambda F_, x: F_.interpolate(x, scale_factor=(1.5, 2.5), mode="bilinear", align_corners=True),
        [_r(2, 1, 4, 3)],
    ),
    (
        "interp_bilinear_down",
        lambda x: F.interpolate(x, scale_factor=0.5, mode="bilinear"),
        lambda F_, x: F_.interpolate(x, scale_factor=0.5, mode="bilinear"),
        [_r(1, 1, 6, 5)],
    ),
    (
        "where",
        lambda a, b: fastgrad.where(a > 0, a, b * 2),
        lambda T, a, b: T.where(a > 0, a, b * 2),
        [_r(3, 4), _r(4)],
    ),
    ("masked_fill", lambda a: a.masked_fill(a < 0.2, -1.5), lambda T, a: a.masked_fill(a < 0.2, -1.5), [_r(3, 5)]),
    (
        "chunk",
        lambda a: fastgrad.chunk(a, 3, 1)[2] * 3 + a.chunk(3, dim=1)[0].sum(),
        lambda T, a: T.chunk(a, 3, 1)[2] * 3 + a.chunk(3, dim=1)[0].sum(),
        [_r(2, 7)],
    ),
    (
        "split",
        lambda a: fastgrad.split(a, [1, 3, 1], dim=0)[1] * 2 + a.split(2)[-1].sum(),
        lambda T, a: T.split(a, [1, 3, 1], dim=0)[1] * 2 + a.split(2)[-1].sum(),
        [_r(5, 2)],
    ),
]
NAMES = [c[0] for c in CASES]
USES_TORCH_NAMESPACE = {"where", "masked_fill", "chunk", "split"}


@pytest.mark.parametrize("name,ours,theirs,arrays", CASES, ids=NAMES)
def test_gradients_match_finite_differences(name, ours, theirs, arrays):
    inputs = [fastgrad.tensor(a.copy(), requires_grad=True) for a in arrays]
    assert gradcheck(ours, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,ours,theirs,arrays", CASES, ids=NAMES)
def test_matches_torch(name, ours, theirs, arrays, dtype):
    torch = pytest.importorskip("torch")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    mine = [fastgrad.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    other = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = ours(*mine)
    tout = theirs(torch if name in USES_TORCH_NAMESPACE else torch.nn.functional, *other)
    assert out.dtype == tout.detach().numpy().dtype
    assert tuple(out.shape) == tuple(tout.shape)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), **tol)
    v = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    (out * fastgrad.tensor(v)).sum().backward()
    (tout * torch.tensor(v)).sum().backward()
    for i, (a, b) in enumerate(zip(mine, other)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), err_msg=f"input {i}", **tol)


def test_max_pool1d_indices_and_one_hot_and_embedding_match_torch():
    torch = pytest.importorskip("torch")
    x = _r(2, 3, 10).astype(np.float32)
    v, i = F.max_pool1d(fastgrad.tensor(x), 2, return_indices=True)
    tv, ti = torch.nn.functional.max_pool1d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    np.testing.assert_array_equal(v.numpy(), tv.numpy())
    labels = np.array([[0, 3], [2, 1]])
    for k in (-1, 6):
        ours = F.one_hot(fastgrad.tensor(labels), k)
        theirs = torch.nn.functional.one_hot(torch.tensor(labels), k)
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    w = _r(5, 3)
    idx = np.array([[0, 4, 4], [2, 0, 1]])
    mine, other = fastgrad.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    out = F.embedding(fastgrad.tensor(idx), mine, padding_idx=4)
    tout = torch.nn.functional.embedding(torch.tensor(idx), other, padding_idx=4)
    np.testing.assert_array_equal(out.detach().numpy(), tout.detach().numpy())
    (out * 2).sum().backward()
    (tout * 2).sum().backward()
    np.testing.assert_array_equal(mine.grad.numpy(), other.grad.numpy())


def test_embedding_and_one_hot_without_torch():
    w = fastgrad.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    out = F.embedding(fastgrad.tensor([1, 1, 3]), w, padding_idx=3)
    np.testing.assert_array_equal(out.detach().numpy(), [[3, 4, 5], [3, 4, 5], [9, 10, 11]])
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[0, 0, 0], [2, 2, 2], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(F.one_hot(fastgrad.tensor([2, 0])).numpy(), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(IndexError, match="index 4 is out of range for 4 entries"):
        F.embedding(fastgrad.tensor([4]), w)
    with pytest.raises(RuntimeError, match="Class values must be smaller than num_classes"):
        F.one_hot(fastgrad.tensor([3]), 3)


def test_dropout2d_zeroes_whole_channels():
    fastgrad.manual_seed(0)
    x = fastgrad.ones(8, 16, 3, 3, requires_grad=True)
    out = F.dropout2d(x, p=0.5)
    data = out.detach().numpy()
    per_channel = data.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))  # whole channels, scaled 1/(1-p)
    assert 0.2 < (per_channel[..., 0] == 0).mean() < 0.8
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), data)
    assert F.dropout2d(x, 0.5, training=False) is x


def test_where_without_a_gradient_and_single_argument():
    cond = fastgrad.tensor([[True, False], [False, True]])
    rows, cols = fastgrad.where(cond)
    np.testing.assert_array_equal(rows.numpy(), [0, 1])
    np.testing.assert_array_equal(cols.numpy(), [0, 1])
    out = fastgrad.where(cond, fastgrad.tensor([[1.0, 2.0], [3.0, 4.0]]), 0.0)
    np.testing.assert_array_equal(out.numpy(), [[1.0, 0.0], [0.0, 4.0]])
    with pytest.raises(TypeError, match="the condition must be a bool tensor"):
        fastgrad.where(fastgrad.tensor([1, 0]), fastgrad.ones(2), fastgrad.zeros(2))


def test_chunk_and_split_like_torch():
    torch = pytest.importorskip("torch")
    for n, chunks in ((5, 3), (6, 4), (0, 3), (2, 5)):
        ours = fastgrad.chunk(fastgrad.arange(n), chunks)
        theirs = torch.chunk(torch.arange(n), chunks)
        assert [t.numpy().tolist() for t in ours] == [t.numpy().tolist() for t in theirs]
    for size in (2, 3, 7):
        ours = fastgrad.arange(7).split(size)
        theirs = torch.arange(7).split(size)
        assert [t.numpy().tolist() for t in ours] == [t.numpy().tolist() for t in theirs]
    with pytest.raises(RuntimeError, match="split_with_sizes expects split_sizes to sum exactly to 7"):
        fastgrad.split(fastgrad.arange(7), [3, 3])


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: F.gelu(fastgrad.ones(2), approximate="fast"), ValueError, "approximate argument must be either none"),
        (lambda: F.layer_norm(fastgrad.ones(2, 3), (4,)), RuntimeError, r"Given normalized_shape=\[4\]"),
        (lambda: F.group_norm(fastgrad.ones(2, 3, 4), 2), RuntimeError, "divisible by num_groups"),
        (lambda: F.prelu(fastgrad.ones(2, 3), fastgrad.ones(2)), ValueError, "Mismatch of parameter numbers"),
        (lambda: F.pad(fastgrad.ones(2, 3), (1,)), ValueError, "Padding length must be divisible by 2"),
        (lambda: F.pad(fastgrad.ones(2, 3), (3, 0), mode="reflect"), ValueError, "padding size should be less than"),
        (lambda: F.pad(fastgrad.ones(2, 3), (1, 1), mode="wrap"), NotImplementedError, "unknown padding mode"),
        (
            lambda: F.interpolate(fastgrad.ones(1, 1, 2, 2), size=3, scale_factor=2),
            ValueError,
            "only one of size or scale_factor",
        ),
        (lambda: F.interpolate(fastgrad.ones(1, 1, 2), size=3, mode="bilinear"), NotImplementedError, "needs 4D input"),
        (lambda: F.interpolate(fastgrad.ones(1, 1, 2, 2), size=3, align_corners=True), ValueError, "align_corners"),
        (
            lambda: F.conv_transpose2d(
                fastgrad.ones(1, 2, 3, 3), fastgrad.ones(2, 1, 3, 3), stride=2, output_padding=2
            ),
            ValueError,
            "output_padding",
        ),
        (
            lambda: F.conv_transpose2d(fastgrad.ones(1, 3, 3, 3), fastgrad.ones(2, 1, 3, 3)),
            ValueError,
            "expects input with 2 channels",
        ),
        (lambda: F.conv1d(fastgrad.ones(1, 2, 3, 3), fastgrad.ones(2, 2, 3)), ValueError, "expected input with 3 dim"),
        (lambda: fastgrad.ones(2, 3).masked_fill(fastgrad.ones(3, 3) > 0, 1.0), RuntimeError, "cannot be broadcast"),
        (lambda: fastgrad.chunk(fastgrad.ones(3), 0), RuntimeError, "chunk expects `chunks` to be greater than 0"),
    ],
)
def test_bad_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()
