"""fastgrad.nn.init: gains and fans as PyTorch computes them, the range or spread of
each random initializer, in-place filling, seeding, and the errors."""

import math

import numpy as np
import pytest

import fastgrad
from fastgrad.nn import Parameter, init


def param(*shape, dtype=np.float32):
    return Parameter(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize(
    "name,arg",
    [
        ("linear", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", math.sqrt(5)),
        ("selu", None),
    ],
)
def test_calculate_gain_matches_pytorch(name, arg):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(name, arg) == pytest.approx(torch.nn.init.calculate_gain(name, arg), rel=1e-12)


def test_calculate_gain_values_and_errors():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "steep")


def test_fans():
    assert init._calculate_fan_in_and_fan_out(param(16, 6, 5, 5)) == (150, 400)
    assert init._calculate_fan_in_and_fan_out(param(120, 400)) == (400, 120)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(param(5))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_normal_(param(3, 3), mode="fan_avg")


def test_uniform_initializers_fill_their_range():
    w = param(200, 100)
    same = w.data
    assert init.kaiming_uniform_(w, a=0, nonlinearity="relu") is w
    assert w.data is same  # filled in place
    bound = math.sqrt(2) * math.sqrt(3 / 100)
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.data).max() <= math.sqrt(2) * math.sqrt(3 / 200)
    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / 300)
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    init.uniform_(w, -0.5, 2.0)
    assert w.data.min() >= -0.5 and w.data.max() <= 2.0 and abs(w.data.mean() - 0.75) < 0.02


def test_normal_initializers_have_their_spread():
    w = param(300, 200, dtype=np.float64)
    init.kaiming_normal_(w, nonlinearity="relu")
    assert w.dtype == np.float64
    assert abs(w.data.std() / (math.sqrt(2) / math.sqrt(200)) - 1) < 0.02
    init.xavier_normal_(w)
    assert abs(w.data.std() / math.sqrt(2 / 500) - 1) < 0.02
    init.normal_(w, mean=3.0, std=0.5)
    assert abs(w.data.mean() - 3.0) < 0.01 and abs(w.data.std() - 0.5) < 0.01


def test_constant_zeros_ones():
    w = param(3, 4)
    np.testing.assert_array_equal(init.constant_(w, 0.25).data, 0.25)
    np.testing.assert_array_equal(init.ones_(w).data, 1)
    np.testing.assert_array_equal(init.zeros_(w).data, 0)


def test_seeding_and_explicit_generator():
    w = param(4, 4)
    fastgrad.manual_seed(3)
    a = init.kaiming_uniform_(w).data.copy()
    fastgrad.manual_seed(3)
    np.testing.assert_array_equal(init.kaiming_uniform_(w).data, a)
    b = init.normal_(w, generator=np.random.default_rng(5)).data.copy()
    np.testing.assert_array_equal(init.normal_(w, generator=np.random.default_rng(5)).data, b)


def test_zero_element_tensor_warns():
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(param(0, 3))
