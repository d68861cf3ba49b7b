"""Optimizer: the base of fastgrad's optimizers, with PyTorch's interface.

An optimizer holds ``param_groups`` (a list of dicts: the parameters under ``"params"``
and the hyperparameters of the group) and ``state`` (a dict from parameter to a dict
of numpy arrays: momentum buffers, moment estimates, and the step count). ``step()``
updates every parameter that has a gradient, in place (``p.data`` is changed, never
replaced), with one kernel call per group: a subclass only writes ``_update_group``,
which collects the arrays of its group and hands them to its kernel.

``state_dict()`` uses PyTorch's layout: ``{"state": {index: {...}}, "param_groups":
[{..., "params": [indices]}]}`` with numpy arrays, where parameters are numbered in
group order. Both ``state_dict()`` and ``load_state_dict()`` copy the arrays, so a saved
dict never changes under later steps and a loaded one is never shared.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _config
from ..autograd import enable_grad
from ..tensor import Tensor

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_UNORDERED = (
    "optimizer parameters need to be organized in ordered collections, but the ordering of "
    "tensors in sets will change between runs. Please use a list instead."
)


class _RequiredParameter:
    """The default of a hyperparameter every group must set (as torch.optim.optimizer.required)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of Tensors, or of dicts each with a ``"params"`` entry
    and hyperparameters that override ``defaults`` for that group.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        self._opt_called = False  # set by step(); lets a scheduler warn about call order
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, but got a Tensor"
            )
        if isinstance(params, dict):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors "
                "or dicts, but got a dict (wrap a parameter group in a list)"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(_UNORDERED)
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ----------------------------------------------------------------- groups
    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError for invalid hyperparameters of ``group`` (subclasses)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (a dict with ``"params"`` and optional hyperparameters)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(_UNORDERED)
        else:
            params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is "
                    f"{type(p).__module__}.{type(p).__name__} (params[{i}])"
                )
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (params[{i}], shape {tuple(p.shape)})")
            if p.data.dtype not in _FLOATS:
                raise TypeError(
                    f"optimizer can only optimize float32 or float64 tensors, but params[{i}] has dtype {p.data.dtype}"
                )
        if len(set(map(id, params))) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        group["params"] = params
        self._validate_group(group)
        self.param_groups.append(group)

    # ----------------------------------------------------------------- stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set every ``.grad`` to None, or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.data.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss, if given.

        ``closure`` re-evaluates the model and returns the loss; it runs with gradient
        recording on, before the update.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        n_threads = _config.get_num_threads()
        for group in self.param_groups:
            self._update_group(group, n_threads)
        self._opt_called = True
        return loss

    def _update_group(self, group: dict[str, Any], n_threads: int) -> None:
        raise NotImplementedError

    @staticmethod
    def _bucket(
        buckets: dict[Any, tuple[list[np.ndarray], ...]], key: Any, n_roles: int
    ) -> tuple[list[np.ndarray], ...]:
        """The lists of arrays of one kernel call: tensors of one dtype (and one step count)."""
        lists = buckets.get(key)
        if lists is None:
            lists = buckets[key] = tuple([[] for _ in range(n_roles)])
        return lists

    # ----------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state and hyperparameters, in PyTorch's layout, with copied arrays."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, entries in self.state.items():
            if id(p) in index and entries:
                state[index[id(p)]] = {k: _save_value(k, v) for k, v in entries.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict made by ``state_dict()`` (here or by PyTorch, converted to numpy).

        The groups must have the same sizes as this optimizer's; state arrays must have
        their parameter's shape (they are copied, in the parameter's dtype).
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("load_state_dict: expected a dict with 'state' and 'param_groups' entries")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has a different number of parameter groups "
                f"({len(saved_groups)}, the optimizer has {len(self.param_groups)})"
            )
        by_index = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group (group {i}: {len(saved['params'])} saved, "
                    f"{len(group['params'])} here)"
                )
            for idx, p in zip(saved["params"], group["params"]):
                by_index[idx] = p
        new_state = defaultdict(dict)
        for idx, entries in state_dict["state"].items():
            if idx not in by_index:
                raise ValueError(
                    f"load_state_dict: the state has an entry for parameter {idx!r}, which no parameter group lists"
                )
            p = by_index[idx]
            new_state[p] = {k: _load_value(idx, k, v, p) for k, v in entries.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group["params"] = group["params"]
            self._validate_group(new_group)
            new_groups.append(new_group)
        self.state = new_state
        self.param_groups = new_groups

    # ----------------------------------------------------------------- display
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _save_value(key: str, value: Any) -> Any:
    if key == "step":  # as PyTorch saves it: a 0-d float32 array
        return np.array(float(value), dtype=np.float32)
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)


def _load_value(idx: int, key: str, value: Any, param: Tensor) -> Any:
    if key == "step":
        return int(round(float(np.asarray(value))))
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.shape != param.data.shape:
        raise ValueError(
            f"load_state_dict: state[{idx!r}][{key!r}] has shape {arr.shape}, but its parameter "
            f"has shape {param.data.shape}"
        )
    return np.array(arr, dtype=param.data.dtype, order="C", copy=True)
