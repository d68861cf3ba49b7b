"""Adadelta with weight decay and maximize (PyTorch's Adadelta)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import kernels
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """Adadelta, as torch.optim.Adadelta (same arguments, defaults and math).

    Per parameter: g = grad (+ weight_decay * p); s = rho * s + (1 - rho) * g^2;
    delta = sqrt(acc + eps) / sqrt(s + eps) * g; acc = rho * acc + (1 - rho) * delta^2;
    p -= lr * delta. State: ``step``, ``square_avg``, ``acc_delta``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize}
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not 0.0 <= group["lr"] < math.inf:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {group['rho']}")
        if not 0.0 <= group["eps"] < math.inf:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if not 0.0 <= group["weight_decay"] < math.inf:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
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
                entry["acc_delta"] = np.zeros(data.shape, data.dtype)
            entry["step"] += 1
            params, grads, square_avgs, acc_deltas = self._bucket(buckets, data.dtype, 4)
            params.append(data)
            grads.append(grad.data)
            square_avgs.append(entry["square_avg"])
            acc_deltas.append(entry["acc_delta"])
        lr, rho, eps, wd, maximize = group["lr"], group["rho"], group["eps"], group["weight_decay"], group["maximize"]
        for params, grads, square_avgs, acc_deltas in buckets.values():
            kernels.adadelta_step(params, grads, square_avgs, acc_deltas, lr, rho, eps, wd, maximize, n_threads)
