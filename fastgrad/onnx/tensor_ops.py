"""ONNX forms of the tensor ops: elementwise arithmetic (fastgrad.ops.elementwise), matmul
(ops.linalg), shapes (ops.shape) and reductions (ops.reduce).

Each function takes the builder ``g``, the recorded Function ``node``, the value names of
its inputs ``x`` and its output Tensor ``out``, and returns the name of its ONNX output.
"""

import numpy as np

from ..ops import elementwise, linalg, reduce, shape
from .errors import Unsupported
from .graph import tensor_type
from .table import maps

_BINARY = {
    elementwise.Add: "Add",
    elementwise.Sub: "Sub",
    elementwise.Mul: "Mul",
    elementwise.Div: "Div",
    elementwise.Pow: "Pow",
    linalg.MatMul: "MatMul",
}
_UNARY = {
    elementwise.Neg: "Neg",
    elementwise.Exp: "Exp",
    elementwise.Log: "Log",
    elementwise.Sqrt: "Sqrt",
    elementwise.Abs: "Abs",
    elementwise.Clone: "Identity",
}


@maps(*_BINARY)
def binary(g, node, x, out):
    return g.op(_BINARY[type(node)], x)


@maps(*_UNARY)
def unary(g, node, x, out):
    return g.op(_UNARY[type(node)], x)


def clamp_bounds(node):
    """(min, max) of a Clamp node, None where unbounded."""
    return node.low, node.high


@maps(elementwise.Clamp)
def clamp(g, node, x, out):
    dtype = out.data.dtype
    bound = [None if b is None else g.const(np.asarray(b, dtype=dtype), "clamp_bound") for b in clamp_bounds(node)]
    return g.op("Clip", [x[0], *bound])


@maps(elementwise.Cast)
def cast(g, node, x, out):
    return g.op("Cast", x, to=tensor_type(out.data.dtype))


# --------------------------------------------------------------------------- shapes

_MERGED = "_flat"  # the suffix of a dynamic axis Flatten merged with others


def reshape(g, x, out_shape):
    """``x`` reshaped to ``out_shape``: Flatten when the result is 2-d and splits the input
    after some axis (the ONNX op computes it at run time, so any axis may be dynamic);
    otherwise Reshape, whose leading dimensions equal to the input's are copied (0) and
    so may be dynamic, and whose others are fixed."""
    in_shape, dyn = g.shapes[x], g.dyn[x]
    out_shape = tuple(int(d) for d in out_shape)
    if len(out_shape) == 2:
        for k in range(1, len(in_shape) + 1):
            if int(np.prod(in_shape[:k])) == out_shape[0] and int(np.prod(in_shape[k:])) == out_shape[1]:
                merged = [{a: s for a, s in dyn.items() if lo <= a < hi} for lo, hi in ((0, k), (k, len(in_shape)))]
                out_dyn = {
                    i: (
                        next(iter(m.values()))
                        if len(m) == 1 and (i, k) in ((0, 1), (1, len(in_shape) - 1))
                        else "_".join(m.values()) + _MERGED
                    )
                    for i, m in enumerate(merged)
                    if m
                }
                return g.note(g.op("Flatten", [x], axis=k), out_shape, out_dyn)
    prefix = 0
    while prefix < min(len(in_shape), len(out_shape)) and in_shape[prefix] == out_shape[prefix]:
        prefix += 1
    moved = sorted(a for a in dyn if a >= prefix)
    if moved == [0] and dyn[0].endswith(_MERGED) and out_shape:
        # the batch, merged by a Flatten with the axes after it (batch-major), split off
        # again: the leading axis is the one the others leave (-1)
        symbol = dyn[0][: -len(_MERGED)] if out_shape[0] == 1 else dyn[0]
        return g.note(g.op("Reshape", [x, g.int64s([-1, *out_shape[1:]], "shape")]), out_shape, {0: symbol})
    if moved:
        raise Unsupported(
            f"reshape of {in_shape} to {out_shape} moves dynamic axis {moved[0]} "
            f"({dyn[moved[0]]!r}); a dynamic axis must stay among the leading dimensions "
            "a reshape keeps (as flatten(x, 1) does)"
        )
    target = [0] * prefix + list(out_shape[prefix:])
    return g.note(
        g.op("Reshape", [x, g.int64s(target, "shape")]), out_shape, {a: s for a, s in dyn.items() if a < prefix}
    )


@maps(shape.Reshape)
def reshape_op(g, node, x, out):
    return reshape(g, x[0], out.shape)


def permutation(node):
    """The axes of a Permute node's input, in the order of its output's."""
    return [int(d) for d in np.argsort(node.inverse)]


@maps(shape.Permute)
def permute(g, node, x, out):
    perm = permutation(node)
    dyn = g.dyn[x[0]]
    return g.note(g.op("Transpose", x, perm=perm), out.shape, {i: dyn[d] for i, d in enumerate(perm) if d in dyn})


@maps(shape.Expand)
def expand(g, node, x, out):
    # ONNX Expand broadcasts both ways: a 1 keeps the input's dimension (dynamic or not)
    in_shape, out_shape = g.shapes[x[0]], tuple(out.shape)
    shift = len(out_shape) - len(in_shape)
    target = [1 if i >= shift and in_shape[i - shift] == d else d for i, d in enumerate(out_shape)]
    return g.op("Expand", [x[0], g.int64s(target, "shape")])


