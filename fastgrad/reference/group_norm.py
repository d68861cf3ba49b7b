"""Layer and group normalization in pure Python: the twin of ``src_c/_group_norm.pyx``.

Both normalize groups of contiguous elements by their own mean and biased variance:
``layer_norm_*`` sees x as (R, K), one group per row, with an affine weight and bias per
column (the normalized shape, flattened); ``group_norm_*`` sees x as (N, C, S) with C
split into G groups of C/G channels, one group per (n, g) of (C/G) * S elements, and an
affine weight and bias per channel. Statistics are sums in double (mean first, then the
squared deviations: two passes); the output is (x - mean) * (rstd * weight) + bias;
``mean`` and ``rstd`` = 1 / sqrt(var + eps) are saved
for backward. Backward writes grad_input fresh and, when given, grad_weight and grad_bias
fresh. ``n_threads`` is accepted and ignored.
"""

import math

import numpy as np

from ._checks import check_apart, check_array, check_like, check_number, check_shape, check_threads

__all__ = ["layer_norm_forward", "layer_norm_backward", "group_norm_forward", "group_norm_backward"]


def _groups(kernel, x, num_groups):
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{kernel}: num_groups must be an integer, got {num_groups!r}")
    c = x.shape[1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{kernel}: num_groups={num_groups} must be >= 1 and divide the {c} channels of x")
    return int(num_groups)


def _check_sized(kernel, dtype, arrays, shape, output, optional):
    """Arrays ((name, array) pairs; None allowed when ``optional``) of ``dtype`` and
    ``shape``: the affine parameters and their gradients, the saved statistics."""
    for name, a in arrays:
        if a is None and optional:
            continue
        check_array(kernel, name, a, None, dtype, output)
        check_shape(kernel, name, a, shape)


def _check_forward(k, dtype, x, weight, bias, out, mean, rstd, param_shape, stats_shape):
    """A forward call's arrays after x (checked before, of ``dtype``): the affine
    parameters (of param_shape, or None), out like x, the statistics (stats_shape), and no
    output sharing memory with another argument (the compiled loops read inputs after
    writing outputs: statistics, then the affine map)."""
    _check_sized(k, dtype, (("weight", weight), ("bias", bias)), param_shape, False, True)
    check_array(k, "out", out, None, dtype, output=True)
    check_like(k, "out", out, "x", x)
    _check_sized(k, dtype, (("mean", mean), ("rstd", rstd)), stats_shape, True, False)
    check_apart(k, (("out", out), ("mean", mean), ("rstd", rstd)), (("x", x), ("weight", weight), ("bias", bias)))


def _check_backward(
    k, dtype, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, param_shape, stats_shape
):
    """A backward call's arrays after x, as _check_forward's: grad_out and grad_input like
    x, the parameter gradients (of param_shape, or None); no output sharing memory with
    another argument (gradients, then sums)."""
    check_array(k, "grad_out", grad_out, None, dtype)
    check_like(k, "grad_out", grad_out, "x", x)
    _check_sized(k, dtype, (("weight", weight),), param_shape, False, True)
    _check_sized(k, dtype, (("mean", mean), ("rstd", rstd)), stats_shape, False, False)
    check_array(k, "grad_input", grad_input, None, dtype, output=True)
    check_like(k, "grad_input", grad_input, "x", x)
    _check_sized(k, dtype, (("grad_weight", grad_weight), ("grad_bias", grad_bias)), param_shape, True, True)
    check_apart(
        k,
        (("grad_input", grad_input), ("grad_weight", grad_weight), ("grad_bias", grad_bias)),
        (("x", x), ("grad_out", grad_out), ("weight", weight), ("mean", mean), ("rstd", rstd)),
    )


def _normalize(xs, lo, hi, eps):
    k = hi - lo
    total = 0.0
    for i in range(lo, hi):
        total += xs[i]
    mean = total / k if k else 0.0
    total = 0.0
    for i in range(lo, hi):
        total += (xs[i] - mean) * (xs[i] - mean)
    var = total / k if k else 0.0
    return mean, 1.0 / math.sqrt(var + eps) if var + eps > 0 else math.inf


def _norm_forward(xs, n_groups, group_size, param_of, w, b, eps):
    """Normalize each group; param_of(i) is the affine index of element i."""
    out, means, rstds = [0.0] * len(xs), [], []
    for gidx in range(n_groups):
        lo = gidx * group_size
        mean, rstd = _normalize(xs, lo, lo + group_size, eps)
        means.append(mean)
        rstds.append(rstd)
        for i in range(lo, lo + group_size):
            p = param_of(i)
            y = (xs[i] - mean) * (rstd * w[p] if w is not None else rstd)
            if b is not None:
                y += b[p]
            out[i] = y
    return out, means, rstds


def _norm_backward(xs, gs, means, rstds, n_groups, group_size, param_of, w, n_params):
    gi = [0.0] * len(xs)
    gw, gb = [0.0] * n_params, [0.0] * n_params
    if group_size == 0:
        return gi, gw, gb
    for gidx in range(n_groups):
        lo, hi = gidx * group_size, (gidx + 1) * group_size
        mean, rstd = means[gidx], rstds[gidx]
        sum_d = sum_dx = 0.0
        for i in range(lo, hi):
            p = param_of(i)
            xhat = (xs[i] - mean) * rstd
            d = gs[i] * (w[p] if w is not None else 1.0)
            sum_d += d
            sum_dx += d * xhat
            gw[p] += gs[i] * xhat
            gb[p] += gs[i]
        mean_d, mean_dx = sum_d / group_size, sum_dx / group_size
        for i in range(lo, hi):
            p = param_of(i)
            xhat = (xs[i] - mean) * rstd
            d = gs[i] * (w[p] if w is not None else 1.0)
            gi[i] = rstd * (d - mean_d - xhat * mean_dx)
    return gi, gw, gb


def _store(a, values):
    if a is not None:
        a.reshape(-1)[:] = values


# --------------------------------------------------------------------------- layer norm


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd, n_threads=1):
    """out[r, k] = (x[r, k] - mean[r]) * rstd[r] * weight[k] + bias[k].

    x: IN, (R, K) float32/float64, C-contiguous. weight, bias: IN, (K,) or None.
    out: OUT, like x, fresh. mean, rstd: OUT, (R,), fresh.
    """
    k = "layer_norm_forward"
    dtype = check_array(k, "x", x, 2)
    rows, width = x.shape
    _check_forward(k, dtype, x, weight, bias, out, mean, rstd, (width,), (rows,))
    e = check_number(k, "eps", eps, nonnegative=True)
    check_threads(k, n_threads)
    w = weight.tolist() if weight is not None else None
    b = bias.tolist() if bias is not None else None
    y, m, r = _norm_forward(x.reshape(-1).tolist(), rows, width, lambda i: i % width if width else 0, w, b, e)
    _store(out, y)
    _store(mean, m)
    _store(rstd, r)


