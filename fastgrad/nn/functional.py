"""The functional interface, ``fastgrad.nn.functional`` (imported as ``F``): the
differentiable ops under PyTorch's names and signatures. Layers hold settings and
parameters and call these; the math lives in ``fastgrad.ops``."""

from __future__ import annotations

from ..ops.activation import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from ..ops.conv import conv2d, conv2d_relu
from ..ops.dropout import dropout
from ..ops.linear import linear, linear_relu
from ..ops.loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from ..ops.norm import batch_norm
from ..ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "conv2d_relu",
    "cross_entropy",
    "dropout",
    "leaky_relu",
    "linear",
    "linear_relu",
    "log_softmax",
    "max_pool2d",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]

from ..ops.channel_dropout import dropout2d  # noqa: E402
from ..ops.conv_variants import avg_pool1d, conv1d, conv_transpose2d, max_pool1d  # noqa: E402
from ..ops.embedding import embedding, one_hot  # noqa: E402
from ..ops.group_norm import group_norm, layer_norm  # noqa: E402
from ..ops.interpolate import interpolate  # noqa: E402
from ..ops.pad import pad  # noqa: E402
from ..ops.smooth_activation import elu, gelu, hardswish, prelu, silu  # noqa: E402

__all__ += [
    "avg_pool1d",
    "conv1d",
    "conv_transpose2d",
    "dropout2d",
    "elu",
    "embedding",
    "gelu",
    "group_norm",
    "hardswish",
    "interpolate",
    "layer_norm",
    "max_pool1d",
    "one_hot",
    "pad",
    "prelu",
    "silu",
]
