"""Batch normalization kernels in pure Python; twin of ``src_c/_norm.pyx``.

The input is seen as (N, C, S): N samples, C channels, S values per channel and sample.
Each channel is normalized over its N * S values. Statistics are sums of Python floats
(doubles); the variance is shifted, corrected: mean0 = the first sample's mean (the
whole channel's where the sums below are not finite), then over d = x - mean0:
mean = mean0 + sum(d) / m, var = max(sum(d^2) / m - (sum(d) / m)^2, 0) (a constant channel
gets its value as mean and a variance of exactly 0; see src_c/_norm.pyx).
"""

import math

from ._checks import check_apart, check_array, check_number, check_shape, check_threads

__all__ = ["batch_norm_forward_train", "batch_norm_forward_eval", "batch_norm_backward"]


class _Checker:
    """Checks a kernel's arrays against the first one's dtype and (N, C, S) shape."""

    def __init__(self, kernel, name, x):
        self.kernel = kernel
        self.dtype = check_array(kernel, name, x, 3)
        self.N, self.C, self.S = x.shape

    def full(self, name, a, output):
        check_array(self.kernel, name, a, None, self.dtype, output)
        check_shape(self.kernel, name, a, (self.N, self.C, self.S))

    def channel(self, name, a, output, optional):
        if a is None:
            if optional:
                return
            raise TypeError(f"{self.kernel}: {name} is required, got None")
        check_array(self.kernel, name, a, None, self.dtype, output)
        check_shape(self.kernel, name, a, (self.C,))


def _inv_sqrt(v):
    """1 / sqrt(v) as the C expression gives it: inf at 0, NaN below 0 or at NaN."""
    if not v >= 0:
        return math.nan
    root = math.sqrt(v)
    return 1.0 / root if root else math.inf


def _values(a):
    return None if a is None else a.reshape(-1).tolist()


def _store(dst, values):
    if dst is not None:
        dst.reshape(-1)[:] = values


def _dev_sums(xs, N, C, S, c, mean):
    """sum((x - mean)^2) and sum(x - mean) over channel c."""
    total = sum_dev = 0.0
    for n in range(N):
        base = (n * C + c) * S
        for s in range(base, base + S):
            d = xs[s] - mean
            sum_dev += d
            total += d * d
    return total, sum_dev


def _affine(xs, out, N, C, S, c, mean, scale, shift, relu):
    for n in range(N):
        base = (n * C + c) * S
        for s in range(base, base + S):
            v = (xs[s] - mean) * scale + shift
            out[s] = (0.0 if v <= 0 else v) if relu else v  # relu_forward's max(v, 0)


def batch_norm_forward_train(
    x, weight, bias, running_mean, running_var, momentum, eps, out, save_mean, save_invstd, n_threads=1, relu=False
):
    """Normalize each channel by its batch statistics; update the running ones.

    Same contract as the compiled kernel (see src_c/_norm.pyx).
    """
    kernel = "batch_norm_forward_train"
    check = _Checker(kernel, "x", x)
    check.full("out", out, True)
    check.channel("weight", weight, False, True)
    check.channel("bias", bias, False, True)
    check.channel("running_mean", running_mean, True, True)
    check.channel("running_var", running_var, True, True)
    check.channel("save_mean", save_mean, True, False)
    check.channel("save_invstd", save_invstd, True, False)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{kernel}: running_mean and running_var must both be given or both be None")
    momentum = check_number(kernel, "momentum", momentum, nonnegative=True)
    eps = check_number(kernel, "eps", eps, nonnegative=True)
    check_threads(kernel, n_threads)
    check_apart(
        kernel,
        [
            ("out", out),
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("save_mean", save_mean),
            ("save_invstd", save_invstd),
        ],
        [("x", x), ("weight", weight), ("bias", bias)],
        in_place=[("out", "x")],
    )
    N, C, S = check.N, check.C, check.S
    m = N * S
    if C > 0 and m < 1:
        raise ValueError(f"{kernel}: no values per channel (input shape {x.shape}): batch statistics need at least one")
    if C > 0 and running_mean is not None and m < 2:
        raise ValueError(
            f"{kernel}: one value per channel (input shape {x.shape}): the unbiased "
            "variance for the running statistics needs at least two"
        )
    if C == 0:
        return
    xs = _values(x)
    ws, bs = _values(weight), _values(bias)
    rm, rv = _values(running_mean), _values(running_var)
    means, invstds = [0.0] * C, [0.0] * C
    ys = [0.0] * len(xs)
    for c in range(C):
        # the shift: the first sample's mean; the whole channel's where that leaves the
        # deviations' sum not finite (inf or NaN in the channel)
        mean = sum(xs[c * S : (c + 1) * S]) / S
        total, sum_dev = _dev_sums(xs, N, C, S, c, mean)
        if not math.isfinite(sum_dev / m):
            total = 0.0
            for n in range(N):
                base = (n * C + c) * S
                for s in range(base, base + S):
                    total += xs[s]
            mean = total / m
            total, sum_dev = _dev_sums(xs, N, C, S, c, mean)
        shift_mean = sum_dev / m
        if math.isfinite(shift_mean):  # not when the channel holds inf or NaN
            mean = mean + shift_mean
            total = total - sum_dev * shift_mean  # squared deviations from the corrected mean
            if total < 0:
                total = 0.0
        invstd = _inv_sqrt(total / m + eps)
        means[c], invstds[c] = mean, invstd
        if rm is not None:
            rm[c] = (1 - momentum) * rm[c] + momentum * mean
            rv[c] = (1 - momentum) * rv[c] + momentum * (total / (m - 1))
        w = ws[c] if ws is not None else 1.0
        b = bs[c] if bs is not None else 0.0
        _affine(xs, ys, N, C, S, c, mean, w * invstd, b, bool(relu))
    _store(out, ys)
    _store(save_mean, means)
    _store(save_invstd, invstds)
    _store(running_mean, rm)
    _store(running_var, rv)


