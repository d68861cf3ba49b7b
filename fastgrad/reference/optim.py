"""The in-place parameter updates of fastgrad.optim, in pure Python.

Twin of ``src_c/_optim.pyx``: same kernels, same signatures, same arithmetic. Each
kernel takes lists of arrays (one entry per parameter, per role) and updates the
params and state buffers in place, element by element, with PyTorch's single-tensor
formulas in PyTorch's order of operations.

The compiled kernels compute float32 arrays in float32. To give the same bits, every
operation here is done on Python floats and then rounded to the array's precision
(``_rounder``): for +, -, *, / and sqrt, rounding the double result to float32 gives
the correctly rounded float32 result, which is what the C code computes. Scalars
(lr, betas, bias corrections) are combined in double first and rounded once, as in
the compiled kernels. n_threads is accepted and ignored.
"""

import math
import struct

import numpy as np

from ._checks import check_threads

__all__ = ["sgd_step", "adam_step", "rmsprop_step"]

_F32 = struct.Struct("f")


def _round_f32(x):
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # finite, but rounds past float32's largest value
        return math.copysign(math.inf, x)


def _keep(x):
    return x


def _rounder(dtype):
    return _round_f32 if dtype == np.float32 else _keep


def _div(a, b):
    """a / b with IEEE results where Python raises (division by zero)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _sqrt(x):
    return math.nan if x < 0 else math.sqrt(x)


def _lerp(r, start, end, w, one_minus_w, small_w):
    """PyTorch's lerp: start + w * (end - start) when |w| < 0.5, else end - (end - start) * (1 - w)."""
    if small_w:
        return r(start + r(w * r(end - start)))
    return r(end - r(r(end - start) * one_minus_w))


# --------------------------------------------------------------------------- validation


def _gather(kernel, names, seqs, used):
    """Check the arrays of every used role as the compiled kernel does; return the lists.

    Role 0 is the params (it sets the dtype and shapes), role 1 the grads (read only);
    every other role is written. Unused roles come back as None.
    """
    lists = []
    for name, seq, use in zip(names, seqs, used):
        if not use:
            lists.append(None)
            continue
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{kernel}: {name} must be a list or tuple of numpy arrays, got {type(seq).__name__}")
        lists.append(list(seq))
    count = len(lists[0])
    for r in range(1, len(lists)):
        if lists[r] is not None and len(lists[r]) != count:
            raise ValueError(f"{kernel}: got {count} {names[0]} but {len(lists[r])} {names[r]}")
    dtype = None
    for i in range(count):
        p = None
        for r, arrays in enumerate(lists):
            if arrays is None:
                continue
            a = arrays[i]
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{kernel}: {names[r]}[{i}] must be a numpy array, got {type(a).__name__}")
            if r == 0:
                p = a
                if dtype is None:
                    dtype = a.dtype
                    if dtype not in (np.float32, np.float64):
                        raise TypeError(f"{kernel}: {names[0]}[0] must be float32 or float64, got {a.dtype}")
            if a.dtype != dtype:
                raise TypeError(
                    f"{kernel}: {names[r]}[{i}] has dtype {a.dtype}, but {names[0]}[0] has "
                    f"{dtype}; all arrays of one call must share one dtype"
                )
            if r > 0 and a.shape != p.shape:
                raise ValueError(
                    f"{kernel}: {names[r]}[{i}] has shape {a.shape}, but {names[0]}[{i}] has shape {p.shape}"
                )
            if not a.flags.c_contiguous:
                raise ValueError(f"{kernel}: {names[r]}[{i}] must be C-contiguous")
            if r != 1 and not a.flags.writeable:
                raise ValueError(f"{kernel}: {names[r]}[{i}] is read-only, but the update writes it")
    return lists, (dtype if dtype is not None else np.dtype(np.float32))


def _real(kernel, name, value):
    """A hyperparameter as a Python float (NaN and inf pass: the update then propagates them)."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{kernel}: {name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: {name} must be a real number, got {type(value).__name__}") from None


def _pow(x, y):
    """x ** y with C's pow results where Python raises or goes complex."""
    try:
        r = x**y
    except OverflowError:
        odd = y == int(y) and int(y) % 2 == 1
        return -math.inf if (x < 0 and odd) else math.inf
    except ZeroDivisionError:
        return math.inf
    return math.nan if isinstance(r, complex) else r


def _values(a):
    return a.reshape(-1).tolist() if a is not None else None