def layer_norm_backward(x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, n_threads=1):
    """Gradients of layer_norm_forward: grad_input = rstd * (d - mean(d) - xhat * mean(d * xhat))
    per row, with d = grad_out * weight and xhat the normalized x; grad_weight[k] = sum over
    rows of grad_out * xhat, grad_bias[k] = sum of grad_out.

    x, grad_out: IN, (R, K). weight: IN, (K,) or None. mean, rstd: IN, (R,), from forward.
    grad_input: OUT, like x, fresh. grad_weight, grad_bias: OUT, (K,) or None, fresh.
    """
    k = "layer_norm_backward"
    dtype = check_array(k, "x", x, 2)
    rows, width = x.shape
    _check_backward(k, dtype, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, (width,), (rows,))
    check_threads(k, n_threads)
    w = weight.tolist() if weight is not None else None
    gi, gw, gb = _norm_backward(
        x.reshape(-1).tolist(),
        grad_out.reshape(-1).tolist(),
        mean.tolist(),
        rstd.tolist(),
        rows,
        width,
        lambda i: i % width,
        w,
        width,
    )
    _store(grad_input, gi)
    _store(grad_weight, gw)
    _store(grad_bias, gb)


# --------------------------------------------------------------------------- group norm


def group_norm_forward(x, weight, bias, num_groups, eps, out, mean, rstd, n_threads=1):
    """out[n, c, s] = (x - mean[n, g]) * rstd[n, g] * weight[c] + bias[c], g = c // (C / G).

    x: IN, (N, C, S) float32/float64, C-contiguous. weight, bias: IN, (C,) or None.
    out: OUT, like x, fresh. mean, rstd: OUT, (N, G), fresh.
    """
    k = "group_norm_forward"
    dtype = check_array(k, "x", x, 3)
    n, c, s = x.shape
    g = _groups(k, x, num_groups)
    _check_forward(k, dtype, x, weight, bias, out, mean, rstd, (c,), (n, g))
    e = check_number(k, "eps", eps, nonnegative=True)
    check_threads(k, n_threads)
    w = weight.tolist() if weight is not None else None
    b = bias.tolist() if bias is not None else None
    y, m, r = _norm_forward(x.reshape(-1).tolist(), n * g, (c // g) * s, lambda i: (i // s) % c if s else 0, w, b, e)
    _store(out, y)
    _store(mean, m)
    _store(rstd, r)


def group_norm_backward(x, grad_out, weight, mean, rstd, num_groups, grad_input, grad_weight, grad_bias, n_threads=1):
    """Gradients of group_norm_forward, as layer_norm_backward's per group of (C/G) * S
    elements, the weight and bias gradients summed per channel over N and S.

    x, grad_out: IN, (N, C, S). weight: IN, (C,) or None. mean, rstd: IN, (N, G).
    grad_input: OUT, like x, fresh. grad_weight, grad_bias: OUT, (C,) or None, fresh.
    """
    k = "group_norm_backward"
    dtype = check_array(k, "x", x, 3)
    n, c, s = x.shape
    g = _groups(k, x, num_groups)
    _check_backward(k, dtype, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, (c,), (n, g))
    check_threads(k, n_threads)
    w = weight.tolist() if weight is not None else None
    gi, gw, gb = _norm_backward(
        x.reshape(-1).tolist(),
        grad_out.reshape(-1).tolist(),
        mean.reshape(-1).tolist(),
        rstd.reshape(-1).tolist(),
        n * g,
        (c // g) * s,
        lambda i: (i // s) % c,
        w,
        c,
    )
    _store(grad_input, gi)
    _store(grad_weight, gw)
    _store(grad_bias, gb)
