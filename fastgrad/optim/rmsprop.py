"""RMSprop with momentum, centering, weight decay and maximize (PyTorch's RMSprop)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import kernels
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop (same arguments, defaults and math).

    Per parameter: g = grad (+ weight_decay * p); s = alpha * s + (1 - alpha) * g^2;
    centered: a = alpha * a + (1 - alpha) * g, avg = sqrt(s - a^2) + eps, else
    avg = sqrt(s) + eps; with momentum, buf = momentum * buf + g / avg and p -= lr * buf,
    else p -= lr * g / avg. State: ``step``, ``square_avg`` (and ``momentum_buffer``,
    ``grad_avg`` when used).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "maximize": maximize,
        }
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not 0.0 <= group["lr"] < math.inf:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["eps"] < math.inf:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if not 0.0 <= group["momentum"] < math.inf:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not 0.0 <= group["weight_decay"] < math.inf:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not 0.0 <= group["alpha"] < math.inf:
            raise ValueError(f"Invalid alpha value: {group['alpha']}")

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
        momentum, centered = group["momentum"], group["centered"]
        use_momentum = momentum > 0
        state = self.state
        buckets = {}
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            data = p.data
            entry = state[p]
            if not entry:
                entry["step"] = 0
                entry["square_avg"] = np.zeros(data.shape, data.dtype)
            if use_momentum and "momentum_buffer" not in entry:
                entry["momentum_buffer"] = np.zeros(data.shape, data.dtype)
            if centered and "grad_avg" not in entry:
                entry["grad_avg"] = np.zeros(data.shape, data.dtype)
            entry["step"] += 1
            params, grads, square_avgs, grad_avgs, bufs = self._bucket(buckets, data.dtype, 5)
            params.append(data)
            grads.append(grad.data)
            square_avgs.append(entry["square_avg"])
            if centered:
                grad_avgs.append(entry["grad_avg"])
            if use_momentum:
                bufs.append(entry["momentum_buffer"])
        lr, alpha, eps, wd, maximize = (
            group["lr"],
            group["alpha"],
            group["eps"],
            group["weight_decay"],
            group["maximize"],
        )
        for params, grads, square_avgs, grad_avgs, bufs in buckets.values():
            kernels.rmsprop_step(
                params, grads, square_avgs, grad_avgs, bufs, lr, alpha, eps, wd, momentum, centered, maximize, n_threads
            )
