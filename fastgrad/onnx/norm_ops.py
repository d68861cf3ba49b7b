"""ONNX forms of the per-sample normalizations (fastgrad.ops.group_norm): LayerNorm ->
LayerNormalization (opset 17 and up; the formula before), GroupNorm -> a Reshape to
(N, groups, -1), InstanceNormalization, a Reshape back and the per-channel affine.

The forwards keep no epsilon: it is recovered from what they kept, the inverse standard
deviations rstd = 1 / sqrt(var + eps) of each row, as 1 / rstd^2 - var with the rows'
variances computed again in float64 (``_epsilon``). A forward that keeps ``eps`` is read
directly. Each op's attributes are read in one accessor below.
"""

import numpy as np

from ..ops import group_norm
from .table import maps


def _epsilon(node, rows):
    """eps of a normalization whose forward normalized ``rows`` (R, K) with the kept rstd
    (R,): exact when the forward keeps it, else 1 / rstd^2 - var from the row of smallest
    variance (where eps weighs most against the rounding of rstd)."""
    eps = getattr(node, "eps", None)
    if eps is not None:
        return float(eps)
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return 1e-5
    var = rows.var(axis=1)
    rstd = np.asarray(node.rstd, dtype=np.float64).reshape(-1)
    i = int(np.argmin(var))
    return max(float(1.0 / (rstd[i] * rstd[i]) - var[i]), 0.0)


# --------------------------------------------------------------------------- LayerNorm


def layer_norm_attributes(node):
    """(normalized rank, has weight, has bias, eps) of a LayerNorm node."""
    return len(node.affine_shape), node.has_weight, node.has_bias, _epsilon(node, node.x2)


@maps(group_norm.LayerNorm)
def layer_norm(g, node, x, out):
    n_dims, has_weight, has_bias, eps = layer_norm_attributes(node)
    dtype, rank = out.data.dtype, len(g.shapes[x[0]])
    normalized = tuple(g.shapes[x[0]][rank - n_dims :])
    weight = x[1] if has_weight else None
    bias = x[-1] if has_bias else None
    if g.opset >= 17:
        scale = weight if weight is not None else g.const(np.ones(normalized, dtype), "scale")
        return g.op("LayerNormalization", [x[0], scale, bias], axis=-n_dims, epsilon=eps)
    axes = list(range(rank - n_dims, rank))
    centered = g.op("Sub", [x[0], g.reduce("ReduceMean", x[0], axes, True)])
    var = g.reduce("ReduceMean", g.op("Mul", [centered, centered]), axes, True)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(eps, dtype), "epsilon")])])
    y = g.op("Div", [centered, std])
    if weight is not None:
        y = g.op("Mul", [y, weight])
    if bias is not None:
        y = g.op("Add", [y, bias])
    return y


# --------------------------------------------------------------------------- GroupNorm


def group_norm_attributes(node):
    """(groups, has weight, has bias, eps) of a GroupNorm node."""
    n = node.x3.shape[0]
    groups = int(node.num_groups)
    return groups, node.has_weight, node.has_bias, _epsilon(node, np.asarray(node.x3).reshape(n * groups, -1))


@maps(group_norm.GroupNorm)
def group_norm_op(g, node, x, out):
    groups, has_weight, has_bias, eps = group_norm_attributes(node)
    dtype, shape = out.data.dtype, g.shapes[x[0]]
    rank, channels = len(shape), shape[1]
    grouped = g.op("Reshape", [x[0], g.int64s([0, groups, -1], "grouped_shape")])
    ones, zeros = g.const(np.ones(groups, dtype), "ones"), g.const(np.zeros(groups, dtype), "zeros")
    normalized = g.op("InstanceNormalization", [grouped, ones, zeros], epsilon=eps)
    y = g.op("Reshape", [normalized, g.op("Shape", [x[0]])])
    per_channel = g.int64s([channels] + [1] * (rank - 2), "channel_shape")
    if has_weight:
        y = g.op("Mul", [y, g.op("Reshape", [x[1], per_channel])])
    if has_bias:
        y = g.op("Add", [y, g.op("Reshape", [x[-1], per_channel])])
    return y
