"""Containers: Sequential (runs its modules in order) and ModuleList (holds them).

Both name their entries "0", "1", ... (Sequential also takes an OrderedDict of names),
so their parameters get PyTorch's keys: "features.0.weight".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from ...compile.cache import PlanCache
from ...tensor import Tensor
from ..module import Module, _indent_after_first_line

_M = TypeVar("_M", bound="_IndexedModules")


class _IndexedModules(Module):
    """What Sequential and ModuleList share: integer indexing, len, iteration."""

    def _key(self, idx: int) -> str:
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"{self._get_name()} indices must be integers or slices, not {type(idx).__name__}")
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a {self._get_name()} of length {n}")
        return list(self._modules)[idx % n]

    def _renumber(self, modules: Iterable[Module]) -> None:
        """Replace the entries by ``modules``, named 0..n-1."""
        for name in list(self._modules):
            self._unregister(name)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __setitem__(self, idx: int, module: Module) -> None:
        setattr(self, self._key(idx), module)

    def __delitem__(self, idx: int | slice) -> None:
        modules = list(self._modules.values())
        del modules[idx]
        self._renumber(modules)

    def append(self: _M, module: Module) -> _M:
        self.add_module(str(len(self)), module)
        return self

    def extend(self: _M, modules: Iterable[Module]) -> _M:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)


class Sequential(_IndexedModules):
    """``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict(name=module, ...))``;
    calling it feeds the input through each module in turn.

    A Sequential of fastgrad's own layers (nested Sequentials included) has no Python of
    the user's to run: its calls replay a plan of its ops, as ``fastgrad.compile`` would
    make (compile/cache.PlanCache; docs/fast-path.md), with the same values and
    gradients. The first call for each input signature runs the layers one by one (and
    raises their errors); a changed layer, hook, parameter or mode is seen by the plan's
    guard. A Sequential holding any other module (a subclass with its own forward, a
    forward set on an instance) runs its modules one by one. At most
    ``fastgrad.compile.cache_size_limit`` plans are kept (read when the first call is
    made).
    """

    def __init__(self, *args: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def __getitem__(self, idx: int | slice) -> Module:
        if isinstance(idx, slice):  # keeps the original names, as PyTorch does
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._key(idx)]

    def forward(self, input: Tensor) -> Tensor:
        cache = self.__dict__.get("_plan_cache")
        if cache is None:
            from ... import compile as compile_

            # its own hooks run in Module.__call__, around this forward
            cache = PlanCache(
                self,
                _run_layers,
                cache_size_limit=compile_.cache_size_limit,
                may_capture=_layers_only,
                root_hooks_outside=True,
            )
            object.__setattr__(self, "_plan_cache", cache)
        return cache.call((input,))


def _run_layers(seq: Sequential, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The Sequential's modules one after another: its forward, eagerly."""
    (input,) = args
    for module in seq._modules.values():
        if module is not None:
            input = module(input)
    return input


def _layers_only(seq: Sequential) -> str | None:
    """None when every module in ``seq`` is one of fastgrad's layers running its own
    forward (so a plan of ``seq`` captures no user code), else why its calls stay eager."""
    for name, module in seq.named_modules():
        if module is seq:
            continue
        cls = type(module)
        if not cls.__module__.startswith(_LAYERS) or getattr(cls, "_eager_only", False):
            return f"{name} is a {cls.__name__}, not one of fastgrad's layers that a Sequential plans"
        if "forward" in module.__dict__:
            return f"{name} has a forward set on the instance"
    return None


_LAYERS = __name__.rsplit(".", 1)[0] + "."  # fastgrad.nn.layers.


class ModuleList(_IndexedModules):
    """A list of modules whose parameters belong to the owner; it has no forward."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx: int | slice) -> Module:
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[self._key(idx)]

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __repr__(self) -> str:
        # consecutive equal entries print once, as "(0-2): 3 x Linear(...)", like PyTorch
        reprs = [repr(m) for m in self._modules.values()]
        if not reprs:
            return self._get_name() + "()"
        lines, start = [], 0
        for i in range(1, len(reprs) + 1):
            if i < len(reprs) and reprs[i] == reprs[start]:
                continue
            label = f"({start}): " if i - 1 == start else f"({start}-{i - 1}): {i - start} x "
            lines.append(_indent_after_first_line(label + reprs[start], 2))
            start = i
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"
