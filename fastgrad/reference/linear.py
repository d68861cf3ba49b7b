"""The linear layer's kernels in pure Python: y = x @ W.T + b (optionally relu'd) and its
three gradients.

Twin of ``src_c/_linear.pyx``: same names, same signatures, same checks, same results up
to rounding (the compiled kernels sum in another order and may fuse multiply-adds).
Each kernel reads its inputs with ``.tolist()``, loops over Python floats, and writes its
output once, fresh. ``n_threads`` is accepted and ignored.
"""

import numpy as np

from ._checks import check_array, check_threads

__all__ = [
    "linear_forward",
    "linear_backward_input",
    "linear_backward_weight",
    "linear_backward_bias",
    "linear_backward",
]


def _sizes(kernel, x, weight):
    """(N, in_features, out_features) of x (N, in_features) and weight (out_features,
    in_features), which must agree."""
    n, k = x.shape
    if weight.shape[1] != k:
        raise ValueError(
            f"{kernel}: x has {k} features (shape {x.shape}), weight expects {weight.shape[1]} (shape {weight.shape})"
        )
    return n, k, weight.shape[0]


def _store(out, rows):
    """Write a list of row lists into ``out`` (the only numpy call: no math)."""
    out[...] = np.array(rows, dtype=out.dtype).reshape(out.shape)


def linear_forward(x, weight, bias, out, apply_relu, n_threads):
    """out = x @ weight.T + bias, then max(0, .) when apply_relu; out written fresh.

    x: IN (N, in_features); weight: IN (out_features, in_features); bias: IN
    (out_features,) or None; out: OUT (N, out_features). One dtype, float32 or float64,
    all C-contiguous. apply_relu: bool (NaN stays NaN, as in PyTorch).
    """
    kn = "linear_forward"
    dt = check_array(kn, "x", x, 2)
    check_array(kn, "weight", weight, 2, dt)
    check_array(kn, "out", out, 2, dt, output=True)
    if bias is not None:
        check_array(kn, "bias", bias, 1, dt)
    check_threads(kn, n_threads)
    n, k, o = _sizes(kn, x, weight)
    if out.shape != (n, o):
        raise ValueError(f"{kn}: out has shape {out.shape}, expected ({n}, {o})")
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"{kn}: bias has shape {bias.shape}, expected ({o},)")
    if out.size == 0:  # nothing to write: never walk an enormous empty dimension
        return
    xs, ws = x.tolist(), weight.tolist()
    bs = bias.tolist() if bias is not None else [0.0] * o
    rows = []
    for xrow in xs:
        row = []
        for j in range(o):
            wrow = ws[j]
            s = 0.0
            for p in range(k):
                s += xrow[p] * wrow[p]
            s += bs[j]
            if apply_relu and s < 0.0:  # NaN compares false: it stays
                s = 0.0
            row.append(s)
        rows.append(row)
    _store(out, rows)


def linear_backward_input(grad_out, weight, grad_x, n_threads):
    """grad_x = grad_out @ weight, written fresh.

    grad_out: IN (N, out_features); weight: IN (out_features, in_features);
    grad_x: OUT (N, in_features). One dtype, all C-contiguous.
    """
    kn = "linear_backward_input"
    dt = check_array(kn, "grad_out", grad_out, 2)
    check_array(kn, "weight", weight, 2, dt)
    check_array(kn, "grad_x", grad_x, 2, dt, output=True)
    check_threads(kn, n_threads)
    n, o = grad_out.shape
    k = weight.shape[1]
    if weight.shape[0] != o:
        raise ValueError(
            f"{kn}: grad_out has {o} features (shape {grad_out.shape}), weight has "
            f"{weight.shape[0]} output features (shape {weight.shape})"
        )
    if grad_x.shape != (n, k):
        raise ValueError(f"{kn}: grad_x has shape {grad_x.shape}, expected ({n}, {k})")
    if grad_x.size == 0:  # nothing to write: never walk an enormous empty dimension
        return
    gs, ws = grad_out.tolist(), weight.tolist()
    rows = []
    for grow in gs:
        row = []
        for p in range(k):
            s = 0.0
            for j in range(o):
                s += grow[j] * ws[j][p]
            row.append(s)
        rows.append(row)
    _store(grad_x, rows)


