"""Signatures of ``fastgrad._ext._conv`` (compiled from ``src_c/_conv.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/conv.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def _dot_rates() -> dict[tuple[int, int, int], float]: ...
def _force_paths(
    input_direct: bool | None = None,
    flat_dot: bool | None = None,
    lanes_dot: bool | None = None,
    weight_direct: bool | None = None,
    gemm_tile: tuple[int, int] | None = None,
    input_phases: bool | None = None,
    rowblock: bool | None = None,
    forward_direct: bool | None = None,
    channel_lanes: bool | None = None,
) -> None: ...
def _plan_info(
    kernel: str,
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    stride_h: int,
    stride_w: int,
    pad_top: int,
    pad_left: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> dict[str, Any]: ...
def _tile_rates() -> dict[tuple[int, int, int], tuple[float, float]]: ...
def conv2d_backward_bias(grad_out: Array, grad_bias: Array, n_threads: int) -> None: ...
def conv2d_backward_input(
    grad_out: Array,
    weight: Array,
    grad_x: Array,
    stride_h: int,
    stride_w: int,
    pad_top: int,
    pad_left: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    workspace: Array | None,
    n_threads: int,
) -> None: ...
def conv2d_backward_weight(
    x: Array,
    grad_out: Array,
    grad_weight: Array,
    stride_h: int,
    stride_w: int,
    pad_top: int,
    pad_left: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    workspace: Array | None,
    n_threads: int,
) -> None: ...
def conv2d_forward(
    x: Array,
    weight: Array,
    bias: Array | None,
    out: Array,
    stride_h: int,
    stride_w: int,
    pad_top: int,
    pad_left: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    apply_relu: bool,
    workspace: Array | None,
    n_threads: int,
) -> None: ...
def conv2d_workspace_size(
    kernel: str,
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    stride_h: int,
    stride_w: int,
    pad_top: int,
    pad_left: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> int: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
