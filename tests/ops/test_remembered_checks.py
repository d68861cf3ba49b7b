"""Argument checks that remember what passed (ops/_util.remembered): a value equal to a
good one but of another type (True for 1, 1.0 for 1) is still refused, every time, with
the same message; a list argument is checked without being remembered."""

import pytest

import fastgrad
import fastgrad.nn.functional as F


@pytest.mark.parametrize("bad", [True, 1.0, (1, True)])
def test_conv_refuses_a_lookalike_of_a_remembered_stride(bad):
    x, w = fastgrad.randn(1, 2, 5, 5), fastgrad.randn(3, 2, 3, 3)
    F.conv2d(x, w, stride=1)
    F.conv2d(x, w, stride=(1, 1))
    for _ in range(2):
        with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
            F.conv2d(x, w, stride=bad)


def test_max_pool_refuses_a_lookalike_and_takes_lists():
    x = fastgrad.randn(1, 2, 6, 6)
    assert F.max_pool2d(x, 2).shape == (1, 2, 3, 3)
    assert F.max_pool2d(x, [2, 2]).shape == (1, 2, 3, 3)
    for _ in range(2):
        with pytest.raises(TypeError):
            F.max_pool2d(x, 2.0)


def test_linear_shape_errors_are_raised_every_time():
    w = fastgrad.randn(4, 3)
    assert F.linear(fastgrad.randn(2, 3), w).shape == (2, 4)
    for _ in range(2):
        with pytest.raises(ValueError, match="input has 5 features, weight expects 3"):
            F.linear(fastgrad.randn(2, 5), w)