def linear_backward_weight(x, grad_out, grad_weight, n_threads):
    """grad_weight = grad_out.T @ x, written fresh.

    x: IN (N, in_features); grad_out: IN (N, out_features);
    grad_weight: OUT (out_features, in_features). One dtype, all C-contiguous.
    """
    kn = "linear_backward_weight"
    dt = check_array(kn, "x", x, 2)
    check_array(kn, "grad_out", grad_out, 2, dt)
    check_array(kn, "grad_weight", grad_weight, 2, dt, output=True)
    check_threads(kn, n_threads)
    n, k = x.shape
    o = grad_out.shape[1]
    if grad_out.shape[0] != n:
        raise ValueError(
            f"{kn}: x has {n} rows (shape {x.shape}), grad_out has {grad_out.shape[0]} (shape {grad_out.shape})"
        )
    if grad_weight.shape != (o, k):
        raise ValueError(f"{kn}: grad_weight has shape {grad_weight.shape}, expected ({o}, {k})")
    if grad_weight.size == 0:  # nothing to write: never walk an enormous empty dimension
        return
    xs, gs = x.tolist(), grad_out.tolist()
    rows = []
    for j in range(o):
        row = []
        for p in range(k):
            s = 0.0
            for i in range(n):
                s += gs[i][j] * xs[i][p]
            row.append(s)
        rows.append(row)
    _store(grad_weight, rows)


def linear_backward_bias(grad_out, grad_bias, n_threads):
    """grad_bias = grad_out.sum(axis=0), written fresh (rows added in order).

    grad_out: IN (N, out_features); grad_bias: OUT (out_features,). One dtype.
    """
    kn = "linear_backward_bias"
    dt = check_array(kn, "grad_out", grad_out, 2)
    check_array(kn, "grad_bias", grad_bias, 1, dt, output=True)
    check_threads(kn, n_threads)
    n, o = grad_out.shape
    if grad_bias.shape != (o,):
        raise ValueError(f"{kn}: grad_bias has shape {grad_bias.shape}, expected ({o},)")
    if o == 0:  # nothing to write: never walk an enormous empty dimension
        return
    sums = [0.0] * o
    for grow in grad_out.tolist():
        for j in range(o):
            sums[j] += grow[j]
    _store(grad_bias, sums)


def linear_backward(x, grad_out, relu_out, weight, grad_x, grad_weight, grad_bias, n_threads):
    """All three gradients of a small batch in one pass over the weight: grad_x = g @ weight,
    grad_weight = g.T @ x, grad_bias = g.sum(axis=0), where g is grad_out, zeroed where
    relu_out is not positive when relu_out is given. Each output is written fresh.

    x: IN (N, in_features); grad_out: IN (N, out_features); relu_out: IN (N, out_features)
    or None; weight: IN (out_features, in_features); grad_x: OUT (N, in_features) or None;
    grad_weight: OUT (out_features, in_features) or None; grad_bias: OUT (out_features,)
    or None. One dtype, all C-contiguous; the outputs may not share memory with each other.
    """
    kn = "linear_backward"
    dt = check_array(kn, "x", x, 2)
    check_array(kn, "grad_out", grad_out, 2, dt)
    check_array(kn, "weight", weight, 2, dt)
    if relu_out is not None:
        check_array(kn, "relu_out", relu_out, 2, dt)
    for name, out, ndim in (("grad_x", grad_x, 2), ("grad_weight", grad_weight, 2), ("grad_bias", grad_bias, 1)):
        if out is not None:
            check_array(kn, name, out, ndim, dt, output=True)
    check_threads(kn, n_threads)
    n, k, o = _sizes(kn, x, weight)
    for name, a, shape in (
        ("grad_out", grad_out, (n, o)),
        ("relu_out", relu_out, (n, o)),
        ("grad_x", grad_x, (n, k)),
        ("grad_weight", grad_weight, (o, k)),
        ("grad_bias", grad_bias, (o,)),
    ):
        if a is not None and a.shape != shape:
            raise ValueError(f"{kn}: {name} has shape {a.shape}, expected {shape}")
    outputs = [
        (name, a)
        for name, a in (("grad_x", grad_x), ("grad_weight", grad_weight), ("grad_bias", grad_bias))
        if a is not None
    ]
    for i in range(len(outputs)):
        for j in range(i):
            if np.shares_memory(outputs[i][1], outputs[j][1]):
                raise ValueError(f"{kn}: outputs {outputs[j][0]} and {outputs[i][0]} share memory")
    # everything is read into lists before anything is written: overlaps need no copies
    xs, ws = x.tolist(), weight.tolist()
    gs = grad_out.tolist()
    if relu_out is not None:
        gs = [[g if y > 0 else 0.0 for g, y in zip(grow, yrow)] for grow, yrow in zip(gs, relu_out.tolist())]
    if grad_x is not None and grad_x.size:
        _store(grad_x, [[sum(grow[j] * ws[j][p] for j in range(o)) for p in range(k)] for grow in gs])
    if grad_weight is not None and grad_weight.size:
        _store(grad_weight, [[sum(gs[i][j] * xs[i][p] for i in range(n)) for p in range(k)] for j in range(o)])
    if grad_bias is not None and grad_bias.size:
        _store(grad_bias, [sum(gs[i][j] for i in range(n)) for j in range(o)])
