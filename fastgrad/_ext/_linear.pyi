"""Signatures of ``fastgrad._ext._linear`` (compiled from ``src_c/_linear.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/linear.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def _use_narrow_kernels(on: bool) -> bool: ...
def linear_backward(
    x: Array,
    grad_out: Array,
    relu_out: Array | None,
    weight: Array,
    grad_x: Array | None,
    grad_weight: Array | None,
    grad_bias: Array | None,
    n_threads: int,
) -> None: ...
def linear_backward_bias(grad_out: Array, grad_bias: Array, n_threads: int) -> None: ...
def linear_backward_input(grad_out: Array, weight: Array, grad_x: Array, n_threads: int) -> None: ...
def linear_backward_weight(x: Array, grad_out: Array, grad_weight: Array, n_threads: int) -> None: ...
def linear_forward(
    x: Array,
    weight: Array,
    bias: Array | None,
    out: Array,
    apply_relu: bool,
    n_threads: int,
) -> None: ...
