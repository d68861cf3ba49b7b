"""Adagrad with learning-rate decay, weight decay and maximize (PyTorch's Adagrad)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import kernels
from ..tensor import Tensor
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad (same arguments, defaults and math).

    Per parameter: g = grad (+ weight_decay * p); sum += g^2;
    p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps). As in PyTorch, the
    state (``step`` = 0, ``sum`` = initial_accumulator_value) is made for every
    parameter when the optimizer is built, so it is in ``state_dict()`` from the start.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
        }
        self._validate_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        entry = self.state[p]
        if not entry:
            entry["step"] = 0
            entry["sum"] = np.full(p.data.shape, group["initial_accumulator_value"], p.data.dtype)
        return entry

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not 0.0 <= group["lr"] < math.inf:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not 0.0 <= group["lr_decay"] < math.inf:
            raise ValueError(f"Invalid lr_decay value: {group['lr_decay']}")
        if not 0.0 <= group["weight_decay"] < math.inf:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not 0.0 <= group["initial_accumulator_value"] < math.inf:
            raise ValueError(f"Invalid initial_accumulator_value value: {group['initial_accumulator_value']}")
        if not 0.0 <= group["eps"] < math.inf:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")

    def share_memory(self) -> None:
        """A no-op kept for PyTorch scripts: the state lives in this process's numpy arrays."""

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
        buckets = {}
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            entry = self._init_state(p, group)  # a group added later gets its state here
            step = entry["step"] + 1
            entry["step"] = step
            params, grads, sums = self._bucket(buckets, (p.data.dtype, step), 3)
            params.append(p.data)
            grads.append(grad.data)
            sums.append(entry["sum"])
        lr, lr_decay, eps, wd = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        for (_, step), (params, grads, sums) in buckets.items():
            kernels.adagrad_step(params, grads, sums, step, lr, lr_decay, eps, wd, group["maximize"], n_threads)
