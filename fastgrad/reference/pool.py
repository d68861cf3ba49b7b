"""2-D pooling kernels in pure Python: max, average and adaptive average, with their
gradients.

Twin of ``src_c/_pool.pyx``: same names, same signatures, same checks, same results
(read the Design note there for PyTorch's window, tie, NaN and divisor rules). Inputs
are read with ``.tolist()``; every output is computed plane by plane over Python floats
and written once, fresh. ``n_threads`` is checked and otherwise ignored.
"""

import math

import numpy as np

from ._checks import check_array, check_disjoint, check_threads

__all__ = [
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward",
]

_PARAM_MAX = 2147483647


# --------------------------------------------------------------------------- checks


def _param(kernel, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{kernel}: {name} must be an integer, got {value!r}")
    if not minimum <= value <= _PARAM_MAX:
        raise ValueError(f"{kernel}: {name} must be in [{minimum}, {_PARAM_MAX}], got {value}")
    return int(value)


def _same_planes(kernel, a_name, a, b_name, b):
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"{kernel}: {a_name} has shape {a.shape} and {b_name} {b.shape}: "
            "their batch and channel sizes (N, C) differ"
        )


def _check_disjoint(kernel, out_name, out, ins):
    for name, a in ins:
        check_disjoint(kernel, out_name, out, name, a)


def _check_divisor(kernel, divisor_override):
    if divisor_override is None:
        return 0
    if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
        raise TypeError(f"{kernel}: divisor_override must be None or an integer, got {divisor_override!r}")
    if divisor_override == 0 or not -_PARAM_MAX <= divisor_override <= _PARAM_MAX:
        raise ValueError(f"{kernel}: divisor_override must be a nonzero integer, got {divisor_override}")
    return int(divisor_override)


def _store(out, values):
    """Write nested lists into ``out`` (the only numpy call: no math)."""
    out[...] = np.array(values, dtype=out.dtype).reshape(out.shape)


# --------------------------------------------------------------------------- windows


def _taps(o, stride, pad, dil, k, size):
    """Input coordinates of window o's taps that fall inside [0, size), in scan order."""
    start = o * stride - pad
    return [start + t * dil for t in range(k) if 0 <= start + t * dil < size]


def _check_max_windows(kernel, size, n_out, k, stride, pad, dil, axis):
    for o in range(n_out):
        if not _taps(o, stride, pad, dil, k, size):
            raise ValueError(
                f"{kernel}: output {axis} {o} (of {n_out}) has a window that covers "
                f"no input position (input {axis} {size}, kernel {k}, stride {stride}, "
                f"padding {pad}, dilation {dil})"
            )


def _avg_window(o, stride, pad, k, size):
    """(lo, hi, padded): input range of window o and its length counting padding, the
    window clipped to the padded input [-pad, size + pad)."""
    start = o * stride - pad
    end = min(start + k, size + pad)
    return max(start, 0), min(end, size), end - start


def _avg_divisor(divisor_override, count_include_pad, hp, wp, inside_h, inside_w):
    if divisor_override:
        return divisor_override
    return hp * wp if count_include_pad else inside_h * inside_w


def _adaptive_range(o, size, n_out):
    return o * size // n_out, -(-(o + 1) * size // n_out)


# --------------------------------------------------------------------------- kernels


def max_pool2d_forward(x, out, indices, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, n_threads):
    """Max over each window; out and indices written fresh.

    x: IN (N, C, H, W); out: OUT (N, C, OH, OW), same dtype; indices: OUT int64, same
    shape as out: h * W + w of each maximum within its input plane (first maximum on
    ties, a NaN wins). Every window must cover at least one input position.
    kernel >= 1, stride >= 1, pad >= 0, dilation >= 1.
    """
    kn = "max_pool2d_forward"
    dt = check_array(kn, "x", x, 4)
    check_array(kn, "out", out, 4, dt, output=True)
    check_array(kn, "indices", indices, 4, np.int64, output=True)
    kh, kw = _param(kn, "kernel_h", kernel_h, 1), _param(kn, "kernel_w", kernel_w, 1)
    sh, sw = _param(kn, "stride_h", stride_h, 1), _param(kn, "stride_w", stride_w, 1)
    ph, pw = _param(kn, "pad_h", pad_h, 0), _param(kn, "pad_w", pad_w, 0)
    dh, dw = _param(kn, "dil_h", dil_h, 1), _param(kn, "dil_w", dil_w, 1)
    _same_planes(kn, "x", x, "out", out)
    if indices.shape != out.shape:
        raise ValueError(f"{kn}: indices has shape {indices.shape}, expected out's {out.shape}")
    _check_disjoint(kn, "out", out, (("x", x),))
    _check_disjoint(kn, "indices", indices, (("x", x), ("out", out)))
    check_threads(kn, n_threads)
    H, W = x.shape[2:]
    OH, OW = out.shape[2:]
    if out.size == 0:
        return
    _check_max_windows(kn, H, OH, kh, sh, ph, dh, "row")
    _check_max_windows(kn, W, OW, kw, sw, pw, dw, "column")
    rows_of = [_taps(oh, sh, ph, dh, kh, H) for oh in range(OH)]
    cols_of = [_taps(ow, sw, pw, dw, kw, W) for ow in range(OW)]
    values, where = [], []
    for image in x.tolist():
        for plane in image:
            for rows in rows_of:
                for cols in cols_of:
                    best, best_i = -math.inf, rows[0] * W + cols[0]
                    for ih in rows:
                        line = plane[ih]
                        for iw in cols:
                            v = line[iw]
                            if v > best or v != v:  # greater, or NaN: ties keep the first
                                best, best_i = v, ih * W + iw
                    values.append(best)
                    where.append(best_i)
    _store(out, values)
    _store(indices, where)


