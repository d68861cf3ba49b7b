"""Sequential's fast path: runs of consecutive Conv2d, Linear, ReLU, MaxPool2d and Flatten
layers executed as one chained op (fastgrad.ops.chain).

A ``ChainedRun`` stands for such a run inside a Sequential. The first call for each input
shape, dtype, thread count and kernel backend goes through the layers one by one (which
validates everything and raises the usual errors); if that succeeds the run is planned
for that key and later calls take the chain. Plans are
dropped when an attribute of any chained layer is assigned (``Module`` counts assignments
to watched modules in ``_Edits``), so changing a layer's stride or replacing its weight
is always seen, and a plan whose kernels refuse a weight's data swapped under it (another
shape or dtype) falls back to the layers. Only exact layer types are chained: a subclass
with its own forward is called as itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ... import _config
from ...autograd import _anomaly
from ...ops.activation import ReluStep
from ...ops.chain import ChainPlan, ReshapeStep, run_chain
from ...ops.conv import ConvStep, conv_geometry, kernel_home
from ...ops.linear import LinearStep
from ...ops.pool import MaxPoolStep, max_pool_geometry
from ...tensor import Tensor
from ..hooks import has_hooks
from ..module import Module, _Edits
from .activation import ReLU
from .conv import Conv2d
from .flatten import Flatten
from .linear import Linear
from .pooling import MaxPool2d

CHAINABLE = (Conv2d, Linear, ReLU, MaxPool2d, Flatten)
_MAX_PLANS = 16  # per run: input shapes seen (a last partial batch adds one)


def chainable(module: Module) -> bool:
    if has_hooks(module):  # its hooks must see every call: it runs as itself
        return False
    if type(module) is MaxPool2d:
        return not module.return_indices
    return type(module) in CHAINABLE


def fuses_relu(modules: Sequence[Module], i: int) -> bool:
    """Whether modules[i] is a Conv2d or Linear that takes the ReLU after it into its own
    output pass (then both run as one step, or as the layer's ``_forward_relu``)."""
    return type(modules[i]) in (Conv2d, Linear) and i + 1 < len(modules) and type(modules[i + 1]) is ReLU


def _steps_for(modules: Sequence[Module], shape: tuple[int, ...], n_threads: int) -> tuple[list[Any], list[Tensor]]:
    """The chain steps and weight tensors of ``modules`` for an input of ``shape``."""
    steps, weights, i = [], [], 0
    while i < len(modules):
        m = modules[i]
        kind = type(m)
        relu = fuses_relu(modules, i)
        layer_weights = []
        if kind is Conv2d:
            if len(shape) != 4:
                raise ValueError("only batched input is chained")
            layer_weights = [m.weight] + ([m.bias] if m.bias is not None else [])
            params, out_hw = conv_geometry("conv2d", shape, m.weight.shape, m.stride, m.padding, m.dilation, m.groups)
            step = ConvStep(shape, m.weight.shape, m.bias is not None, params, out_hw, relu, n_threads)
        elif kind is Linear:
            layer_weights = [m.weight] + ([m.bias] if m.bias is not None else [])
            step = LinearStep(shape, m.weight.shape, m.bias is not None, relu, n_threads)
        elif kind is ReLU:
            step = ReluStep(shape, n_threads)
        elif kind is MaxPool2d:
            if len(shape) != 4:
                raise ValueError("only batched input is chained")
            params, out_hw = max_pool_geometry(
                "max_pool2d", shape, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
            )
            step = MaxPoolStep(shape, params, out_hw, n_threads)
        else:  # Flatten
            ndim = len(shape)
            start, end = m.start_dim % ndim, m.end_dim % ndim
            size = 1
            for d in shape[start : end + 1]:
                size *= d
            step = ReshapeStep(shape, shape[:start] + (size,) + shape[end + 1 :])
        if kind is MaxPool2d and steps and type(steps[-1]) is ConvStep and steps[-1].relu:
            step.take_relu_mask(steps[-1])
        steps.append(step)
        weights.extend(layer_weights)
        shape = step.out_shape
        i += 2 if relu else 1
    return steps, weights


class ChainedRun:
    """Calls ``modules`` (all chainable, two or more) in order, as one chained op when
    a plan for the input exists."""

    def __init__(self, modules: Sequence[Module]) -> None:
        self.modules = modules
        self.plans = {}
        for module in modules:
            _Edits.watch(module)  # an assignment to any of them drops the plans
        self.edits = _Edits.count

    def __call__(self, input: Any) -> Any:
        if not isinstance(input, Tensor) or _anomaly.enabled:  # per-layer errors and checks
            return self._one_by_one(input)
        if self.edits != _Edits.count:
            self.plans.clear()
            self.edits = _Edits.count
        data = input._data
        key = (data.shape, data.dtype, _config.get_num_threads(), kernel_home())
        entry = self.plans.get(key)
        if entry is not None:
            plan, weights = entry
            try:
                return run_chain(plan, input, weights)
            except (TypeError, ValueError):
                # a weight's data was swapped under the plan (another shape or dtype)
                # and a kernel refused it (kernels check every array they are given):
                # the layers say what is wrong, or the run is planned anew
                del self.plans[key]
        out = self._one_by_one(input)  # validates; raises on bad input
        self._plan(key, input)
        return out

    def _one_by_one(self, input: Any) -> Any:
        modules, i = self.modules, 0
        while i < len(modules):
            m = modules[i]
            if fuses_relu(modules, i):
                input = m._forward_relu(input)
                i += 2
            else:
                input = m(input)
                i += 1
        return input

    def _plan(self, key: tuple[Any, ...], input: Tensor) -> None:
        shape, dtype, n_threads, _ = key
        try:
            steps, weights = _steps_for(self.modules, shape, n_threads)
        except (ValueError, TypeError):  # a case the chain does not take: stay one by one
            return
        if any(w._data.dtype != dtype for w in weights):
            return
        if len(self.plans) >= _MAX_PLANS:
            self.plans.clear()
        self.plans[key] = (ChainPlan(steps, dtype), weights)
