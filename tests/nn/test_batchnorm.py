"""BatchNorm1d/2d: batch statistics in train mode, running ones in eval, PyTorch's
running-stat update (unbiased variance, momentum, momentum=None as a cumulative
average), the affine/track_running_stats variants, and parity with torch.nn."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn


def batch(shape, seed, loc=1.0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(np.float32)


def test_train_mode_normalizes_by_batch_statistics():
    bn = nn.BatchNorm2d(3)
    x = batch((4, 3, 5, 5), 0)
    y = bn(fastgrad.tensor(x)).data
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    # running statistics: 0.9 * initial + 0.1 * batch, with the UNBIASED batch variance
    n = 4 * 5 * 5
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * mean.ravel(), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, 0.9 + 0.1 * var.ravel() * n / (n - 1), rtol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1


def test_eval_mode_uses_running_statistics_and_leaves_them_alone():
    bn = nn.BatchNorm1d(4)
    bn.weight.data[:] = [1.0, 2.0, 0.5, -1.0]
    bn.bias.data[:] = [0.0, 1.0, -1.0, 0.5]
    bn.running_mean.data[:] = [0.5, -0.5, 1.0, 0.0]
    bn.running_var.data[:] = [1.0, 4.0, 0.25, 2.0]
    bn.eval()
    x = batch((6, 4), 1)
    y = bn(fastgrad.tensor(x)).data
    expect = (x - bn.running_mean.data) / np.sqrt(bn.running_var.data + 1e-5) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean.data, [0.5, -0.5, 1.0, 0.0])
    assert int(bn.num_batches_tracked.item()) == 0
    # one sample is fine in eval mode
    assert bn(fastgrad.tensor(x[:1])).shape == (1, 4)


def test_one_value_per_channel_in_training_raises():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(fastgrad.zeros(1, 3))


def torch_pair(torch, cls, *args, **kwargs):
    return getattr(nn, cls)(*args, **kwargs), getattr(torch.nn, cls)(*args, **kwargs)


@pytest.mark.parametrize(
    "cls,shape,kwargs",
    [
        ("BatchNorm2d", (4, 3, 5, 6), {}),
        ("BatchNorm2d", (2, 5, 3, 3), {"momentum": None}),
        ("BatchNorm2d", (3, 2, 4, 4), {"affine": False, "eps": 1e-3}),
        ("BatchNorm2d", (3, 2, 4, 4), {"momentum": 0.3, "bias": False}),
        ("BatchNorm1d", (8, 6), {}),
        ("BatchNorm1d", (4, 3, 7), {"momentum": None}),
        ("BatchNorm1d", (5, 4), {"track_running_stats": False}),
    ],
)
def test_matches_pytorch_over_training_steps_then_eval(cls, shape, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = torch_pair(torch, cls, shape[1], **kwargs)
    if ours.affine:  # non-trivial affine parameters, the same in both
        w = np.linspace(0.5, 1.5, shape[1]).astype(np.float32)
        ours.weight.data[:] = w
        theirs.weight.data[:] = torch.from_numpy(w)
        if ours.bias is not None:
            ours.bias.data[:] = -w
            theirs.bias.data[:] = torch.from_numpy(-w)
    for step in range(4):
        x = batch(shape, 10 + step, loc=step - 1.0)
        g = batch(shape, 20 + step, loc=0.0, scale=1.0)
        xt = fastgrad.tensor(x, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        y, ty = ours(xt), theirs(tx)
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        y.backward(fastgrad.tensor(g))
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(xt.grad.data, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad.data, getattr(theirs, name).grad.numpy(), rtol=1e-4, atol=1e-4)
        for key, value in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    ours.eval()
    theirs.eval()
    x = batch(shape, 99)
    np.testing.assert_allclose(
        ours(fastgrad.tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_cumulative_average_when_momentum_is_none():
    bn = nn.BatchNorm1d(2, momentum=None)
    batches = [batch((5, 2), s) for s in range(3)]
    for x in batches:
        bn(fastgrad.tensor(x))
    np.testing.assert_allclose(bn.running_mean.data, np.mean([x.mean(axis=0) for x in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        bn.running_var.data, np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0), rtol=1e-5
    )
    assert int(bn.num_batches_tracked.item()) == 3


def test_without_running_stats_eval_still_uses_the_batch():
    bn = nn.BatchNorm2d(2, track_running_stats=False).eval()
    x = batch((3, 2, 2, 2), 5)
    y = bn(fastgrad.tensor(x)).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert bn.running_mean is None and list(bn.state_dict()) == ["weight", "bias"]


def test_reset_and_float64():
    bn = nn.BatchNorm2d(2, dtype=fastgrad.float64)
    y = bn(fastgrad.tensor(batch((2, 2, 3, 3), 0), dtype=fastgrad.float64))
    assert y.dtype == np.float64 and bn.running_mean.dtype == np.float64
    bn.reset_running_stats()
    np.testing.assert_array_equal(bn.running_mean.data, 0)
    np.testing.assert_array_equal(bn.running_var.data, 1)
    assert int(bn.num_batches_tracked.item()) == 0
    with pytest.raises(TypeError, match="dtype"):
        bn(fastgrad.tensor(batch((2, 2, 3, 3), 0)))  # float32 input, float64 layer
