"""2-D convolution kernels in pure Python: the twin of ``src_c/_conv.pyx``.

NCHW layout, weight (C_out, C_in/groups, kH, kW). Output position (oy, ox) of output
channel oc reads input rows ``oy*stride_h - pad_top + ky*dil_h`` and columns
``ox*stride_w - pad_left + kx*dil_w`` of the channels of its group; positions outside
the image count as zeros. The output size is the shape of the array passed in (the
caller computes it; 'same' padding with an even kernel extent pads one more row or
column at the bottom or right, which is why only the top and left padding are passed).

Each kernel is the plain loop of its definition, over Python floats (``tolist``): one
multiply-add per (output element, weight element) pair. The ``workspace`` arguments
exist so the signatures match the compiled kernels; they are accepted and ignored, as
is ``n_threads``.
"""

import numpy as np

from ._checks import check_array, check_disjoint, check_elements, check_threads

__all__ = [
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_backward_bias",
    "conv2d_workspace_size",
]

_MAX_PARAM = 1 << 31


# --------------------------------------------------------------------------- validation


def _dtype_of(kernel, name, a):
    return check_array(kernel, name, a)


def _check_array(kernel, name, a, ndim, dtype, out):
    check_array(kernel, name, a, ndim, dtype, out)
    return a.shape


def _check_disjoint(kernel, out_name, out, ins):
    for name, a in ins:
        check_disjoint(kernel, out_name, out, name, a)


_INT_ARG_LIMIT = 1 << 62


def _check_int(kernel, name, v):
    """An int (or numpy integer) of moderate size, else TypeError / ValueError."""
    if not isinstance(v, (int, np.integer)):
        raise TypeError(f"{kernel}: {name} must be an integer, got {v!r}")
    if not -_INT_ARG_LIMIT <= v <= _INT_ARG_LIMIT:
        raise ValueError(f"{kernel}: {name} is out of range, got {v}")


MAX_ELEMENTS = 1 << 31  # per array: a convolution over larger ones is refused


def _check_elements(kernel, name, shape):
    check_elements(kernel, name, shape, MAX_ELEMENTS)


def _out_size(n, pads, extent, stride):
    return 0 if n + pads < extent else (n + pads - extent) // stride + 1


def _geometry(kernel, x_name, xs, ws, y_name, ys, sh, sw, pt, pl, dh, dw, groups):
    """The sizes of the convolution, after checking every relation the loops rely on."""
    for name, v in (
        ("stride_h", sh),
        ("stride_w", sw),
        ("pad_top", pt),
        ("pad_left", pl),
        ("dil_h", dh),
        ("dil_w", dw),
        ("groups", groups),
    ):
        _check_int(kernel, name, v)
    if sh < 1 or sw < 1:
        raise ValueError(f"{kernel}: stride must be >= 1, got ({sh}, {sw})")
    if dh < 1 or dw < 1:
        raise ValueError(f"{kernel}: dilation must be >= 1, got ({dh}, {dw})")
    if pt < 0 or pl < 0:
        raise ValueError(f"{kernel}: padding must be >= 0, got ({pt}, {pl})")
    if groups < 1:
        raise ValueError(f"{kernel}: groups must be >= 1, got {groups}")
    if max(sh, sw, dh, dw, pt, pl, groups) > _MAX_PARAM:
        raise ValueError(f"{kernel}: stride, padding, dilation or groups above {_MAX_PARAM}")
    if max(tuple(xs) + tuple(ws) + tuple(ys)) > _MAX_PARAM:
        raise ValueError(f"{kernel}: a dimension above {_MAX_PARAM}: {x_name} {xs}, weight {ws}, {y_name} {ys}")
    N, C, H, W = xs
    Co, Cg, kh, kw = ws
    Ho, Wo = ys[2], ys[3]
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{kernel}: {x_name} needs at least one channel and a non-empty image, got shape {xs}")
    if Co < 1 or Cg < 1 or kh < 1 or kw < 1:
        raise ValueError(f"{kernel}: weight must have no empty dimension, got shape {ws}")
    if C % groups or Co % groups:
        raise ValueError(
            f"{kernel}: groups={groups} must divide both the input channels ({C}) and the output channels ({Co})"
        )
    if Cg * groups != C:
        raise ValueError(
            f"{kernel}: weight {ws} expects {Cg * groups} input channels "
            f"({Cg} per group x {groups} groups), {x_name} has {C}"
        )
    if ys[0] != N or ys[1] != Co:
        raise ValueError(
            f"{kernel}: {y_name} has shape {ys}, expected ({N}, {Co}, H_out, W_out) for {x_name} {xs} and weight {ws}"
        )
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h0, h1 = _out_size(H, 2 * pt, eh, sh), _out_size(H, 2 * pt + 1, eh, sh)
    w0, w1 = _out_size(W, 2 * pl, ew, sw), _out_size(W, 2 * pl + 1, ew, sw)
    if Ho < 1 or Ho not in (h0, h1):
        raise ValueError(
            f"{kernel}: {y_name} height {Ho} does not fit: H={H}, "
            f"pad_top={pt}, kernel {kh}, dilation {dh}, stride {sh} give "
            f"{h0} (or {h1} with one more row of bottom padding)"
            + (" and the kernel must fit in the padded input" if h1 < 1 else "")
        )
    if Wo < 1 or Wo not in (w0, w1):
        raise ValueError(
            f"{kernel}: {y_name} width {Wo} does not fit: W={W}, "
            f"pad_left={pl}, kernel {kw}, dilation {dw}, stride {sw} give "
            f"{w0} (or {w1} with one more column of right padding)"
            + (" and the kernel must fit in the padded input" if w1 < 1 else "")
        )
    return N, C, H, W, Co, Cg, kh, kw, Ho, Wo


