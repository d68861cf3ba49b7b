"""One forward pass, recorded for export: the autograd graph between the inputs and the
outputs, its Function nodes in the order they can run, and the module that made each.

The forward runs with gradients enabled on inputs that require them, so every op that
depends on an input or a parameter leaves a Function node on its output; each node
carries its type, the attributes its forward saved, and its inputs (``parents``). A
tensor without a node is a leaf: an input, a parameter or buffer of the model, or a
constant. Nothing here runs a backward pass; the graph is dropped after export.

Which module made a node is learnt from ``nn.module._forward_observers``: when a module
call returns, the nodes behind its output that no module has claimed yet are its own
(inner calls return first, so they claim theirs first), up to the nodes its arguments
came from.
"""

import threading

import numpy as np

from ..autograd import enable_grad
from ..nn import module as module_mod
from ..tensor import Tensor
from .table import held_arrays


class Recording:
    """``inputs`` and ``outputs`` (Tensors), ``nodes`` (Functions, each after the nodes
    its inputs come from), ``path`` (node -> dotted module path, "" for the model's own
    forward) and ``output_of`` (node -> the Tensor it produced)."""

    def __init__(self, inputs, outputs, nodes, path, output_of):
        self.inputs, self.outputs, self.nodes = inputs, outputs, nodes
        self.path, self.output_of = path, output_of


def _tensors(value):
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _claim(tensor, path, paths, before=()):
    """Attribute to ``path`` every node behind ``tensor`` that has no module yet, up to
    the nodes in ``before`` (those of the call's arguments, made outside it). The walk
    goes on through nodes an inner call claimed: behind them may be nodes this call made
    before calling it."""
    stack = [tensor._ctx] if tensor._ctx is not None else []
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen or node in before:
            continue
        seen.add(node)
        paths.setdefault(node, path)
        stack.extend(p._ctx for p in node.parents if p._ctx is not None)


def _order(outputs):
    """The nodes behind ``outputs``, each after every node it depends on (iterative, so
    a deep graph needs no recursion), and node -> its output Tensor."""
    order, done, output_of = [], set(), {}
    for out in outputs:
        if out._ctx is not None:
            output_of.setdefault(out._ctx, out)
    for out in outputs:
        if out._ctx is None or out._ctx in done:
            continue
        stack = [(out._ctx, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if node not in done:
                    done.add(node)
                    order.append(node)
                continue
            if node in done:
                continue
            stack.append((node, True))
            for parent in reversed(node.parents):
                if parent._ctx is not None:
                    output_of.setdefault(parent._ctx, parent)
                    if parent._ctx not in done:
                        stack.append((parent._ctx, False))
    return order, output_of


def record(model, args):
    """Run ``model(*args)`` once (the caller has put it in eval mode) and return its
    Recording. ``args`` are Tensors; the model sees copies, the float ones requiring grad."""
    inputs = []
    for i, a in enumerate(args):
        if a.dtype.kind not in "fiu":
            raise TypeError(
                f"export: input {i} has dtype {a.dtype}; the exported inputs must be float or integer tensors"
            )
        # integer inputs (an embedding's indices) take no gradient: the ops hold them as arrays
        inputs.append(Tensor(np.array(a.data), requires_grad=a.dtype.kind == "f"))
    names = {id(m): name for name, m in model.named_modules()}
    paths, thread = {}, threading.get_ident()

    def observe(module, call_args, output):
        if threading.get_ident() != thread:  # another thread's forward: not ours
            return
        path = names.get(id(module))
        if path is None:
            path = f"<{type(module).__name__} made in forward>"
        before = {t._ctx for t in _tensors(call_args) if t._ctx is not None}
        for t in _tensors(output):
            _claim(t, path, paths, before)

    module_mod._forward_observers.append(observe)
    try:
        with enable_grad():
            result = model(*inputs)
    finally:
        module_mod._forward_observers.remove(observe)
    outputs = _tensors(result)
    if not outputs or (not isinstance(result, Tensor) and len(outputs) != _count(result)):
        raise TypeError(
            f"export: the model must return a Tensor or a tuple or list of Tensors, got {type(result).__name__}"
        )
    for t in outputs:  # a call of the model itself returns through the observer too
        _claim(t, "", paths)
    order, output_of = _order(outputs)
    return Recording(inputs, outputs, order, paths, output_of)


def _count(value):
    if isinstance(value, (tuple, list)):
        return sum(_count(v) for v in value)
    return 1


def first_input_dependent_constant(first, second, model_tensors):
    """Compare two recordings of one forward on different inputs: the first node (of
    ``first``) that takes a constant (a leaf that is no input and none of
    ``model_tensors``, the ids of the model's parameters and buffers) whose value differs
    between them, or None. Such a constant was computed from the input outside the graph
    (``detach()``, ``.data``, a comparison, numpy) and would be frozen into the export.
    Raises ValueError when the two forwards ran different ops."""
    kinds = [type(n) for n in first.nodes], [type(n) for n in second.nodes]
    if kinds[0] != kinds[1]:
        raise ValueError(
            "export: the model's forward runs different ops for different input values "
            "(Python control flow on tensor values); its graph cannot be recorded once for all inputs"
        )
    inputs = {id(t) for t in first.inputs + second.inputs}
    for a, b in zip(first.nodes, second.nodes):
        for pa, pb in zip(a.parents, b.parents):
            if pa._ctx is not None or id(pa) in inputs or id(pa) in model_tensors:
                continue
            if pa.shape != pb.shape or not np.array_equal(pa.data, pb.data, equal_nan=True):
                return a
        for ha, hb in zip(held_arrays(a), held_arrays(b)):  # a where's condition, an embedding's indices
            position = _integer_input_index(first, ha)
            if position is not None and position == _integer_input_index(second, hb):
                continue  # an integer input of the graph, not a constant
            if ha.shape != hb.shape or not np.array_equal(ha, hb, equal_nan=True):
                return a
    return None


def _integer_input_index(recording, array):
    """The position of the integer input of ``recording`` holding ``array``, or None."""
    for i, t in enumerate(recording.inputs):
        if t.dtype.kind in "iu" and t.shape == array.shape and np.array_equal(t.data, array):
            return i
    return None
