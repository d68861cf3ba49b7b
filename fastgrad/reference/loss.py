"""Loss kernels in pure Python: the twin of ``src_c/_loss.pyx``.

cross_entropy_forward fuses the per-sample loss with the gradient w.r.t. the logits
(softmax minus the smoothed one-hot target, times the class weights), each row shifted
by its maximum so that logits of +-1e4 stay finite. nll_loss, mse_loss and
binary_cross_entropy_with_logits follow the same pattern: per-element results written
into the caller's arrays, sums returned as Python floats. Loops run over Python floats;
``n_threads`` is accepted and ignored.
"""

import math

import numpy as np

from ._checks import check_apart, check_array, check_shape, check_threads

__all__ = [
    "cross_entropy_forward",
    "nll_loss_forward",
    "nll_loss_backward",
    "mse_loss_forward",
    "mse_loss_backward",
    "binary_cross_entropy_with_logits_forward",
]

_INT64 = np.iinfo(np.int64)


# --------------------------------------------------------------------------- validation
# The same checks, in the same order, as the compiled kernels.


def _float_array(kernel, name, a, dtype, shape, output):
    """One float array (of ``dtype`` and ``shape`` unless None); returns its dtype."""
    dtype = check_array(kernel, name, a, None, dtype, output)
    if shape is not None:
        check_shape(kernel, name, a, shape)
    return dtype


def _matrix(kernel, name, a):
    _float_array(kernel, name, a, None, None, False)
    if a.ndim != 2:
        raise ValueError(f"{kernel}: {name} must have 2 dimensions (N, C), got shape {a.shape}")
    return a.dtype


