"""Adam and AdamW (PyTorch's Adam, with amsgrad and maximize; AdamW's decoupled weight decay)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import kernels
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (same arguments, defaults and math).

    Per parameter, at step t: g = grad (+ weight_decay * p; AdamW instead scales p by
    1 - lr * weight_decay); m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
    vmax = max(vmax, v) with amsgrad; p = p - lr / (1 - beta1^t) * m / (sqrt(v) /
    sqrt(1 - beta2^t) + eps). State: ``step``, ``exp_avg``, ``exp_avg_sq``
    (and ``max_exp_avg_sq`` with amsgrad).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if not 0.0 <= group["lr"] < math.inf:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["eps"] < math.inf:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:  # NaN fails too
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= group["weight_decay"] < math.inf:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
        amsgrad = group["amsgrad"]
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
                entry["exp_avg"] = np.zeros(data.shape, data.dtype)
                entry["exp_avg_sq"] = np.zeros(data.shape, data.dtype)
                if amsgrad:
                    entry["max_exp_avg_sq"] = np.zeros(data.shape, data.dtype)
            elif amsgrad and "max_exp_avg_sq" not in entry:  # amsgrad switched on midway
                entry["max_exp_avg_sq"] = np.zeros(data.shape, data.dtype)
            step = entry["step"] + 1
            entry["step"] = step
            params, grads, exp_avgs, exp_avg_sqs, maxes = self._bucket(buckets, (data.dtype, step), 5)
            params.append(data)
            grads.append(grad.data)
            exp_avgs.append(entry["exp_avg"])
            exp_avg_sqs.append(entry["exp_avg_sq"])
            if amsgrad:
                maxes.append(entry["max_exp_avg_sq"])
        beta1, beta2 = group["betas"]
        lr, eps, wd, maximize = group["lr"], group["eps"], group["weight_decay"], group["maximize"]
        decoupled = group["decoupled_weight_decay"]
        for (_, step), (params, grads, exp_avgs, exp_avg_sqs, maxes) in buckets.items():
            kernels.adam_step(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                maxes,
                step,
                lr,
                beta1,
                beta2,
                eps,
                wd,
                amsgrad,
                maximize,
                decoupled,
                n_threads,
            )


class AdamW(Adam):
    """AdamW, as torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay
    before the Adam update) and weight_decay=1e-2 by default."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # an AdamW stays AdamW, whatever the dict says
            group["decoupled_weight_decay"] = True