def batch_norm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, save_invstd, n_threads=1, relu=False):
    """Normalize each channel by the running statistics.

    Same contract as the compiled kernel (see src_c/_norm.pyx).
    """
    kernel = "batch_norm_forward_eval"
    check = _Checker(kernel, "x", x)
    check.full("out", out, True)
    check.channel("weight", weight, False, True)
    check.channel("bias", bias, False, True)
    check.channel("running_mean", running_mean, False, False)
    check.channel("running_var", running_var, False, False)
    check.channel("save_invstd", save_invstd, True, False)
    eps = check_number(kernel, "eps", eps, nonnegative=True)
    check_threads(kernel, n_threads)
    check_apart(
        kernel,
        [("out", out), ("save_invstd", save_invstd)],
        [("x", x), ("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)],
        in_place=[("out", "x")],
    )
    N, C, S = check.N, check.C, check.S
    if C == 0:
        return
    xs = _values(x)
    ws, bs = _values(weight), _values(bias)
    rm, rv = _values(running_mean), _values(running_var)
    invstds = [0.0] * C
    ys = [0.0] * len(xs)
    for c in range(C):
        invstd = _inv_sqrt(rv[c] + eps)
        invstds[c] = invstd
        w = ws[c] if ws is not None else 1.0
        b = bs[c] if bs is not None else 0.0
        _affine(xs, ys, N, C, S, c, rm[c], w * invstd, b, bool(relu))
    _store(out, ys)
    _store(save_invstd, invstds)


def batch_norm_backward(
    grad_out,
    x,
    weight,
    save_mean,
    save_invstd,
    use_batch_stats,
    grad_input,
    grad_weight,
    grad_bias,
    n_threads=1,
    relu_out=None,
):
    """Gradients of batch normalization for the input, weight and bias.

    Same contract as the compiled kernel (see src_c/_norm.pyx).
    """
    kernel = "batch_norm_backward"
    check = _Checker(kernel, "grad_out", grad_out)
    check.full("x", x, False)
    check.channel("weight", weight, False, True)
    check.channel("save_mean", save_mean, False, False)
    check.channel("save_invstd", save_invstd, False, False)
    if grad_input is not None:
        check.full("grad_input", grad_input, True)
    check.channel("grad_weight", grad_weight, True, True)
    check.channel("grad_bias", grad_bias, True, True)
    if relu_out is not None:
        check.full("relu_out", relu_out, False)
    batch_stats = bool(use_batch_stats)
    check_threads(kernel, n_threads)
    check_apart(
        kernel,
        [("grad_input", grad_input), ("grad_weight", grad_weight), ("grad_bias", grad_bias)],
        [
            ("grad_out", grad_out),
            ("x", x),
            ("weight", weight),
            ("save_mean", save_mean),
            ("save_invstd", save_invstd),
            ("relu_out", relu_out),
        ],
        in_place=[("grad_input", "grad_out"), ("grad_input", "x")],
    )
    N, C, S = check.N, check.C, check.S
    if C == 0:
        return
    m = N * S
    gs, xs, ws = _values(grad_out), _values(x), _values(weight)
    if relu_out is not None:  # the fused ReLU's backward: the gradient where its output is > 0
        gs = [g if y > 0 else 0.0 for g, y in zip(gs, _values(relu_out))]
    means, invstds = _values(save_mean), _values(save_invstd)
    gws, gbs = [0.0] * C, [0.0] * C
    dxs = [0.0] * len(gs)
    for c in range(C):
        mean, invstd = means[c], invstds[c]
        sum_g = dot = 0.0
        for n in range(N):
            base = (n * C + c) * S
            for s in range(base, base + S):
                sum_g += gs[s]
                dot += gs[s] * (xs[s] - mean)
        gbs[c], gws[c] = sum_g, dot * invstd
        scale = invstd * (ws[c] if ws is not None else 1.0)
        if batch_stats and m > 0:
            # dx = scale * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))
            mean_g, k = sum_g / m, dot * invstd * invstd / m
        else:  # constant statistics: a per-channel scale
            mean_g = k = 0.0
        for n in range(N):
            base = (n * C + c) * S
            for s in range(base, base + S):
                dxs[s] = (gs[s] - mean_g - (xs[s] - mean) * k) * scale
    _store(grad_input, dxs)
    _store(grad_weight, gws)
    _store(grad_bias, gbs)