def _check_workspace(kernel, workspace, dtype):
    if workspace is not None:
        _check_array(kernel, "workspace", workspace, 1, dtype, True)


# --------------------------------------------------------------------------- kernels


def conv2d_workspace_size(
    kernel, x_shape, weight_shape, out_shape, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, n_threads
):
    """Elements of workspace that conv2d_<kernel> needs: none for the reference kernels."""
    kinds = ("backward_input", "backward_weight", "forward")
    if kernel not in kinds:
        raise ValueError(f"conv2d_workspace_size: kernel must be one of {list(kinds)}, got {kernel!r}")
    for name, s in (("x_shape", x_shape), ("weight_shape", weight_shape), ("out_shape", out_shape)):
        if len(s) != 4 or any(int(v) < 0 for v in s):
            raise ValueError(f"conv2d_workspace_size: {name} must be 4 non-negative sizes, got {s}")
    _geometry(
        "conv2d_workspace_size",
        "x",
        tuple(x_shape),
        tuple(weight_shape),
        "out",
        tuple(out_shape),
        stride_h,
        stride_w,
        pad_top,
        pad_left,
        dil_h,
        dil_w,
        groups,
    )
    for name, s in (("x_shape", x_shape), ("weight_shape", weight_shape), ("out_shape", out_shape)):
        _check_elements("conv2d_workspace_size", name, tuple(s))
    check_threads("conv2d_workspace_size", n_threads)
    return 0