def _store(a, values):
    if a is not None:
        a.reshape(-1)[:] = values


# --------------------------------------------------------------------------- SGD


def sgd_step(
    params, grads, momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step, n_threads
):
    """One SGD step over every tensor of a group, in place (PyTorch's SGD arithmetic).

    params:           IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:            IN, list of arrays, each of its param's shape and dtype.
    momentum_buffers: IN/OUT, list like params when momentum != 0 (ignored, may be empty,
                      when momentum == 0). With first_step, every buffer is overwritten
                      with the (decayed, maximize-signed) gradient, as PyTorch's first step.
    Per element: g = +-grad (+ weight_decay * p); buf = momentum * buf + (1 - dampening) * g
    (buf = g on the first step); g = g + momentum * buf (nesterov) or buf; p = p - lr * g.
    """
    k = "sgd_step"
    check_threads(k, n_threads)
    lr, momentum = _real(k, "lr", lr), _real(k, "momentum", momentum)
    dampening, weight_decay = _real(k, "dampening", dampening), _real(k, "weight_decay", weight_decay)
    use_momentum = momentum != 0
    (ps, gs, bs), dtype = _gather(
        "sgd_step",
        ("params", "grads", "momentum_buffers"),
        (params, grads, momentum_buffers),
        (True, True, use_momentum),
    )
    r = _rounder(dtype)
    neg_lr, mom = r(-lr), r(momentum)
    omd, wd = r(1.0 - dampening), r(weight_decay)
    has_wd = weight_decay != 0
    for i in range(len(ps)):
        p, g = _values(ps[i]), _values(gs[i])
        buf = _values(bs[i]) if use_momentum else None
        for j in range(len(p)):
            gj = -g[j] if maximize else g[j]
            if has_wd:
                gj = r(gj + r(wd * p[j]))
            if use_momentum:
                if first_step:
                    bj = gj
                else:
                    bj = r(r(buf[j] * mom) + r(omd * gj))
                buf[j] = bj
                gj = r(gj + r(mom * bj)) if nesterov else bj
            p[j] = r(p[j] + r(neg_lr * gj))
        _store(ps[i], p)
        if use_momentum:
            _store(bs[i], buf)


# --------------------------------------------------------------------------- Adam / AdamW


def adam_step(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    step,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    decoupled_weight_decay,
    n_threads,
):
    """One Adam (or AdamW, decoupled_weight_decay=True) step over a group, in place.

    params:          IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:           IN, list of arrays, each of its param's shape and dtype.
    exp_avgs:        IN/OUT, first moments, like params.
    exp_avg_sqs:     IN/OUT, second moments, like params.
    max_exp_avg_sqs: IN/OUT with amsgrad, like params (ignored, may be empty, without).
    step:            the step count of every tensor of the call, already incremented (>= 1).
    Per element (PyTorch's order): p *= 1 - lr*wd (AdamW) or g += wd * p (Adam);
    m = lerp(m, g, 1 - beta1); v = v * beta2 + (1 - beta2) * g * g; vmax = max(vmax, v);
    p += -(lr / (1 - beta1**step)) * m / (sqrt(v or vmax) / sqrt(1 - beta2**step) + eps).
    """
    k = "adam_step"
    check_threads(k, n_threads)
    if step < 1:
        raise ValueError(f"adam_step: step must be >= 1 (the count after this update), got {step}")
    lr, beta1, beta2 = _real(k, "lr", lr), _real(k, "beta1", beta1), _real(k, "beta2", beta2)
    eps, weight_decay = _real(k, "eps", eps), _real(k, "weight_decay", weight_decay)
    (ps, gs, ms, vs, vmaxs), dtype = _gather(
        "adam_step",
        ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
        (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs),
        (True, True, True, True, amsgrad),
    )
    r = _rounder(dtype)
    fstep = float(step)
    neg_ss = r(-_div(lr, 1.0 - _pow(beta1, fstep)))
    bc2s = r(_pow(1.0 - _pow(beta2, fstep), 0.5))
    w1 = r(1.0 - beta1)
    omw1 = r(1.0 - w1)
    small_w1 = abs(w1) < 0.5
    b2, omb2, eps_, wd = r(beta2), r(1.0 - beta2), r(eps), r(weight_decay)
    decay = r(1.0 - lr * weight_decay)
    has_wd = weight_decay != 0
    decoupled = has_wd and decoupled_weight_decay
    l2 = has_wd and not decoupled_weight_decay
    for i in range(len(ps)):
        p, g, m, v = _values(ps[i]), _values(gs[i]), _values(ms[i]), _values(vs[i])
        vmax = _values(vmaxs[i]) if amsgrad else None
        for j in range(len(p)):
            gj = -g[j] if maximize else g[j]
            pj = p[j]
            if decoupled:
                pj = r(pj * decay)
            elif l2:
                gj = r(gj + r(wd * pj))
            mj = _lerp(r, m[j], gj, w1, omw1, small_w1)
            vj = r(r(v[j] * b2) + r(r(omb2 * gj) * gj))
            m[j] = mj
            v[j] = vj
            if amsgrad:
                mx = vmax[j]
                if vj > mx or vj != vj:  # torch.maximum: a NaN on either side wins
                    mx = vj
                vmax[j] = mx
                vj = mx
            denom = r(r(_div(r(_sqrt(vj)), bc2s)) + eps_)
            p[j] = r(pj + r(_div(r(neg_ss * mj), denom)))
        _store(ps[i], p)
        _store(ms[i], m)
        _store(vs[i], v)
        if amsgrad:
            _store(vmaxs[i], vmax)


