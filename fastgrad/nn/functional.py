"""The functional interface, ``fastgrad.nn.functional`` (imported as ``F``): the
differentiable ops under PyTorch's names and signatures. Layers hold settings and
parameters and call these; the math lives in ``fastgrad.ops``."""
from ..ops.activation import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from ..ops.conv import conv2d, conv2d_relu
from ..ops.dropout import dropout
from ..ops.linear import linear, linear_relu
from ..ops.loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from ..ops.norm import batch_norm
from ..ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "binary_cross_entropy_with_logits", "conv2d",
           "conv2d_relu", "cross_entropy", "dropout", "leaky_relu", "linear", "linear_relu", "log_softmax",
           "max_pool2d", "mse_loss", "nll_loss", "relu", "sigmoid", "softmax", "tanh"]
