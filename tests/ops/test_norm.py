"""fastgrad.ops.norm.batch_norm: gradients by finite differences (float64), PyTorch
parity (float32), the in-place running-statistic update, and input errors that name
batch_norm."""

import numpy as np
import pytest

import fastgrad
from fastgrad.autograd import gradcheck
from fastgrad.ops.norm import batch_norm


def t(shape, seed, dtype=fastgrad.float64, requires_grad=True, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return fastgrad.tensor(a, dtype=dtype, requires_grad=requires_grad)


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_gradcheck(shape, training, affine):
    c = shape[1]
    rm, rv = t((c,), 7, requires_grad=False), t((c,), 8, requires_grad=False, positive=True)
    inputs = [t(shape, 1)]
    if affine != "none":
        inputs.append(t((c,), 2))
    if affine == "both":
        inputs.append(t((c,), 3))

    def fn(x, *wb):
        weight = wb[0] if wb else None
        bias = wb[1] if len(wb) > 1 else None
        # fresh copies each call: training updates the running statistics in place
        return batch_norm(x, fastgrad.tensor(rm.data), fastgrad.tensor(rv.data), weight, bias, training=training)

    assert gradcheck(fn, inputs)


def test_gradcheck_bias_only_without_running_stats():
    x, b = t((5, 2, 3), 4), t((2,), 5)
    assert gradcheck(lambda x, b: batch_norm(x, None, None, None, b, training=True), [x, b])


def test_only_the_wanted_gradients_are_computed():
    x = t((4, 3), 1, requires_grad=False)
    w, b = t((3,), 2), t((3,), 3, requires_grad=False)
    batch_norm(x, None, None, w, b, training=True).sum().backward()
    assert w.grad is not None and b.grad is None and x.grad is None


@pytest.mark.parametrize("shape", [(8, 4), (4, 3, 6), (2, 3, 5, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_pytorch(shape, training):
    torch = pytest.importorskip("torch")
    c = shape[1]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    rm, rv = rng.standard_normal(c).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32)
    ours = [fastgrad.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    ours_stats, theirs_stats = [fastgrad.tensor(rm), fastgrad.tensor(rv)], [torch.tensor(rm), torch.tensor(rv)]
    y = batch_norm(ours[0], *ours_stats, ours[1], ours[2], training=training, momentum=0.3, eps=1e-3)
    ty = torch.nn.functional.batch_norm(
        theirs[0], *theirs_stats, theirs[1], theirs[2], training=training, momentum=0.3, eps=1e-3
    )
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    y.backward(fastgrad.tensor(g))
    ty.backward(torch.tensor(g))
    for a, ta in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-4, atol=1e-4)
    for s, ts in zip(ours_stats, theirs_stats):
        np.testing.assert_allclose(s.data, ts.numpy(), rtol=1e-5, atol=1e-6)


def test_running_stats_update_in_place_and_eval_snapshot():
    rm, rv = fastgrad.zeros(2), fastgrad.ones(2)
    arrays = rm.data, rv.data
    x = fastgrad.tensor([[1.0, 2.0], [3.0, 6.0]])
    batch_norm(x, rm, rv, training=True, momentum=0.5)
    assert rm.data is arrays[0] and rv.data is arrays[1]  # updated in place
    np.testing.assert_allclose(rm.data, [1.0, 2.0])
    np.testing.assert_allclose(rv.data, [0.5 + 0.5 * 2.0, 0.5 + 0.5 * 8.0])
    # eval: backward uses the statistics of the forward, even if the buffers change after it
    xe = fastgrad.tensor([[1.0, 2.0], [3.0, 6.0]], requires_grad=True)
    w = fastgrad.ones(2, requires_grad=True)
    y = batch_norm(xe, rm, rv, w, None, training=False, eps=0.0)
    rm.data[:] = 100
    y.sum().backward()
    np.testing.assert_allclose(w.grad.data, ((xe.data - [1.0, 2.0]) / np.sqrt([1.5, 4.5])).sum(0), rtol=1e-6)


def test_float32_stays_float32():
    x = t((4, 3), 0, dtype=fastgrad.float32)
    y = batch_norm(x, None, None, training=True)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: batch_norm(fastgrad.zeros(4), None, None, training=True), ValueError, "at least 2 dimensions"),
        (
            lambda: batch_norm(fastgrad.zeros(1, 3), None, None, training=True),
            ValueError,
            "more than 1 value per channel",
        ),
        (lambda: batch_norm(fastgrad.zeros(2, 3), None, None, training=False), ValueError, "evaluation mode"),
        (lambda: batch_norm(fastgrad.zeros(2, 3), fastgrad.zeros(3), None, training=True), ValueError, "both"),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), fastgrad.zeros(4), fastgrad.ones(4)),
            ValueError,
            r"running_mean has shape \(4,\), expected \(3,\)",
        ),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, fastgrad.ones(2), training=True),
            ValueError,
            r"weight has shape \(2,\)",
        ),
        (
            lambda: batch_norm(
                fastgrad.zeros(2, 3), None, None, fastgrad.ones(3, dtype=fastgrad.float64), training=True
            ),
            TypeError,
            "weight has dtype float64",
        ),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, np.ones(3), training=True),
            TypeError,
            "weight must be a Tensor",
        ),
        (
            lambda: batch_norm(fastgrad.tensor([[1, 2], [3, 4]]), None, None, training=True),
            TypeError,
            "float32 or float64",
        ),
        (lambda: batch_norm(np.zeros((2, 3)), None, None, training=True), TypeError, "expected input to be a Tensor"),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, training=True, momentum=float("nan")),
            ValueError,
            "momentum must be a finite number >= 0",
        ),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, training=True, eps=float("inf")),
            ValueError,
            "eps must be a finite number >= 0",
        ),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, training=True, eps=-1e-5),
            ValueError,
            "eps must be a finite number >= 0",
        ),
        (
            lambda: batch_norm(fastgrad.zeros(2, 3), None, None, training=True, eps=0.0),
            ValueError,
            "eps must be positive when training",
        ),
        (
            lambda: batch_norm(
                fastgrad.from_numpy(np.broadcast_to(np.float32(1), (10**6, 2, 10**6))), None, None, training=True
            ),
            ValueError,
            "more than this machine's memory",
        ),
    ],
)
def test_bad_input_names_batch_norm(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert str(info.value).startswith("batch_norm: ")


def test_an_empty_batch_normalizes_to_nothing_and_keeps_the_running_statistics():
    x = t((0, 3, 2), 0)
    mean, var = fastgrad.tensor(np.arange(3.0)), fastgrad.tensor(np.arange(3.0) + 1)
    weight, bias = t((3,), 1), t((3,), 2)
    y = batch_norm(x, mean, var, weight, bias, training=True)
    assert y.shape == (0, 3, 2)
    y.sum().backward()
    np.testing.assert_array_equal(mean.data, np.arange(3.0))
    np.testing.assert_array_equal(var.data, np.arange(3.0) + 1)
    np.testing.assert_array_equal(weight.grad.data, np.zeros(3))
    np.testing.assert_array_equal(bias.grad.data, np.zeros(3))
    assert x.grad.shape == (0, 3, 2)