# --------------------------------------------------------------------------- RMSprop


def rmsprop_step(
    params,
    grads,
    square_avgs,
    grad_avgs,
    momentum_buffers,
    lr,
    alpha,
    eps,
    weight_decay,
    momentum,
    centered,
    maximize,
    n_threads,
):
    """One RMSprop step over every tensor of a group, in place (PyTorch's RMSprop arithmetic).

    params:           IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:            IN, list of arrays, each of its param's shape and dtype.
    square_avgs:      IN/OUT, like params.
    grad_avgs:        IN/OUT when centered, like params (ignored, may be empty, otherwise).
    momentum_buffers: IN/OUT when momentum > 0, like params (ignored, may be empty, otherwise).
    Per element: g = +-grad (+ weight_decay * p); s = alpha * s + (1 - alpha) * g * g;
    centered: a = lerp(a, g, 1 - alpha), avg = sqrt(s - a * a), else avg = sqrt(s); avg += eps;
    momentum: buf = momentum * buf + g / avg, p -= lr * buf; else p -= lr * g / avg.
    """
    k = "rmsprop_step"
    check_threads(k, n_threads)
    lr, alpha, eps = _real(k, "lr", lr), _real(k, "alpha", alpha), _real(k, "eps", eps)
    weight_decay, momentum = _real(k, "weight_decay", weight_decay), _real(k, "momentum", momentum)
    use_momentum = momentum > 0
    (ps, gs, sqs, gavgs, bufs), dtype = _gather(
        "rmsprop_step",
        ("params", "grads", "square_avgs", "grad_avgs", "momentum_buffers"),
        (params, grads, square_avgs, grad_avgs, momentum_buffers),
        (True, True, True, centered, use_momentum),
    )
    r = _rounder(dtype)
    neg_lr, a_, oma = r(-lr), r(alpha), r(1.0 - alpha)
    omoma = r(1.0 - oma)
    small_oma = abs(oma) < 0.5
    eps_, wd, mom = r(eps), r(weight_decay), r(momentum)
    has_wd = weight_decay != 0
    for i in range(len(ps)):
        p, g, sq = _values(ps[i]), _values(gs[i]), _values(sqs[i])
        gavg = _values(gavgs[i]) if centered else None
        buf = _values(bufs[i]) if use_momentum else None
        for j in range(len(p)):
            gj = -g[j] if maximize else g[j]
            if has_wd:
                gj = r(gj + r(wd * p[j]))
            sj = r(r(sq[j] * a_) + r(r(oma * gj) * gj))
            sq[j] = sj
            if centered:
                aj = _lerp(r, gavg[j], gj, oma, omoma, small_oma)
                gavg[j] = aj
                avg = r(_sqrt(r(sj + r(-aj * aj))))
            else:
                avg = r(_sqrt(sj))
            avg = r(avg + eps_)
            if use_momentum:
                bj = r(r(buf[j] * mom) + r(_div(gj, avg)))
                buf[j] = bj
                p[j] = r(p[j] + r(neg_lr * bj))
            else:
                p[j] = r(p[j] + r(_div(r(neg_lr * gj), avg)))
        _store(ps[i], p)
        _store(sqs[i], sq)
        if centered:
            _store(gavgs[i], gavg)
        if use_momentum:
            _store(bufs[i], buf)


