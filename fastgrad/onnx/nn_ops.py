"""ONNX forms of the layer ops: convolution, linear, pooling, batch norm, activations,
and dropout.

Each mapped function takes the builder ``g``, the recorded Function ``node``, the value
names of its inputs ``x`` and its output Tensor ``out``, and returns the name of its
ONNX output. The geometry comes from what the op's forward kept (a ConvStep's params,
a pooling op's params) and the output's shape, so padding that PyTorch puts only at the
bottom and right ('same' with an even kernel, ceil_mode) is written out explicitly.
"""

import numpy as np

from ..ops import activation, conv, dropout, linear, norm, pool
from .errors import Unsupported
from .table import maps


def _end_pad(size, out, span, stride, begin):
    """The padding after an axis of ``size`` that gives ``out`` windows spanning ``span``
    at ``stride`` with ``begin`` before it, in floor mode: ``begin`` when that already
    does (symmetric padding), else what the last window needs."""
    if (size + 2 * begin - span) // stride + 1 == out:
        return begin
    return max((out - 1) * stride + span - size - begin, 0)


def _pads(in_hw, out_hw, spans, strides, begins):
    ends = [_end_pad(s, o, k, st, b) for s, o, k, st, b in zip(in_hw, out_hw, spans, strides, begins)]
    return [int(b) for b in begins] + ends


# --------------------------------------------------------------------------- convolution and linear


def conv2d(g, x, weights, params, in_shape, out_shape, relu):
    """Conv (+ Relu); params: (stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups)."""
    sh, sw, pt, pl, dh, dw, groups = params
    kh, kw = g.shapes[weights[0]][2:]
    spans = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    y = g.op(
        "Conv",
        [x, *weights],
        kernel_shape=[int(kh), int(kw)],
        strides=[int(sh), int(sw)],
        pads=_pads(in_shape[2:], out_shape[2:], spans, (sh, sw), (pt, pl)),
        dilations=[int(dh), int(dw)],
        group=int(groups),
    )
    return g.op("Relu", [y]) if relu else y


def conv2d_attributes(node):
    """(params, fused relu) of a Conv2d node (params as conv2d takes them)."""
    return node.step.params, node.step.relu


@maps(conv.Conv2d)
def conv2d_op(g, node, x, out):
    params, relu = conv2d_attributes(node)
    return conv2d(g, x[0], x[1:], params, g.shapes[x[0]], out.shape, relu)


def linear_(g, x, weights, relu):
    """x @ W.T (+ b) (+ Relu): Gemm for a matrix, MatMul (+ Add) for any other rank."""
    if len(g.shapes[x]) == 2:
        y = g.op("Gemm", [x, *weights], transB=1)
    else:
        y = g.op("MatMul", [x, g.op("Transpose", [weights[0]], perm=[1, 0])])
        if len(weights) == 2:
            y = g.op("Add", [y, weights[1]])
    return g.op("Relu", [y]) if relu else y


def linear_fused_relu(node):
    return node.step.relu


@maps(linear.Linear)
def linear_op(g, node, x, out):
    return linear_(g, x[0], x[1:], linear_fused_relu(node))


# --------------------------------------------------------------------------- pooling


def max_pool2d(g, x, params, in_shape, out_shape):
    """MaxPool; params: (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w).
    ceil_mode is written as extra padding at the end (never taken as a maximum)."""
    kh, kw, sh, sw, ph, pw, dh, dw = params
    spans = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    return g.op(
        "MaxPool",
        [x],
        kernel_shape=[int(kh), int(kw)],
        strides=[int(sh), int(sw)],
        pads=_pads(in_shape[2:], out_shape[2:], spans, (sh, sw), (ph, pw)),
        dilations=[int(dh), int(dw)],
    )


def max_pool2d_params(node):
    """(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w) of a MaxPool2d node."""
    return node.step.params


@maps(pool.MaxPool2d)
def max_pool2d_op(g, node, x, out):
    return max_pool2d(g, x[0], max_pool2d_params(node), g.shapes[x[0]], out.shape)


def avg_pool2d_params(node):
    """(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
    divisor_override) of an AvgPool2d node."""
    return node.params