def max_pool2d_backward(grad_out, indices, grad_x, n_threads):
    """grad_x = the gradient routed to each window's maximum; written fresh.

    grad_out: IN (N, C, OH, OW); indices: IN int64, same shape, each in [0, H*W);
    grad_x: OUT (N, C, H, W), same dtype as grad_out. Several outputs may route to one
    input (overlapping windows): their gradients add up.
    """
    kn = "max_pool2d_backward"
    dt = check_array(kn, "grad_out", grad_out, 4)
    check_array(kn, "indices", indices, 4, np.int64)
    check_array(kn, "grad_x", grad_x, 4, dt, output=True)
    if indices.shape != grad_out.shape:
        raise ValueError(f"{kn}: indices has shape {indices.shape}, expected grad_out's {grad_out.shape}")
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out), ("indices", indices)))
    check_threads(kn, n_threads)
    N, C, H, W = grad_x.shape
    n_in = H * W
    flat_idx = indices.reshape(-1).tolist()
    for i, j in enumerate(flat_idx):
        if not 0 <= j < n_in:
            raise ValueError(
                f"{kn}: indices[{np.unravel_index(i, grad_out.shape)}] = {j} "
                f"is outside the input plane of {n_in} elements ({H} x {W})"
            )
    n_out = grad_out.shape[2] * grad_out.shape[3]
    grads = grad_out.reshape(-1).tolist()
    result = []
    for p in range(N * C):
        plane = [0.0] * n_in
        for i in range(p * n_out, (p + 1) * n_out):
            plane[flat_idx[i]] += grads[i]
        result.append(plane)
    _store(grad_x, result)


def avg_pool2d_forward(
    x, out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad, divisor_override, n_threads
):
    """Mean over each window (PyTorch's rule for the divisor); out written fresh.

    x: IN (N, C, H, W); out: OUT (N, C, OH, OW), same dtype. count_include_pad: bool.
    divisor_override: None or a nonzero integer. kernel >= 1, stride >= 1, pad >= 0.
    """
    kn = "avg_pool2d_forward"
    dt = check_array(kn, "x", x, 4)
    check_array(kn, "out", out, 4, dt, output=True)
    kh, kw = _param(kn, "kernel_h", kernel_h, 1), _param(kn, "kernel_w", kernel_w, 1)
    sh, sw = _param(kn, "stride_h", stride_h, 1), _param(kn, "stride_w", stride_w, 1)
    ph, pw = _param(kn, "pad_h", pad_h, 0), _param(kn, "pad_w", pad_w, 0)
    div = _check_divisor(kn, divisor_override)
    _same_planes(kn, "x", x, "out", out)
    _check_disjoint(kn, "out", out, (("x", x),))
    check_threads(kn, n_threads)
    H, W = x.shape[2:]
    OH, OW = out.shape[2:]
    rows_of = [_avg_window(oh, sh, ph, kh, H) for oh in range(OH)]
    cols_of = [_avg_window(ow, sw, pw, kw, W) for ow in range(OW)]
    values = []
    for image in x.tolist():
        for plane in image:
            for h0, h1, hp in rows_of:
                for w0, w1, wp in cols_of:
                    if h0 >= h1 or w0 >= w1:
                        values.append(0.0)
                        continue
                    s = 0.0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            s += plane[ih][iw]
                    values.append(s / _avg_divisor(div, count_include_pad, hp, wp, h1 - h0, w1 - w0))
    _store(out, values)