# --------------------------------------------------------------------------- Adadelta

__all__ += ["adadelta_step", "adagrad_step"]


def adadelta_step(params, grads, square_avgs, acc_deltas, lr, rho, eps, weight_decay, maximize, n_threads):
    """One Adadelta step over every tensor of a group, in place (PyTorch's Adadelta arithmetic).

    params:      IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:       IN, list of arrays, each of its param's shape and dtype.
    square_avgs: IN/OUT, like params.
    acc_deltas:  IN/OUT, like params.
    Per element: g = +-grad (+ weight_decay * p); s = rho * s + (1 - rho) * g * g;
    delta = sqrt(acc + eps) / sqrt(s + eps) * g; acc = rho * acc + (1 - rho) * delta * delta;
    p -= lr * delta.
    """
    k = "adadelta_step"
    check_threads(k, n_threads)
    lr, rho, eps = _real(k, "lr", lr), _real(k, "rho", rho), _real(k, "eps", eps)
    weight_decay = _real(k, "weight_decay", weight_decay)
    (ps, gs, sqs, accs), dtype = _gather(
        k,
        ("params", "grads", "square_avgs", "acc_deltas"),
        (params, grads, square_avgs, acc_deltas),
        (True, True, True, True),
    )
    r = _rounder(dtype)
    neg_lr, rho_, omr, eps_, wd = r(-lr), r(rho), r(1.0 - rho), r(eps), r(weight_decay)
    has_wd = weight_decay != 0
    for i in range(len(ps)):
        p, g, sq, acc = _values(ps[i]), _values(gs[i]), _values(sqs[i]), _values(accs[i])
        for j in range(len(p)):
            gj = -g[j] if maximize else g[j]
            if has_wd:
                gj = r(gj + r(wd * p[j]))
            sj = r(r(sq[j] * rho_) + r(r(omr * gj) * gj))
            sq[j] = sj
            std = r(_sqrt(r(sj + eps_)))
            delta = r(_sqrt(r(acc[j] + eps_)))
            delta = r(r(_div(delta, std)) * gj)
            acc[j] = r(r(acc[j] * rho_) + r(r(omr * delta) * delta))
            p[j] = r(p[j] + r(neg_lr * delta))
        _store(ps[i], p)
        _store(sqs[i], sq)
        _store(accs[i], acc)


# --------------------------------------------------------------------------- Adagrad


def adagrad_step(params, grads, state_sums, step, lr, lr_decay, eps, weight_decay, maximize, n_threads):
    """One Adagrad step over every tensor of a group, in place (PyTorch's Adagrad arithmetic).

    params:     IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:      IN, list of arrays, each of its param's shape and dtype.
    state_sums: IN/OUT, like params.
    step:       the step count of every tensor of the call, already incremented (>= 1).
    Per element: g = +-grad (+ weight_decay * p); s += g * g;
    p += -clr * g / (sqrt(s) + eps), with clr = lr / (1 + (step - 1) * lr_decay) in double.
    """
    k = "adagrad_step"
    check_threads(k, n_threads)
    if step < 1:
        raise ValueError(f"adagrad_step: step must be >= 1 (the count after this update), got {step}")
    lr, lr_decay = _real(k, "lr", lr), _real(k, "lr_decay", lr_decay)
    eps, weight_decay = _real(k, "eps", eps), _real(k, "weight_decay", weight_decay)
    (ps, gs, sums), dtype = _gather(
        k, ("params", "grads", "state_sums"), (params, grads, state_sums), (True, True, True)
    )
    r = _rounder(dtype)
    neg_clr = r(-_div(lr, 1.0 + (float(step) - 1.0) * lr_decay))
    eps_, wd = r(eps), r(weight_decay)
    has_wd = weight_decay != 0
    for i in range(len(ps)):
        p, g, s = _values(ps[i]), _values(gs[i]), _values(sums[i])
        for j in range(len(p)):
            gj = -g[j] if maximize else g[j]
            if has_wd:
                gj = r(gj + r(wd * p[j]))
            sj = r(s[j] + r(gj * gj))
            s[j] = sj
            std = r(r(_sqrt(sj)) + eps_)
            p[j] = r(p[j] + r(_div(r(neg_clr * gj), std)))
        _store(ps[i], p)
        _store(sums[i], s)