@maps(pool.AvgPool2d)
def avg_pool2d(g, node, x, out):
    kh, kw, sh, sw, ph, pw, count_include_pad, divisor = avg_pool2d_params(node)
    in_hw, out_hw = g.shapes[x[0]][2:], out.shape[2:]
    if divisor is not None:
        # the window sums (a depthwise convolution with ones; padding adds zeros) / divisor
        channels = g.shapes[x[0]][1]
        ones = g.const(np.ones((channels, 1, kh, kw), dtype=out.data.dtype), "window")
        total = g.op(
            "Conv",
            [x[0], ones],
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            group=int(channels),
            pads=_pads(in_hw, out_hw, (kh, kw), (sh, sw), (ph, pw)),
        )
        return g.op("Div", [total, g.const(np.asarray(divisor, dtype=out.data.dtype), "divisor")])
    floor_hw = tuple((s + 2 * p - k) // st + 1 for s, p, k, st in zip(in_hw, (ph, pw), (kh, kw), (sh, sw)))
    return g.op(
        "AveragePool",
        [x[0]],
        kernel_shape=[kh, kw],
        strides=[sh, sw],
        pads=[ph, pw, ph, pw],
        ceil_mode=int(tuple(out_hw) != floor_hw),
        count_include_pad=int(count_include_pad),
    )


def _adaptive_matrix(size, out, dtype):
    """(out, size): row i averages PyTorch's adaptive region i, [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m.astype(dtype)


@maps(pool.AdaptiveAvgPool2d)
def adaptive_avg_pool2d(g, node, x, out):
    (H, W), (oh, ow) = g.shapes[x[0]][2:], out.shape[2:]
    if (oh, ow) == (1, 1):
        return g.op("GlobalAveragePool", x)
    if oh and ow and H % oh == 0 and W % ow == 0:
        k = [H // oh, W // ow]
        return g.op("AveragePool", x, kernel_shape=k, strides=k)
    # uneven regions: the average is linear and separable, rows then columns
    dtype = out.data.dtype
    rows = g.op("MatMul", [g.const(_adaptive_matrix(H, oh, dtype), "rows"), x[0]])
    return g.op("MatMul", [rows, g.const(_adaptive_matrix(W, ow, dtype).T.copy(), "columns")])


# --------------------------------------------------------------------------- normalization and dropout


def batch_norm_attributes(node):
    """(uses the batch's statistics, has weight, has bias, mean, 1 / sqrt(var + eps)) of a
    BatchNorm node: the statistics it normalized by, one per channel."""
    return node.use_batch_stats, node.has_weight, node.has_bias, node.save_mean, node.save_invstd


@maps(norm.BatchNorm)
def batch_norm(g, node, x, out):
    batch_stats, has_weight, has_bias, mean, invstd = batch_norm_attributes(node)
    if batch_stats:
        raise Unsupported(
            "batch_norm with the batch's statistics (training=True, or no running "
            "statistics): an exported model normalizes by running statistics"
        )
    dtype, channels = out.data.dtype, out.shape[1]
    scale = x[1] if has_weight else g.const(np.ones(channels, dtype), "scale")
    bias = x[-1] if has_bias else g.const(np.zeros(channels, dtype), "bias")
    # the forward kept 1/sqrt(running_var + eps): given as the variance, with epsilon 0
    invstd = np.asarray(invstd, dtype=np.float64).reshape(channels)
    var = g.const((1.0 / (invstd * invstd)).astype(dtype), "running_var_plus_eps")
    mean = g.const(np.asarray(mean, dtype=dtype).reshape(channels), "running_mean")
    return g.op("BatchNormalization", [x[0], scale, bias, mean, var], epsilon=0.0)


@maps(dropout.Dropout)
def dropout_op(g, node, x, out):
    raise Unsupported(
        "dropout called with training=True; in eval mode dropout is the identity (pass training=self.training)"
    )


# --------------------------------------------------------------------------- activations

_ELEMENTWISE = {activation.ReLU: "Relu", activation.Sigmoid: "Sigmoid", activation.Tanh: "Tanh"}


@maps(*_ELEMENTWISE)
def elementwise(g, node, x, out):
    return g.op(_ELEMENTWISE[type(node)], x)


def leaky_relu_slope(node):
    return float(node.negative_slope)


@maps(activation.LeakyReLU)
def leaky_relu(g, node, x, out):
    return g.op("LeakyRelu", x, alpha=leaky_relu_slope(node))


def softmax_dim(node):
    return int(node.layout.dim)


@maps(activation.Softmax, activation.LogSoftmax)
def softmax(g, node, x, out):
    op_type = "LogSoftmax" if isinstance(node, activation.LogSoftmax) else "Softmax"
    return g.op(op_type, x, axis=softmax_dim(node))
