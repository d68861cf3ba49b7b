"""``export``: one eval-mode forward of a model, recorded and written as an ONNX file."""

import os
import warnings

import numpy as np

from .. import __version__
from ..autograd import no_grad
from ..io import atomic_write
from ..nn.module import Module
from ..tensor import Tensor
from . import (  # noqa: F401  (they fill the table)
    conv_transpose_ops,
    nn_ops,
    norm_ops,
    resample_ops,
    select_ops,
    smooth_ops,
    tensor_ops,
)
from .errors import Unsupported, UnsupportedOperatorError
from .graph import GraphBuilder, make_model, value_info
from .record import first_input_dependent_constant, record
from .table import MAPPINGS, broadcast_dyn

MIN_OPSET = 13  # Softmax over one axis, ReduceSum's and Squeeze's axes as inputs


def export(model, args, f, input_names=None, output_names=None, dynamic_axes=None, opset_version=17):
    """Write ``model`` as an ONNX model to ``f`` (a path, written atomically, or a binary
    file object), as torch.onnx.export: ``model(*args)`` runs once in eval mode and the
    ops it ran become the graph, its parameters the initializers.

    ``args``: a Tensor or a tuple of Tensors (their shapes and dtype are the graph's):
    float inputs, or integer ones for the indices of an Embedding.
    ``input_names``/``output_names``: names for the graph's inputs and outputs (default
    "input"/"output", numbered when there are several). ``dynamic_axes``: {name: [axis,
    ...]} or {name: {axis: "symbol"}}, e.g. ``{"input": {0: "batch"}, "output": {0:
    "batch"}}``, makes those dimensions symbolic. A model in training mode is exported
    with eval semantics (with a warning) and put back in training mode afterwards.

    Returns the onnx.ModelProto written. Raises UnsupportedOperatorError, naming the op
    and the module that ran it, when an op has no ONNX form; nothing is written then.
    """
    import onnx

    if not isinstance(model, Module):
        raise TypeError(f"export: model must be a fastgrad.nn.Module, got {type(model).__name__}")
    inputs = _as_inputs(args)
    if isinstance(opset_version, bool) or not isinstance(opset_version, (int, np.integer)):
        raise TypeError(f"export: opset_version must be an integer, got {opset_version!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset_version <= newest:
        raise ValueError(
            f"export: opset_version {opset_version} is not supported; choose one from "
            f"{MIN_OPSET} to {newest} (the installed onnx's newest)"
        )
    in_names = _names("input", input_names, len(inputs))
    recording = _record_in_eval_mode(model, inputs)
    out_names = _names("output", output_names, len(recording.outputs))
    axes = _dynamic_axes(
        dynamic_axes, in_names, out_names, [t.shape for t in inputs], [t.shape for t in recording.outputs]
    )
    proto = _build(model, recording, in_names, out_names, axes, int(opset_version))
    data = proto.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
    else:
        atomic_write(os.fspath(f), data)
    return proto


def _as_inputs(args):
    items = args if isinstance(args, (tuple, list)) else (args,)
    if not items:
        raise ValueError("export: args must hold at least one input Tensor")
    for i, a in enumerate(items):
        if not isinstance(a, Tensor):
            raise TypeError(f"export: args[{i}] must be a fastgrad Tensor, got {type(a).__name__}")
    return list(items)


def _names(kind, given, count):
    if given is None:
        return [kind] if count == 1 else [f"{kind}_{i}" for i in range(count)]
    given = list(given)
    if any(not isinstance(n, str) or not n for n in given):
        raise TypeError(f"export: {kind}_names must be non-empty strings, got {given!r}")
    if len(given) > count:
        raise ValueError(f"export: {len(given)} {kind}_names for {count} {kind}s")
    names = given + [f"{kind}_{i}" for i in range(len(given), count)]
    if len(set(names)) != len(names):
        raise ValueError(f"export: {kind}_names repeat a name: {names!r}")
    return names


def _dynamic_axes(spec, in_names, out_names, in_shapes, out_shapes):
    """{name: {axis: symbol}} from torch.onnx's two forms, every name and axis checked."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise TypeError(f"export: dynamic_axes must be a dict, got {type(spec).__name__}")
    shapes = dict(zip(in_names, in_shapes)) | dict(zip(out_names, out_shapes))
    out = {}
    for name, axes in spec.items():
        if name not in shapes:
            raise ValueError(
                f"export: dynamic_axes names {name!r}, which is not an input or output "
                f"(inputs {in_names}, outputs {out_names})"
            )
        if isinstance(axes, dict):
            pairs = list(axes.items())
        elif isinstance(axes, (list, tuple)):
            pairs = [(a, f"{name}_dynamic_axes_{i + 1}") for i, a in enumerate(axes)]
        else:
            raise TypeError(f"export: dynamic_axes[{name!r}] must be a list of axes or a dict axis -> name")
        ndim, out[name] = len(shapes[name]), {}
        for axis, symbol in pairs:
            if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
                raise ValueError(
                    f"export: dynamic_axes[{name!r}]: axis {axis!r} is not an axis of its shape {tuple(shapes[name])}"
                )
            if not isinstance(symbol, str) or not symbol:
                raise TypeError(f"export: dynamic_axes[{name!r}]: the name of axis {axis} must be a string")
            out[name][int(axis) % ndim] = symbol
    return out


def _record_in_eval_mode(model, inputs):
    """The recording of ``model(*inputs)`` in eval mode, after a second forward on other
    input values found no constant that changes with them (one computed from the input
    outside the graph, which the export would freeze)."""
    modes = [(m, m.training) for m in model.modules()]
    if any(training for _, training in modes):
        warnings.warn(
            "export: the model is in training mode; it is exported with eval semantics "
            "(BatchNorm by its running statistics, Dropout as the identity) and put back "
            "in training mode afterwards",
            UserWarning,
            stacklevel=4,
        )
    rng = np.random.default_rng(0)  # not fastgrad's generator: export leaves its state alone
    others = [Tensor(_other_values(t.data, rng)) for t in inputs]
    model.eval()
    try:
        # a first call makes whatever the model caches per input shape, so that both
        # recordings run the same ops
        # other values may leave an op's domain (the log of a negated input): its NaNs
        # are compared as they are, without numpy's warnings
        with no_grad(), np.errstate(all="ignore"):
            model(*others)
        recording = record(model, inputs)
        with np.errstate(all="ignore"):
            second = record(model, others)
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)
    node = first_input_dependent_constant(recording, second, set(_leaf_names(model)))
    if node is not None:
        raise UnsupportedOperatorError(
            f"export: op {node.name()} in {_where(model, recording.path.get(node, ''))} takes a tensor "
            "computed from the input outside the autograd graph (detach(), .data, a comparison or numpy); "
            "it would be frozen into the ONNX graph as a constant"
        )
    inputs = {id(t) for t in recording.inputs}
    for i, (a, b) in enumerate(zip(recording.outputs, second.outputs)):
        if (
            a._ctx is None
            and id(a) not in inputs
            and a.shape == b.shape
            and not np.array_equal(a.data, b.data, equal_nan=True)
        ):
            raise UnsupportedOperatorError(
                f"export: output {i} of {type(model).__name__} is computed from the input outside the autograd "
                "graph (indices, a comparison, an integer cast or numpy); it would be frozen into the ONNX graph "
                "as a constant"
            )
    return recording


def _other_values(data, rng):
    """Other values for an input, for the second recording: noise added to a float input,
    a shuffle of an integer one (its values stay valid indices)."""
    if data.dtype.kind in "iu":
        return rng.permutation(data.reshape(-1)).reshape(data.shape)
    # negated too, so that a mask of signs (x > 0) differs everywhere
    return -(data + (rng.standard_normal(data.shape) * (np.std(data) + 1)).astype(data.dtype))


def _where(model, path):
    return f"module {path!r}" if path else f"the forward of {type(model).__name__} itself"


def _leaf_names(model):
    """id(tensor) -> state_dict-style name for the model's parameters and buffers."""
    names = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        names.setdefault(id(t), name)
    return names


def _build(model, rec, in_names, out_names, axes, opset):
    g = GraphBuilder(opset)
    values = {}  # id(Tensor) -> value name
    graph_inputs = []
    for t, name in zip(rec.inputs, in_names):
        values[id(t)] = g.note(g.reserve(name), t.shape, axes.get(name, {}))
        if t.dtype.kind in "iu":
            g.add_integer_input(t.data, name)
        graph_inputs.append(value_info(name, t.dtype, t.shape, axes.get(name, {})))
    leaf_names = _leaf_names(model)

    def value(t):
        name = values.get(id(t))
        if name is None:  # a leaf met for the first time: a parameter, a buffer or a constant
            if id(t) in leaf_names:
                name = g.note(g.initializer(t.data, leaf_names[id(t)]), t.shape, {})
            else:
                name = g.const(t.data)
            values[id(t)] = name
        return name

    for node in rec.nodes:
        g.path = rec.path.get(node, "")
        mapping = MAPPINGS.get(type(node))
        where = _where(model, g.path)
        if mapping is None:
            raise UnsupportedOperatorError(
                f"export: op {node.name()} in {where} has no ONNX mapping "
                "(fastgrad.onnx lists the mapped ops and how to add one)"
            )
        x = [value(p) for p in node.parents]
        out = rec.output_of[node]
        try:
            name = mapping(g, node, x, out)
        except Unsupported as exc:
            raise UnsupportedOperatorError(f"export: op {node.name()} in {where} cannot be exported: {exc}") from None
        if name not in g.dyn:
            g.note(name, out.shape, broadcast_dyn(g, x, out.ndim))
        values[id(out)] = name
    g.path = ""
    graph_outputs, renamed = [], {}
    for t, name in zip(rec.outputs, out_names):
        produced = value(t)
        dyn = dict(g.dyn.get(produced, {}))
        dyn.update(axes.get(name, {}))
        if produced in renamed:  # the same tensor returned twice
            g.nodes.append(_identity(g, renamed[produced], g.reserve(name)))
        else:
            renamed[produced] = _name_output(g, produced, g.reserve(name), in_names)
        graph_outputs.append(value_info(name, t.dtype, t.shape, dyn))
    return make_model(g, graph_inputs, graph_outputs, opset, __version__)


def _name_output(g, produced, name, in_names):
    """Make graph output ``name`` the value ``produced``: renamed where a node made it
    and nothing else reads it, else through an Identity. Returns the name it now has."""
    makers = [n for n in g.nodes if produced in n.output]
    readers = [n for n in g.nodes if produced in n.input]
    if len(makers) == 1 and not readers and produced not in in_names:
        outputs = makers[0].output
        outputs[list(outputs).index(produced)] = name
        return name
    g.nodes.append(_identity(g, produced, name))
    return produced


def _identity(g, src, dst):
    from onnx import helper

    return helper.make_node("Identity", [src], [dst], name=g.fresh(f"/{dst}/Identity"))