def _targets(kernel, target, n):
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{kernel}: target must be a numpy array, got {type(target).__name__}")
    if target.dtype != np.int64:
        raise TypeError(f"{kernel}: target must hold int64 class indices, got {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"{kernel}: target has shape {target.shape}, expected ({n},)")
    if not target.flags.c_contiguous:
        raise ValueError(f"{kernel}: target must be C-contiguous")


def _weights(kernel, weight, dtype, n_classes):
    if weight is None:
        return None
    _float_array(kernel, "weight", weight, dtype, (n_classes,), False)
    return weight.tolist()


def _ignore(kernel, ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{kernel}: ignore_index must be an integer, got {ignore_index!r}")
    if not _INT64.min <= ignore_index <= _INT64.max:
        raise ValueError(f"{kernel}: ignore_index {ignore_index} does not fit in int64")
    return int(ignore_index)


def _check_targets(kernel, targets, n_classes, ignore_index):
    for i, t in enumerate(targets):
        if t != ignore_index and not 0 <= t < n_classes:
            raise ValueError(
                f"{kernel}: target[{i}] = {t} is out of range for {n_classes} classes "
                f"(expected 0 <= target < {n_classes}, or ignore_index={ignore_index})"
            )


def _number(kernel, name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: {name} must be a number, got {value!r}") from None


def _weight_sum(targets, weights, ignore_index):
    total = 0.0
    for t in targets:
        if t != ignore_index:
            total += weights[t] if weights is not None else 1.0
    return total


def _store(a, values):
    """Write a flat list into a C-contiguous array; return the values as stored (rounded
    to the array's dtype)."""
    flat = a.reshape(-1)
    flat[:] = values
    return flat.tolist()


# --------------------------------------------------------------------------- cross entropy


def _cross_entropy_row(z, t, w, w_total, eps, scale, want_grad):
    """(loss, scale * d(loss)/dz or None) for one row of logits ``z`` and target ``t``.

    loss = (1 - eps) w_t (lse - z_t) + eps / C * sum_c w_c (lse - z_c),  lse = m + log(s)
    """
    C = len(z)
    m = z[0]
    for v in z:
        if v > m:
            m = v
    wt = w[t] if w is not None else 1.0
    e = []
    s = 0.0
    spread = 0.0
    for j in range(C):
        ej = math.exp(z[j] - m)  # exponent <= 0: no overflow
        e.append(ej)
        s += ej
        if eps > 0:
            spread += (w[j] if w is not None else 1.0) * (m - z[j])
    log_s = math.log(s)
    smooth = eps / C
    loss = (1 - eps) * wt * (m - z[t]) + (1 - eps) * wt * log_s + smooth * (spread + w_total * log_s)
    if not want_grad:
        return loss, None
    a = scale * ((1 - eps) * wt + smooth * w_total) / s
    b = scale * smooth
    grad = []
    for j in range(C):
        grad.append(a * e[j] - b * (w[j] if w is not None else 1.0))
    grad[t] -= scale * (1 - eps) * wt
    return loss, grad


def cross_entropy_forward(logits, target, weight, ignore_index, label_smoothing, normalize, losses, grad, n_threads=1):
    """Per-sample cross-entropy losses from logits, fused with their gradient.

    logits: IN, (N, C) float32/float64, C-contiguous.
    target: IN, (N,) int64 class indices in [0, C), or ignore_index.
    weight: IN, (C,) class weights of the logits' dtype, or None (all 1).
    ignore_index: int; samples with this target get loss 0 and gradient 0.
    label_smoothing: float in [0, 1]; the target distribution is
        (1 - label_smoothing) * one_hot + label_smoothing / C (PyTorch's definition).
    normalize: bool; when true the gradient is divided by the total weight (the 'mean'
        reduction; NaN when every target is ignored).
    losses: OUT, (N,) of the logits' dtype, written fresh: each sample's weighted loss.
    grad: OUT, (N, C) of the logits' dtype, written fresh: the gradient of sum(losses)
        w.r.t. logits (divided by the total weight when normalize); or None to skip it.
    Returns (sum of losses, total weight of the non-ignored targets), as Python floats.
    """
    k = "cross_entropy_forward"
    dtype = _matrix(k, "logits", logits)
    N, C = logits.shape
    _targets(k, target, N)
    ignore = _ignore(k, ignore_index)
    eps = _number(k, "label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{k}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    w = _weights(k, weight, dtype, C)
    _float_array(k, "losses", losses, dtype, (N,), True)
    if grad is not None:
        _float_array(k, "grad", grad, dtype, (N, C), True)
    check_threads(k, n_threads)
    check_apart(k, (("losses", losses), ("grad", grad)), (("logits", logits), ("target", target), ("weight", weight)))
    targets = target.tolist()
    _check_targets(k, targets, C, ignore)
    w_total = float(C)
    if w is not None:
        w_total = 0.0
        for v in w:
            w_total += v
    total_weight = _weight_sum(targets, w, ignore)
    scale = 1.0
    if normalize:
        scale = 1.0 / total_weight if total_weight != 0 else math.nan
    row_losses, grad_rows = [], []
    for z, t in zip(logits.tolist(), targets):
        if t == ignore:
            row_losses.append(0.0)
            grad_rows.extend([0.0] * C)
            continue
        loss, g = _cross_entropy_row(z, t, w, w_total, eps, scale, grad is not None)
        row_losses.append(loss)
        if g is not None:
            grad_rows.extend(g)
    stored = _store(losses, row_losses)
    if grad is not None and N * C:
        _store(grad, grad_rows)
    loss_sum = 0.0
    for v in stored:
        loss_sum += v
    return loss_sum, total_weight


# --------------------------------------------------------------------------- nll


def nll_loss_forward(log_probs, target, weight, ignore_index, losses, n_threads=1):
    """Per-sample negative log-likelihood losses: losses[i] = -weight[t] * log_probs[i, t].

    log_probs: IN, (N, C) float32/float64, C-contiguous.
    target: IN, (N,) int64 class indices in [0, C), or ignore_index (loss 0).
    weight: IN, (C,) class weights of the same dtype, or None (all 1).
    losses: OUT, (N,) of the same dtype, written fresh.
    Returns (sum of losses, total weight of the non-ignored targets), as Python floats.
    """
    k = "nll_loss_forward"
    dtype = _matrix(k, "log_probs", log_probs)
    N, C = log_probs.shape
    _targets(k, target, N)
    ignore = _ignore(k, ignore_index)
    w = _weights(k, weight, dtype, C)
    _float_array(k, "losses", losses, dtype, (N,), True)
    check_threads(k, n_threads)
    check_apart(k, (("losses", losses),), (("log_probs", log_probs), ("target", target), ("weight", weight)))
    targets = target.tolist()
    _check_targets(k, targets, C, ignore)
    values = []
    for row, t in zip(log_probs.tolist(), targets):
        if t == ignore:
            values.append(0.0)
        else:
            values.append(-(w[t] if w is not None else 1.0) * row[t])
    stored = _store(losses, values)
    loss_sum = 0.0
    for v in stored:
        loss_sum += v
    return loss_sum, _weight_sum(targets, w, ignore)


def nll_loss_backward(target, weight, ignore_index, grad_losses, grad_input, n_threads=1):
    """grad_input[i, t] = -weight[t] * grad_losses[i] at each sample's target, 0 elsewhere.

    target: IN, (N,) int64 class indices in [0, C), or ignore_index (row left 0).
    weight: IN, (C,) class weights, or None (all 1).
    grad_losses: IN, (N,) float32/float64: the gradient of each sample's loss.
    grad_input: OUT, (N, C) of the same dtype, written fresh.
    """
    k = "nll_loss_backward"
    dtype = _matrix(k, "grad_input", grad_input)
    _float_array(k, "grad_input", grad_input, dtype, None, True)
    N, C = grad_input.shape
    _targets(k, target, N)
    ignore = _ignore(k, ignore_index)
    w = _weights(k, weight, dtype, C)
    _float_array(k, "grad_losses", grad_losses, dtype, (N,), False)
    check_threads(k, n_threads)
    check_apart(
        k, (("grad_input", grad_input),), (("target", target), ("weight", weight), ("grad_losses", grad_losses))
    )
    targets = target.tolist()
    _check_targets(k, targets, C, ignore)
    values = [0.0] * (N * C)
    for i, (t, g) in enumerate(zip(targets, grad_losses.tolist())):
        if t != ignore:
            values[i * C + t] = -(w[t] if w is not None else 1.0) * g
    if N * C:
        _store(grad_input, values)


# --------------------------------------------------------------------------- mse


def mse_loss_forward(input, target, diff, squares, n_threads=1):
    """diff = input - target, squares = diff^2; returns sum(diff^2) as a Python float.

    input, target: IN, float32/float64 of one shape and dtype, C-contiguous.
    diff: OUT, same shape and dtype, written fresh (kept for backward).
    squares: OUT, same shape and dtype, written fresh; or None to skip it.
    """
    k = "mse_loss_forward"
    dtype = _float_array(k, "input", input, None, None, False)
    shape = input.shape
    _float_array(k, "target", target, dtype, shape, False)
    _float_array(k, "diff", diff, dtype, shape, True)
    if squares is not None:
        _float_array(k, "squares", squares, dtype, shape, True)
    check_threads(k, n_threads)
    check_apart(k, (("diff", diff), ("squares", squares)), (("input", input), ("target", target)))
    if input.size == 0:
        return 0.0
    d = []
    for x, y in zip(input.reshape(-1).tolist(), target.reshape(-1).tolist()):
        d.append(x - y)
    d = _store(diff, d)  # rounded to the dtype, as the compiled kernel computes it
    sq = []
    total = 0.0
    for v in d:
        sq.append(v * v)
        total += v * v
    if squares is not None:
        _store(squares, sq)
    return total


def mse_loss_backward(diff, grad_loss, scale, grad_input, n_threads=1):
    """grad_input = 2 * scale * grad_loss * diff.

    diff: IN, the diff written by mse_loss_forward, float32/float64, C-contiguous.
    grad_loss: IN, same dtype; one element (the gradient of a summed or averaged loss)
        or diff's shape (the gradient of each squared error).
    scale: float (1 / numel for the 'mean' reduction, else 1).
    grad_input: OUT, diff's shape and dtype, written fresh.
    """
    k = "mse_loss_backward"
    dtype = _float_array(k, "diff", diff, None, None, False)
    _float_array(k, "grad_loss", grad_loss, dtype, None, False)
    g_scalar = grad_loss.size == 1
    if not g_scalar and grad_loss.shape != diff.shape:
        raise ValueError(
            f"{k}: grad_loss has shape {grad_loss.shape}, expected one element or diff's shape {diff.shape}"
        )
    _float_array(k, "grad_input", grad_input, dtype, diff.shape, True)
    factor = 2.0 * _number(k, "scale", scale)
    check_threads(k, n_threads)
    check_apart(k, (("grad_input", grad_input),), (("diff", diff), ("grad_loss", grad_loss)))
    if diff.size == 0:
        return
    d = diff.reshape(-1).tolist()
    g = grad_loss.reshape(-1).tolist()
    out = []
    if g_scalar:
        c = factor * g[0]
        for v in d:
            out.append(c * v)
    else:
        for gv, v in zip(g, d):
            out.append(factor * gv * v)
    _store(grad_input, out)


# --------------------------------------------------------------------------- bce with logits


def binary_cross_entropy_with_logits_forward(input, target, weight, pos_weight, grad_scale, losses, grad, n_threads=1):
    """Elementwise binary cross-entropy on logits, fused with its gradient.

    input: IN, (R, C) float32/float64 logits, C-contiguous.
    target: IN, (R, C) of the same dtype: probabilities in [0, 1].
    weight: IN, (R, C) of the same dtype (rescales each element), or None.
    pos_weight: IN, (C,) of the same dtype (weight of positive examples per column), or None.
    grad_scale: float multiplying the gradient (1 / numel for the 'mean' reduction).
    losses: OUT, (R, C), written fresh: each element's loss; or None to skip it.
    grad: OUT, (R, C), written fresh: grad_scale * d(loss)/d(input); or None to skip it.
    Returns the sum of all losses as a Python float.

    loss = w * ((1 - y) x + lw * softplus(-x)),  lw = 1 + (pos_weight - 1) y, written as
           w * ((x >= 0 ? (1 - y) x : -pos_weight y x) + lw * log1p(exp(-|x|)))
    so that no two large terms cancel and exp never sees a positive argument.
    grad = w * (lw * sigmoid(x) - pos_weight * y)
    """
    k = "binary_cross_entropy_with_logits_forward"
    dtype = _matrix(k, "input", input)
    shape = input.shape
    R, C = shape
    _float_array(k, "target", target, dtype, shape, False)
    if weight is not None:
        _float_array(k, "weight", weight, dtype, shape, False)
    if pos_weight is not None:
        _float_array(k, "pos_weight", pos_weight, dtype, (C,), False)
    if losses is not None:
        _float_array(k, "losses", losses, dtype, shape, True)
    if grad is not None:
        _float_array(k, "grad", grad, dtype, shape, True)
    scale = _number(k, "grad_scale", grad_scale)
    check_threads(k, n_threads)
    check_apart(
        k,
        (("losses", losses), ("grad", grad)),
        (("input", input), ("target", target), ("weight", weight), ("pos_weight", pos_weight)),
    )
    if R * C == 0:
        return 0.0
    xs = input.reshape(-1).tolist()
    ys = target.reshape(-1).tolist()
    ws = weight.reshape(-1).tolist() if weight is not None else None
    pws = pos_weight.tolist() if pos_weight is not None else None
    loss_values, grad_values = [], []
    total = 0.0
    for i in range(R * C):
        x, y = xs[i], ys[i]
        e = math.exp(-abs(x))
        pw = pws[i % C] if pws is not None else 1.0
        lw = 1.0 + (pw - 1.0) * y
        w = ws[i] if ws is not None else 1.0
        linear = (1.0 - y) * x if x >= 0 else -pw * y * x
        loss = w * (linear + lw * math.log1p(e))
        total += loss
        loss_values.append(loss)
        sig = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
        grad_values.append(scale * w * (lw * sig - pw * y))
    if losses is not None:
        _store(losses, loss_values)
    if grad is not None:
        _store(grad, grad_values)
    return total
