"""Signatures of ``fastgrad._ext._engine`` (compiled from ``src_c/_engine.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/engine.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def accumulate(dst: Array, src: Array) -> None: ...
def backward_walk(order: list[Any], tensor_cls: type, retain_graph: bool) -> None: ...
def guard_holds(
    modules: list[tuple[Any, type, dict[str, Any], tuple[Any, ...]]],
    tensors: list[Any],
    arrays: list[Any],
    flags: list[bool],
    hooks: list[Any],
) -> bool: ...
def replay_backward(
    steps: tuple[tuple[Any, ...], ...],
    fns: list[Any] | None,
    vals: list[Any] | None,
    grad: Array,
    n_slots: int,
    out_slot: int,
    n_uses: int,
    retain: bool,
    op_backward: Any,
) -> tuple[Array | None, ...]: ...
def run_instructions(
    instrs: tuple[tuple[Any, list[Any], tuple[tuple[int, int], ...], int, tuple[int, ...], str | None], ...],
    vals: list[Any],
) -> None: ...

# how replay_backward hands an input's gradient on
GRAD_TO_SLOT: int
GRAD_TO_USE: int
GRAD_TO_NONE: int

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
