"""Dropout: inverted scaling, keep rate, gradient through the same mask, identity in
eval mode / training=False, reproducible under manual_seed."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
import fastgrad.nn.functional as F


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_statistics_of_the_mask(p):
    x = fastgrad.ones(200, 500)
    y = nn.Dropout(p)(x).data
    kept = y != 0
    # each element is kept with probability 1 - p: 100,000 draws give a tight estimate
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / kept.size)
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)  # inverted: kept values scaled up
    assert abs(y.mean() - 1) < 0.02  # so the expectation is unchanged
    assert y.dtype == np.float32


def test_gradient_uses_the_forward_mask():
    x = fastgrad.tensor(np.random.default_rng(0).standard_normal((30, 40)), dtype=fastgrad.float64, requires_grad=True)
    y = F.dropout(x, 0.3)
    y.backward(fastgrad.ones(30, 40, dtype=fastgrad.float64))
    mask = y.data / x.data
    np.testing.assert_allclose(x.grad.data, mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 9)) == {0.0, round(1 / 0.7, 9)}


def test_eval_and_training_false_are_the_identity():
    x = fastgrad.randn(4, 5)
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_p_one_zeroes_everything_and_bad_p_raises():
    x = fastgrad.randn(3, 3, requires_grad=True)
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, 0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, 0)
    for bad in (-0.1, 1.01, "half", True):
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
            F.dropout(x, bad)
    with pytest.raises(TypeError, match="dropout"):
        F.dropout(fastgrad.tensor([1, 2, 3]), 0.5)


def test_manual_seed_fixes_the_mask():
    x = fastgrad.ones(10, 10)
    fastgrad.manual_seed(7)
    a = F.dropout(x, 0.5).data
    b = F.dropout(x, 0.5).data
    fastgrad.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, a)
    assert not np.array_equal(a, b)


def test_float64_keeps_its_dtype():
    y = F.dropout(fastgrad.ones(4, 4, dtype=fastgrad.float64), 0.25)
    assert y.dtype == np.float64