def joined_dim(node):
    """The (non-negative) dimension a Cat or Stack node joins along."""
    return int(node.dim)


@maps(shape.Cat)
def cat(g, node, x, out):
    return g.op("Concat", x, axis=joined_dim(node))


@maps(shape.Stack)
def stack(g, node, x, out):
    dim = joined_dim(node)
    axes = g.int64s([dim], "axes")
    dyn = {}
    for name in x:
        dyn.update({a + (a >= dim): s for a, s in g.dyn[name].items()})
    return g.note(g.op("Concat", [g.op("Unsqueeze", [name, axes]) for name in x], axis=dim), out.shape, dyn)


def index_attributes(node):
    """(whether it indexes with arrays, the index as given to __getitem__) of an Index node."""
    return node.advanced, node.index


@maps(shape.Index)
def index(g, node, x, out):
    """Basic indexing (integers, slices, None, ...) as Slice, then Squeeze and Unsqueeze."""
    advanced, index = index_attributes(node)
    if advanced:
        raise Unsupported("indexing with integer or boolean arrays")
    items = index if isinstance(index, tuple) else (index,)
    in_shape, dyn = g.shapes[x[0]], g.dyn[x[0]]
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if any(not isinstance(i, (int, np.integer, slice)) and i is not None and i is not Ellipsis for i in items):
        raise Unsupported(f"an index of {index!r}")
    expanded = []
    for i in items:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (len(in_shape) - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (len(in_shape) - sum(1 for i in expanded if i is not None)))
    sliced, squeeze, unsqueeze = [], [], []  # sliced: (start, end, axis, step)
    axis = out_axis = 0
    out_dyn = {}
    for i in expanded:
        if i is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        size = in_shape[axis]
        if isinstance(i, slice) and i == slice(None):
            if axis in dyn:
                out_dyn[out_axis] = dyn[axis]
            axis += 1
            out_axis += 1
            continue
        if axis in dyn:
            raise Unsupported(f"indexing dynamic axis {axis} ({dyn[axis]!r}) with {i!r}")
        if isinstance(i, slice):
            start, stop, step = i.indices(size)
            if step < 0 and stop < 0:
                stop = -size - 1  # "before the first element" for a backward slice
            out_axis += 1
        else:
            start = int(i) % size
            stop, step = start + 1, 1
            squeeze.append(axis)
        sliced.append((start, stop, axis, step))
        axis += 1
    y = x[0]
    if sliced:
        starts, ends, axes, steps = zip(*sliced)
        y = g.op(
            "Slice",
            [y, g.int64s(starts, "starts"), g.int64s(ends, "ends"), g.int64s(axes, "axes"), g.int64s(steps, "steps")],
        )
    if squeeze:
        y = g.op("Squeeze", [y, g.int64s(squeeze, "axes")])
    if unsqueeze:
        y = g.op("Unsqueeze", [y, g.int64s(unsqueeze, "axes")])
    if y == x[0]:
        y = g.op("Identity", [y])
    return g.note(y, out.shape, out_dyn)


# --------------------------------------------------------------------------- reductions


def _reduced_dyn(dyn, dims, keepdim):
    kept = [a for a in sorted(dyn) if a not in dims]
    if keepdim:
        return {a: dyn[a] for a in kept}
    return {a - sum(1 for d in dims if d < a): dyn[a] for a in kept}


def reduced_dims(node):
    """(the non-negative dims reduced, keepdim) of a Sum or Mean node."""
    return tuple(node.dims), bool(node.keepdim)


@maps(reduce.Sum, reduce.Mean)
def sum_mean(g, node, x, out):
    op_type = "ReduceSum" if isinstance(node, reduce.Sum) else "ReduceMean"
    dims, keepdim = reduced_dims(node)
    if not dims:  # a 0-d input: nothing to reduce
        return g.op("Identity", x)
    return g.note(g.reduce(op_type, x[0], dims, keepdim), out.shape, _reduced_dyn(g.dyn[x[0]], dims, keepdim))


def _largest(node, data, values, axis):
    """Whether a max/min node took maxima (its forward keeps no flag): its values are the
    maxima of its input (where maxima and minima agree, either answer is right)."""
    return bool(np.array_equal(np.max(data, axis=axis, keepdims=axis is not None), values, equal_nan=True))


@maps(reduce.MaxAll)
def max_all(g, node, x, out):
    data = node.parents[0].data
    largest = _largest(node, data, out.data, None)
    y = g.reduce("ReduceMax" if largest else "ReduceMin", x[0], None, False)
    return g.note(y, (), {})


def max_dim_attributes(node):
    """(the non-negative dim, keepdim) of a MaxDim node (max or min along a dim)."""
    return int(node.dim), bool(node.keepdim)


@maps(reduce.MaxDim)
def max_dim(g, node, x, out):
    dim, keepdim = max_dim_attributes(node)
    data = node.parents[0].data
    values = out.data if keepdim else np.expand_dims(out.data, dim)
    largest = _largest(node, data, values, dim)
    y = g.reduce("ReduceMax" if largest else "ReduceMin", x[0], [dim], keepdim)
    return g.note(y, out.shape, _reduced_dyn(g.dyn[x[0]], (dim,), keepdim))
