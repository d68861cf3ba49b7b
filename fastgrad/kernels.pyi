"""Types of ``fastgrad.kernels``: the one switch between compiled and pure-Python kernels.

At run time kernels.py binds every public name of every family to the compiled function
(``fastgrad._ext._<family>``) or its pure-Python twin (``fastgrad.reference.<family>``);
both have the signatures of ``fastgrad/_ext/_<family>.pyi``, which this stub re-exports so
that an editor follows ``kernels.conv2d_forward`` to its signature. tests/test_stubs.py
checks that every family's names are here, from the right module."""

from types import ModuleType
from typing import Literal

from fastgrad._ext._activation import (
    add_relu_forward as add_relu_forward,
    leaky_relu_backward as leaky_relu_backward,
    leaky_relu_forward as leaky_relu_forward,
    log_softmax_backward as log_softmax_backward,
    log_softmax_forward as log_softmax_forward,
    relu_backward as relu_backward,
    relu_forward as relu_forward,
    sigmoid_backward as sigmoid_backward,
    sigmoid_forward as sigmoid_forward,
    softmax_backward as softmax_backward,
    softmax_forward as softmax_forward,
    tanh_backward as tanh_backward,
    tanh_forward as tanh_forward,
)
from fastgrad._ext._conv import (
    conv2d_backward_bias as conv2d_backward_bias,
    conv2d_backward_input as conv2d_backward_input,
    conv2d_backward_weight as conv2d_backward_weight,
    conv2d_forward as conv2d_forward,
    conv2d_workspace_size as conv2d_workspace_size,
)
from fastgrad._ext._engine import (
    accumulate as accumulate,
    backward_walk as backward_walk,
    guard_holds as guard_holds,
    replay_backward as replay_backward,
    run_instructions as run_instructions,
)
from fastgrad._ext._group_norm import (
    group_norm_backward as group_norm_backward,
    group_norm_forward as group_norm_forward,
    layer_norm_backward as layer_norm_backward,
    layer_norm_forward as layer_norm_forward,
)
from fastgrad._ext._linear import (
    linear_backward as linear_backward,
    linear_backward_bias as linear_backward_bias,
    linear_backward_input as linear_backward_input,
    linear_backward_weight as linear_backward_weight,
    linear_forward as linear_forward,
)
from fastgrad._ext._loss import (
    binary_cross_entropy_with_logits_forward as binary_cross_entropy_with_logits_forward,
    cross_entropy_forward as cross_entropy_forward,
    mse_loss_backward as mse_loss_backward,
    mse_loss_forward as mse_loss_forward,
    nll_loss_backward as nll_loss_backward,
    nll_loss_forward as nll_loss_forward,
)
from fastgrad._ext._norm import (
    batch_norm_backward as batch_norm_backward,
    batch_norm_forward_eval as batch_norm_forward_eval,
    batch_norm_forward_train as batch_norm_forward_train,
)
from fastgrad._ext._optim import (
    adadelta_step as adadelta_step,
    adagrad_step as adagrad_step,
    adam_step as adam_step,
    rmsprop_step as rmsprop_step,
    sgd_step as sgd_step,
)
from fastgrad._ext._pool import (
    adaptive_avg_pool2d_backward as adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward as adaptive_avg_pool2d_forward,
    avg_pool2d_backward as avg_pool2d_backward,
    avg_pool2d_forward as avg_pool2d_forward,
    max_pool2d_backward as max_pool2d_backward,
    max_pool2d_forward as max_pool2d_forward,
)
from fastgrad._ext._smooth_activation import (
    elu_backward as elu_backward,
    elu_forward as elu_forward,
    gelu_backward as gelu_backward,
    gelu_forward as gelu_forward,
    hardswish_backward as hardswish_backward,
    hardswish_forward as hardswish_forward,
    prelu_backward as prelu_backward,
    prelu_forward as prelu_forward,
    silu_backward as silu_backward,
    silu_forward as silu_forward,
)

BACKENDS: tuple[str, ...]
SIMD_PATHS: tuple[str, ...]
SIMD_LEVELS: dict[str, int]
FAMILIES: list[str]

backend: Literal["compiled", "reference"] | None
simd_path: Literal["avx512", "avx2", "baseline"] | None
simd_variant: Literal["v3", "baseline"] | None
load_error: str | None
runtime: ModuleType | None

def simd_paths() -> list[str]: ...
def use_backend(name: str) -> None: ...
def use_simd(path: str) -> str: ...
