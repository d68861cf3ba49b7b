"""SGD with momentum, dampening, Nesterov momentum, weight decay and maximize (PyTorch's SGD)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import kernels
from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD (same arguments, defaults and math).

    Per parameter: g = grad (+ weight_decay * p); with momentum, buf = momentum * buf +
    (1 - dampening) * g (buf = g on the first step), g = g + momentum * buf (nesterov)
    or buf; p = p - lr * g. State: ``momentum_buffer`` when momentum != 0.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not 0.0 <= group["lr"] < math.inf:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["momentum"] < math.inf:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not 0.0 <= group["weight_decay"] < math.inf:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not math.isfinite(group["dampening"]):  # any finite value is a valid factor 1 - dampening
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
        """One kernel call per bucket of parameters (one dtype, and with momentum, whether
        the buffer is new): in the common case one call for the whole group, gathered in
        one pass that looks a bucket up only when the bucket changes."""
        momentum, state = group["momentum"], self.state
        buckets, dtype, first_step = {}, None, None
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            data = p._data
            buf, fresh = None, False
            if momentum != 0:
                entry = state[p]
                buf = entry.get("momentum_buffer")
                if buf is None:  # the first step writes the gradient into it, as PyTorch's clone
                    buf = entry["momentum_buffer"] = np.empty(data.shape, data.dtype)
                    fresh = True
            if data.dtype is not dtype or fresh is not first_step:
                dtype, first_step = data.dtype, fresh  # equal dtypes share a bucket
                params, grads, bufs = self._bucket(buckets, (dtype, first_step), 3)
            params.append(data)
            grads.append(grad._data)
            if buf is not None:
                bufs.append(buf)
        lr, dampening, wd = group["lr"], group["dampening"], group["weight_decay"]
        nesterov, maximize = group["nesterov"], group["maximize"]
        for (_, first_step), (params, grads, bufs) in buckets.items():
            kernels.sgd_step(
                params, grads, bufs, lr, momentum, dampening, wd, nesterov, maximize, first_step, n_threads
            )