def conv2d_forward(
    x, weight, bias, out, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, apply_relu, workspace, n_threads
):
    """out = conv2d(x, weight) + bias, then max(0, .) when apply_relu; written fresh.

    x: IN (N, C_in, H, W); weight: IN (C_out, C_in/groups, kH, kW); bias: IN (C_out,) or
    None; out: OUT (N, C_out, H_out, W_out). workspace: ignored (None or a 1-D array).
    """
    k = "conv2d_forward"
    dt = _dtype_of(k, "x", x)
    xs = _check_array(k, "x", x, 4, dt, False)
    wsh = _check_array(k, "weight", weight, 4, dt, False)
    ys = _check_array(k, "out", out, 4, dt, True)
    if bias is not None:
        bs = _check_array(k, "bias", bias, 1, dt, False)
        if bs[0] != wsh[0]:
            raise ValueError(f"{k}: bias has shape {bs}, expected ({wsh[0]},)")
    N, C, H, W, Co, Cg, kh, kw, Ho, Wo = _geometry(
        k, "x", xs, wsh, "out", ys, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups
    )
    _check_disjoint(k, "out", out, (("x", x), ("weight", weight), ("bias", bias)))
    _check_workspace(k, workspace, dt)
    check_threads(k, n_threads)
    M = Co // groups
    xl, wl = x.tolist(), weight.tolist()
    bl = bias.tolist() if bias is not None else [0.0] * Co
    result = []
    for n in range(N):
        image = []
        for oc in range(Co):
            first = (oc // M) * Cg
            plane = []
            for oy in range(Ho):
                row = []
                for ox in range(Wo):
                    s = 0.0
                    for c in range(Cg):
                        xc, wc = xl[n][first + c], wl[oc][c]
                        for ky in range(kh):
                            iy = oy * stride_h - pad_top + ky * dil_h
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * stride_w - pad_left + kx * dil_w
                                if 0 <= ix < W:
                                    s += wc[ky][kx] * xc[iy][ix]
                    s += bl[oc]
                    if apply_relu and s < 0.0:  # NaN stays NaN
                        s = 0.0
                    row.append(s)
                plane.append(row)
            image.append(plane)
        result.append(image)
    if N:
        out[...] = result


def conv2d_backward_input(
    grad_out, weight, grad_x, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, workspace, n_threads
):
    """grad_x = d(sum(grad_out * conv2d(x, weight))) / dx, written fresh.

    grad_out: IN (N, C_out, H_out, W_out); weight: IN (C_out, C_in/groups, kH, kW);
    grad_x: OUT (N, C_in, H, W). workspace: ignored.
    """
    k = "conv2d_backward_input"
    dt = _dtype_of(k, "grad_out", grad_out)
    ys = _check_array(k, "grad_out", grad_out, 4, dt, False)
    wsh = _check_array(k, "weight", weight, 4, dt, False)
    xs = _check_array(k, "grad_x", grad_x, 4, dt, True)
    N, C, H, W, Co, Cg, kh, kw, Ho, Wo = _geometry(
        k, "grad_x", xs, wsh, "grad_out", ys, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups
    )
    _check_disjoint(k, "grad_x", grad_x, (("grad_out", grad_out), ("weight", weight)))
    _check_workspace(k, workspace, dt)
    check_threads(k, n_threads)
    M = Co // groups
    gl, wl = grad_out.tolist(), weight.tolist()
    gx = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for n in range(N):
        for oc in range(Co):
            first = (oc // M) * Cg
            for oy in range(Ho):
                for ox in range(Wo):
                    g = gl[n][oc][oy][ox]
                    for c in range(Cg):
                        gc, wc = gx[n][first + c], wl[oc][c]
                        for ky in range(kh):
                            iy = oy * stride_h - pad_top + ky * dil_h
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * stride_w - pad_left + kx * dil_w
                                if 0 <= ix < W:
                                    gc[iy][ix] += wc[ky][kx] * g
    if N:
        grad_x[...] = gx


def conv2d_backward_weight(
    x, grad_out, grad_weight, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, workspace, n_threads
):
    """grad_weight = d(sum(grad_out * conv2d(x, weight))) / dweight, written fresh.

    x: IN (N, C_in, H, W); grad_out: IN (N, C_out, H_out, W_out);
    grad_weight: OUT (C_out, C_in/groups, kH, kW). workspace: ignored.
    """
    k = "conv2d_backward_weight"
    dt = _dtype_of(k, "x", x)
    xs = _check_array(k, "x", x, 4, dt, False)
    ys = _check_array(k, "grad_out", grad_out, 4, dt, False)
    wsh = _check_array(k, "grad_weight", grad_weight, 4, dt, True)
    N, C, H, W, Co, Cg, kh, kw, Ho, Wo = _geometry(
        k, "x", xs, wsh, "grad_out", ys, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups
    )
    _check_disjoint(k, "grad_weight", grad_weight, (("x", x), ("grad_out", grad_out)))
    _check_workspace(k, workspace, dt)
    check_threads(k, n_threads)
    M = Co // groups
    xl, gl = x.tolist(), grad_out.tolist()
    gw = [[[[0.0] * kw for _ in range(kh)] for _ in range(Cg)] for _ in range(Co)]
    for n in range(N):
        for oc in range(Co):
            first = (oc // M) * Cg
            for oy in range(Ho):
                for ox in range(Wo):
                    g = gl[n][oc][oy][ox]
                    for c in range(Cg):
                        xc, wc = xl[n][first + c], gw[oc][c]
                        for ky in range(kh):
                            iy = oy * stride_h - pad_top + ky * dil_h
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * stride_w - pad_left + kx * dil_w
                                if 0 <= ix < W:
                                    wc[ky][kx] += xc[iy][ix] * g
    grad_weight[...] = gw


def conv2d_backward_bias(grad_out, grad_bias, n_threads):
    """grad_bias[c] = sum of grad_out[:, c], written fresh.

    grad_out: IN (N, C_out, H_out, W_out); grad_bias: OUT (C_out,).
    """
    k = "conv2d_backward_bias"
    dt = _dtype_of(k, "grad_out", grad_out)
    ys = _check_array(k, "grad_out", grad_out, 4, dt, False)
    bs = _check_array(k, "grad_bias", grad_bias, 1, dt, True)
    if bs[0] != ys[1]:
        raise ValueError(f"{k}: grad_bias has shape {bs}, expected ({ys[1]},) for grad_out {ys}")
    check_threads(k, n_threads)
    _check_disjoint(k, "grad_bias", grad_bias, (("grad_out", grad_out),))
    gl = grad_out.tolist()
    sums = [0.0] * ys[1]
    for image in gl:
        for c, plane in enumerate(image):
            s = sums[c]
            for row in plane:
                for v in row:
                    s += v
            sums[c] = s
    grad_bias[...] = sums
