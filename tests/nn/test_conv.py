"""nn.Conv2d against torch.nn.Conv2d: padding='same' with even kernels (the extra row and
column of padding at the bottom and right), and constructor errors that name the layer
and keep PyTorch's wording."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn

# (in, out, kernel_size, dilation, groups): even extents pad one more row/column at the
# bottom/right; an even kernel with dilation 2 has an odd extent (symmetric padding)
SAME_EVEN = [
    (2, 3, (2, 4), 1, 1),
    (3, 4, 4, 1, 1),
    (2, 2, (2, 3), (1, 2), 1),
    (4, 6, 2, 1, 2),
    (2, 3, 2, 2, 1),
]


def _pair_of_layers(torch, c_in, c_out, kernel_size, dilation, groups, seed):
    fastgrad.manual_seed(seed)
    ours = nn.Conv2d(c_in, c_out, kernel_size, padding="same", dilation=dilation, groups=groups)
    theirs = torch.nn.Conv2d(c_in, c_out, kernel_size, padding="same", dilation=dilation, groups=groups)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    return ours, theirs


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # PyTorch's note on a padded copy
@pytest.mark.parametrize("c_in,c_out,kernel_size,dilation,groups", SAME_EVEN)
@pytest.mark.parametrize("fused_relu", [False, True])
def test_same_padding_even_kernel_matches_pytorch(c_in, c_out, kernel_size, dilation, groups, fused_relu):
    torch = pytest.importorskip("torch")
    ours, theirs = _pair_of_layers(torch, c_in, c_out, kernel_size, dilation, groups, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, c_in, 7, 6)).astype(np.float32)
    g = rng.standard_normal((2, c_out, 7, 6)).astype(np.float32)

    xf = fastgrad.tensor(x, requires_grad=True)
    # a plan runs Conv2d + ReLU as one fused call (conv2d_relu)
    yf = (
        fastgrad.nn.functional.conv2d_relu(
            xf, ours.weight, ours.bias, ours.stride, ours.padding, ours.dilation, ours.groups
        )
        if fused_relu
        else ours(xf)
    )
    (yf * fastgrad.tensor(g)).sum().backward()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    if fused_relu:
        yt = torch.relu(yt)
    (yt * torch.from_numpy(g)).sum().backward()

    assert yf.shape == tuple(yt.shape) == (2, c_out, 7, 6)
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yf.data, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(xf.grad.data, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(ours.bias.grad.data, theirs.bias.grad.numpy(), **tol)
    assert repr(ours) == repr(theirs)


def test_same_padding_even_kernel_pads_bottom_and_right():
    # a 2x2 kernel of ones over a ramp: output (i, j) sums rows i, i+1 and columns j, j+1,
    # the row and column past the image being zeros
    conv = nn.Conv2d(1, 1, 2, padding="same", bias=False)
    conv.weight.data[...] = 1
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    want = np.zeros((1, 1, 3, 4), np.float32)
    padded = np.pad(x[0, 0], ((0, 1), (0, 1)))
    for i in range(3):
        for j in range(4):
            want[0, 0, i, j] = padded[i : i + 2, j : j + 2].sum()
    np.testing.assert_array_equal(conv(fastgrad.tensor(x)).data, want)


BAD_ARGUMENTS = [
    ((3, 4, 3), dict(groups=2), "Conv2d: in_channels must be divisible by groups (in_channels=3, groups=2)"),
    ((4, 3, 3), dict(groups=2), "Conv2d: out_channels must be divisible by groups (out_channels=3, groups=2)"),
    (
        (1, 3, 3),
        dict(stride=2, padding="same"),
        "Conv2d: padding='same' is not supported for strided convolutions (stride=(2, 2))",
    ),
    ((1, 3, 3), dict(padding="full"), "Conv2d: Invalid padding string 'full', should be one of {'valid', 'same'}"),
]


@pytest.mark.parametrize("args,kwargs,message", BAD_ARGUMENTS)
def test_constructor_errors_name_the_layer(args, kwargs, message):
    with pytest.raises(ValueError) as info:
        nn.Conv2d(*args, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("args,kwargs,message", BAD_ARGUMENTS[:3])
def test_constructor_errors_keep_pytorchs_wording(args, kwargs, message):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError) as theirs:
        torch.nn.Conv2d(*args, **kwargs)
    with pytest.raises(ValueError) as ours:
        nn.Conv2d(*args, **kwargs)
    assert str(theirs.value) in str(ours.value)


def test_bad_dtype_names_the_layer():
    with pytest.raises(TypeError, match="^Conv2d: expected dtype float32 or float64, got int32"):
        nn.Conv2d(1, 2, 3, dtype=np.int32)