def avg_pool2d_backward(
    grad_out,
    grad_x,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    count_include_pad,
    divisor_override,
    n_threads,
):
    """grad_x = each output's gradient / its divisor, spread over its window; fresh.

    grad_out: IN (N, C, OH, OW); grad_x: OUT (N, C, H, W), same dtype. The other
    arguments are those of avg_pool2d_forward.
    """
    kn = "avg_pool2d_backward"
    dt = check_array(kn, "grad_out", grad_out, 4)
    check_array(kn, "grad_x", grad_x, 4, dt, output=True)
    kh, kw = _param(kn, "kernel_h", kernel_h, 1), _param(kn, "kernel_w", kernel_w, 1)
    sh, sw = _param(kn, "stride_h", stride_h, 1), _param(kn, "stride_w", stride_w, 1)
    ph, pw = _param(kn, "pad_h", pad_h, 0), _param(kn, "pad_w", pad_w, 0)
    div = _check_divisor(kn, divisor_override)
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out),))
    check_threads(kn, n_threads)
    H, W = grad_x.shape[2:]
    OH, OW = grad_out.shape[2:]
    if grad_x.size == 0:  # nothing to write (and no rows of an empty plane to build)
        return
    rows_of = [_avg_window(oh, sh, ph, kh, H) for oh in range(OH)]
    cols_of = [_avg_window(ow, sw, pw, kw, W) for ow in range(OW)]
    result = []
    for image in grad_out.tolist():
        for gplane in image:
            plane = [[0.0] * W for _ in range(H)]
            for oh, (h0, h1, hp) in enumerate(rows_of):
                for ow, (w0, w1, wp) in enumerate(cols_of):
                    if h0 >= h1 or w0 >= w1:
                        continue
                    share = gplane[oh][ow] / _avg_divisor(div, count_include_pad, hp, wp, h1 - h0, w1 - w0)
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            plane[ih][iw] += share
            result.append(plane)
    _store(grad_x, result)


def adaptive_avg_pool2d_forward(x, out, n_threads):
    """Mean over PyTorch's adaptive regions for out's (OH, OW); out written fresh.

    x: IN (N, C, H, W) with H, W >= 1 (unless out is empty); out: OUT (N, C, OH, OW).
    """
    kn = "adaptive_avg_pool2d_forward"
    dt = check_array(kn, "x", x, 4)
    check_array(kn, "out", out, 4, dt, output=True)
    _same_planes(kn, "x", x, "out", out)
    _check_disjoint(kn, "out", out, (("x", x),))
    check_threads(kn, n_threads)
    H, W = x.shape[2:]
    OH, OW = out.shape[2:]
    if out.size and (H == 0 or W == 0):
        raise ValueError(f"{kn}: x has shape {x.shape}: an empty plane cannot be averaged into {OH} x {OW}")
    rows_of = [_adaptive_range(oh, H, OH) for oh in range(OH)]
    cols_of = [_adaptive_range(ow, W, OW) for ow in range(OW)]
    values = []
    for image in x.tolist():
        for plane in image:
            for h0, h1 in rows_of:
                for w0, w1 in cols_of:
                    s = 0.0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            s += plane[ih][iw]
                    values.append(s / (h1 - h0) / (w1 - w0))
    _store(out, values)


def adaptive_avg_pool2d_backward(grad_out, grad_x, n_threads):
    """grad_x = each output's gradient / its region's size, spread over it; fresh.

    grad_out: IN (N, C, OH, OW); grad_x: OUT (N, C, H, W), same dtype, H, W >= 1
    (unless grad_out is empty).
    """
    kn = "adaptive_avg_pool2d_backward"
    dt = check_array(kn, "grad_out", grad_out, 4)
    check_array(kn, "grad_x", grad_x, 4, dt, output=True)
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out),))
    check_threads(kn, n_threads)
    H, W = grad_x.shape[2:]
    OH, OW = grad_out.shape[2:]
    if grad_out.size and (H == 0 or W == 0):
        raise ValueError(f"{kn}: grad_x has shape {grad_x.shape}: an empty plane has no {OH} x {OW} regions")
    if grad_x.size == 0:  # nothing to write (and no rows of an empty plane to build)
        return
    rows_of = [_adaptive_range(oh, H, OH) for oh in range(OH)]
    cols_of = [_adaptive_range(ow, W, OW) for ow in range(OW)]
    result = []
    for image in grad_out.tolist():
        for gplane in image:
            plane = [[0.0] * W for _ in range(H)]
            for oh, (h0, h1) in enumerate(rows_of):
                for ow, (w0, w1) in enumerate(cols_of):
                    share = gplane[oh][ow] / (h1 - h0) / (w1 - w0)
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            plane[ih][iw] += share
            result.append(plane)
    _store(grad_x, result)
