"""Module hooks: forward pre-hooks, forward hooks and full backward hooks, called as
PyTorch's ``Module.__call__`` calls them.

Order of one call: forward pre-hooks (may replace the positional arguments, or with
``with_kwargs=True`` the arguments and keyword arguments); when full backward hooks are
registered and grad mode is on, each positional Tensor argument that requires grad is
passed through a GradientTap; ``forward``; forward hooks (may replace the output); then
each Tensor of the output that requires grad goes through a GradientTap. In backward, the
output taps gather ``grad_output``; once every tapped input has its gradient (or, when no
input requires grad, once the outputs have theirs) each backward hook is called as
``hook(module, grad_input, grad_output)`` and may return a replacement ``grad_input``.
Entries for arguments that are not Tensors requiring grad are None.

A module with hooks always runs through ``Module.__call__``: a plan (a compiled module's,
or a Sequential's own) is never replayed while any module inside has hooks, so they fire
on every call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..autograd import is_grad_enabled
from ..hooks import RemovableHandle, _HookDict
from ..ops.hook import tap
from ..tensor import Tensor

if TYPE_CHECKING:
    from .module import Module

HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks")


def hook_dicts(module: Module) -> dict[str, Any]:
    """The module's three hook dicts (made on first use, for modules that skipped __init__)."""
    d = module.__dict__
    for name in HOOK_DICTS + ("_hooks_with_kwargs", "_hooks_always_called"):
        if name not in d:
            object.__setattr__(module, name, _HookDict())
    return d


def has_hooks(module: Module) -> bool:
    d = module.__dict__
    return bool(d.get("_forward_pre_hooks") or d.get("_forward_hooks") or d.get("_backward_hooks"))


def add_hook(
    module: Module,
    kind: str,
    hook: Callable[..., Any],
    prepend: bool = False,
    with_kwargs: bool = False,
    always_call: bool = False,
) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"register hook: expected a callable, got {type(hook).__name__}")
    d = hook_dicts(module)
    hooks = d[kind]
    handle = RemovableHandle(hooks, d["_hooks_with_kwargs"], d["_hooks_always_called"])
    hooks[handle.id] = hook
    if prepend:
        for key in [k for k in hooks if k != handle.id]:
            hooks[key] = hooks.pop(key)  # re-insert the others after the new one
    if with_kwargs:
        d["_hooks_with_kwargs"][handle.id] = True
    if always_call:
        d["_hooks_always_called"][handle.id] = True
    return handle


def call_with_hooks(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    d = hook_dicts(module)
    with_kwargs = d["_hooks_with_kwargs"]
    for key, hook in list(d["_forward_pre_hooks"].items()):
        if key in with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    backward = None
    if d["_backward_hooks"] and is_grad_enabled():
        backward = _BackwardHookCall(module, d["_backward_hooks"])
        args = backward.tap_inputs(args)
    called = set()
    try:
        output = module.forward(*args, **kwargs)
        for key, hook in list(d["_forward_hooks"].items()):
            called.add(key)
            result = hook(module, args, kwargs, output) if key in with_kwargs else hook(module, args, output)
            if result is not None:
                output = result
    except Exception:
        for key, hook in list(d["_forward_hooks"].items()):  # always_call hooks see the failed call
            if key in d["_hooks_always_called"] and key not in called:
                try:
                    hook(module, args, kwargs, None) if key in with_kwargs else hook(module, args, None)
                except Exception:
                    pass  # the forward's error is the one to report
        raise
    if backward is not None:
        output = backward.tap_outputs(output)
    return output


def _wants_grad(x: Any) -> bool:
    return isinstance(x, Tensor) and x._requires_grad


class _BackwardHookCall:
    """The backward hooks of one forward call: gathers grad_output and grad_input, fires once
    per backward pass, and is ready again for the next (retain_graph=True)."""

    def __init__(self, module: Module, hooks: dict[int, Callable[..., Any]]) -> None:
        self.module = module
        self.hooks = hooks
        self.n_args = 0
        self.inputs = []  # positions of the tapped inputs
        self.n_outputs = 0  # tapped outputs
        self.grad_input = {}
        self.grad_output = {}
        self.output_slots = 0

    def tap_inputs(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        self.n_args = len(args)
        out = list(args)
        for i, a in enumerate(args):
            if _wants_grad(a):
                self.inputs.append(i)
                out[i] = tap(a, lambda g, i=i: self._input_grad(i, g))
        return tuple(out)

    def tap_outputs(self, output: Any) -> Any:
        if isinstance(output, Tensor):
            self.output_slots = 1
            return self._tap_output(output, 0)
        if isinstance(output, (tuple, list)):
            self.output_slots = len(output)
            return type(output)(self._tap_output(o, j) for j, o in enumerate(output))
        return output

    def _tap_output(self, t: Any, j: int) -> Any:
        if not _wants_grad(t):
            return t
        self.n_outputs += 1
        return tap(t, lambda g: self._output_grad(j, g))

    def _output_grad(self, j: int, grad: np.ndarray) -> np.ndarray:
        self.grad_output[j] = grad
        if len(self.grad_output) == self.n_outputs and not self.inputs:
            warnings.warn(
                "Full backward hook is firing when gradients are computed with respect to module outputs "
                "since no inputs require gradients.",
                UserWarning,
                stacklevel=2,
            )
            result = self._fire({})
            if result is not None and any(r is not None for r in result):
                raise RuntimeError(
                    "Backward hook for Modules where no input requires gradient should always "
                    "return None or None for all gradients."
                )
        return grad

    def _input_grad(self, i: int, grad: np.ndarray) -> np.ndarray | None:
        self.grad_input[i] = grad
        if len(self.grad_input) < len(self.inputs):
            return grad
        result = self._fire(self.grad_input)
        if result is None:
            return grad
        if len(self.inputs) > 1:
            raise RuntimeError(
                f"backward hook of {type(self.module).__name__}: replacing grad_input is supported "
                f"when one input requires grad; this call had {len(self.inputs)}"
            )
        new = result[i]
        if new is None:
            return None
        data = getattr(new, "_data", None)
        if data is None or data.shape != grad.shape or data.dtype != grad.dtype:
            raise RuntimeError(
                f"backward hook of {type(self.module).__name__} returned grad_input[{i}] of "
                f"{_describe(new)}; expected a Tensor of shape {tuple(grad.shape)} and dtype "
                f"{grad.dtype}"
            )
        return data

    def _fire(self, grad_input: dict[int, np.ndarray]) -> tuple[Any, ...] | None:
        wrap = lambda a: None if a is None else Tensor._from_op(a, None)  # noqa: E731
        gin = tuple(wrap(grad_input.get(i)) for i in range(self.n_args))
        gout = tuple(wrap(self.grad_output.get(j)) for j in range(self.output_slots))
        self.grad_input, self.grad_output = {}, {}
        replaced = None
        for hook in list(self.hooks.values()):
            result = hook(self.module, gin, gout)
            if result is not None:
                result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
                if len(result) != len(gin):
                    raise RuntimeError(
                        f"Backward hook returned an invalid number of grad_input, got "
                        f"{len(result)}, but expected {len(gin)}"
                    )
                gin = replaced = result
        return replaced


def _describe(x: Any) -> str:
    data = getattr(x, "_data", None)
    return type(x).__name__ if data is None else f"shape {tuple(data.shape)} and dtype {data.dtype}"
