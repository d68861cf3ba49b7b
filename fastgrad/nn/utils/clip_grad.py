"""Gradient clipping, as torch.nn.utils: by the total norm of all gradients, or by value.
Both change the ``.grad`` arrays in place and skip parameters without a gradient."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ...tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[np.ndarray]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad.data for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale the gradients so that their total ``norm_type``-norm (the norm of the vector
    of all gradients) is at most ``max_norm``. Returns the total norm before clipping, as
    a 0-d tensor."""
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return Tensor(np.array(0.0, dtype=np.float32))
    if norm_type == math.inf:
        norms = [np.abs(g).max() if g.size else g.dtype.type(0) for g in grads]
        total = np.max(norms)
    else:
        norms = [np.linalg.norm(g.reshape(-1), norm_type) if g.size else g.dtype.type(0) for g in grads]
        total = np.linalg.norm(np.array(norms), norm_type)
    total = np.asarray(total, dtype=grads[0].dtype)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    # as PyTorch: the 1e-6 guards a zero norm; the coefficient never scales gradients up
    coef = min(float(max_norm) / (float(total) + 1e-6), 1.0)
    if coef < 1.0 or not np.isfinite(total):
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor(total)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient element into [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
