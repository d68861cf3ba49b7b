"""ONNX forms of the smooth activations (fastgrad.ops.smooth_activation): GELU, SiLU, ELU,
Hardswish and PReLU.

Where an opset lacks the op (Gelu before 20, HardSwish before 14) the formula is written
out with the same semantics: ``approximate="none"`` is x * (1 + erf(x / sqrt 2)) / 2 and
``"tanh"`` is x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2, as PyTorch's.
Each op's attributes are read in one accessor below, next to its mapping.
"""

import math

import numpy as np

from ..ops import smooth_activation as smooth
from .table import maps


def _scalar(g, value, out, base):
    return g.const(np.asarray(value, dtype=out.data.dtype), base)


# --------------------------------------------------------------------------- GELU


def gelu_uses_tanh(node):
    """Whether a GELU node took approximate="tanh" (its kernels' first argument)."""
    return bool(node.args[0])


@maps(smooth.GELU)
def gelu(g, node, x, out):
    tanh = gelu_uses_tanh(node)
    if g.opset >= 20:
        return g.op("Gelu", x, approximate="tanh" if tanh else "none")
    half = _scalar(g, 0.5, out, "half")
    one = _scalar(g, 1.0, out, "one")
    if tanh:
        cube = g.op("Mul", [g.op("Mul", [x[0], x[0]]), x[0]])
        inner = g.op("Add", [x[0], g.op("Mul", [cube, _scalar(g, 0.044715, out, "gelu_cubic")])])
        phi = g.op("Tanh", [g.op("Mul", [inner, _scalar(g, math.sqrt(2.0 / math.pi), out, "sqrt_2_over_pi")])])
    else:
        phi = g.op("Erf", [g.op("Mul", [x[0], _scalar(g, 1.0 / math.sqrt(2.0), out, "one_over_sqrt_2")])])
    return g.op("Mul", [g.op("Mul", [x[0], half]), g.op("Add", [phi, one])])


# --------------------------------------------------------------------------- SiLU, ELU, Hardswish


@maps(smooth.SiLU)
def silu(g, node, x, out):
    return g.op("Mul", [x[0], g.op("Sigmoid", x)])


def elu_alpha(node):
    return float(node.args[0])


@maps(smooth.ELU)
def elu(g, node, x, out):
    return g.op("Elu", x, alpha=elu_alpha(node))


@maps(smooth.Hardswish)
def hardswish(g, node, x, out):
    if g.opset >= 14:
        return g.op("HardSwish", x)
    # x * relu6(x + 3) / 6 = x * clip(x / 6 + 1 / 2, 0, 1)
    return g.op("Mul", [x[0], g.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5)])


# --------------------------------------------------------------------------- PReLU


@maps(smooth.PReLU)
def prelu(g, node, x, out):
    """PRelu broadcasts the slope from the right: one slope per channel (dimension 1)
    is reshaped to (C, 1, ..., 1) for an input with dimensions after the channels."""
    rank = len(g.shapes[x[0]])
    slope_shape = g.shapes[x[1]]
    channels = int(np.prod(slope_shape)) if slope_shape else 1
    slope = x[1]
    if channels > 1 and rank > 2:
        slope = g.op("Reshape", [slope, g.int64s([channels] + [1] * (rank - 2), "slope_shape")])
    return g.op("PRelu", [x[0], slope])
