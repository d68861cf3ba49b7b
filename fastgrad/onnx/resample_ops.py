"""ONNX forms of F.pad (fastgrad.ops.pad) and F.interpolate (fastgrad.ops.interpolate).

Both forwards keep, per axis, the map from output positions to input positions, not the
arguments they were called with; the mappings find the ONNX form whose own semantics
give exactly that map:

- Pad: for each padded axis, the mode (constant, reflect, edge, wrap) and the (begin,
  end) amounts that reproduce it. Circular padding before opset 19 (no "wrap") is a
  Concat of the input's two ends around it.
- Resize: nearest with coordinate_transformation_mode="asymmetric" and
  nearest_mode="floor" (PyTorch's floor(i * scale)); bilinear with "align_corners", or
  "half_pixel" (PyTorch's (i + 0.5) * scale - 0.5, clamped at 0, which onnxruntime
  clamps too). The output sizes go in as ``sizes`` (the batch and channel dimensions
  from the input's Shape, so a dynamic batch stays dynamic). Where the source positions
  the ONNX formula gives (computed here in float32, as onnxruntime does) differ from
  fastgrad's, as a scale_factor whose reciprocal is not out/in makes them, the
  ``scales`` that reproduce fastgrad's positions and output size are found from the
  positions themselves. Where none does (float32 rounding of i * (1 / scale_factor) can
  floor one exact multiple down and not another), the axes are written as Gathers of the
  exact positions (and, for bilinear, the blend).
"""

import numpy as np

from ..ops import interpolate, pad
from .errors import Unsupported
from .table import maps

# --------------------------------------------------------------------------- Pad


def pad_attributes(node, out):
    """[(axis, source index per output position, -1 where the value fills)] and the fill
    value: kept by the forward, or read from the output where a map is -1 (0 if none)."""
    axis_maps = node.maps
    value = getattr(node, "value", None)
    if value is None:
        value = 0
        for axis, idx in axis_maps:
            filled = np.flatnonzero(np.asarray(idx) < 0)
            if filled.size and out.data.size:
                value = np.take(out.data, filled[:1], axis=axis).reshape(-1)[0]
                break
    return axis_maps, value


def _onnx_pad_index(mode, n, begin, end):
    """The input position ONNX Pad reads for each output position (-1: the constant)."""
    pos = np.arange(-begin, n + end)
    if mode == "constant":
        return np.where((pos >= 0) & (pos < n), pos, -1)
    if mode == "edge":
        return np.clip(pos, 0, n - 1)
    if mode == "wrap":
        return pos % n
    period = 2 * (n - 1)  # reflect: the edge is not repeated
    p = np.abs(pos) % period if period else np.zeros_like(pos)
    return np.where(p < n, p, period - p)


def _pad_form(idx, n):
    """(mode, begin, end) whose ONNX Pad reads ``idx`` along an axis of ``n``."""
    total = len(idx) - n
    modes = ("constant",) if (idx < 0).any() else ("reflect", "edge", "wrap")
    for mode in modes:
        if mode != "constant" and n == 0:
            continue
        for begin in range(total + 1):
            if np.array_equal(_onnx_pad_index(mode, n, begin, total - begin), idx):
                return mode, begin, total - begin
    raise Unsupported(f"a padding map of {len(idx)} positions over {n} that no ONNX Pad mode reproduces")


@maps(pad.Pad)
def pad_op(g, node, x, out):
    axis_maps, value = pad_attributes(node, out)
    y, shape, dyn = x[0], list(g.shapes[x[0]]), g.dyn[x[0]]
    rank = len(shape)
    forms = []
    for axis, idx in axis_maps:
        if axis in dyn:
            raise Unsupported(f"padding dynamic axis {axis} ({dyn[axis]!r})")
        forms.append((axis, *_pad_form(np.asarray(idx), shape[axis])))
        shape[axis] = len(idx)
    if not forms:
        return g.op("Identity", x)
    for mode in dict.fromkeys(form[1] for form in forms):  # one Pad per mode, in order met
        pads = [0] * (2 * rank)
        for axis, m, begin, end in forms:
            if m == mode:
                pads[axis], pads[rank + axis] = begin, end
        if mode == "wrap" and g.opset < 19:
            y = _wrap_by_concat(g, y, forms)
            continue
        fill = g.const(np.asarray(value, dtype=out.data.dtype), "pad_value") if mode == "constant" else None
        y = g.op("Pad", [y, g.int64s(pads, "pads"), fill], mode=mode)
    return y


def _wrap_by_concat(g, y, forms):
    """Circular padding as [last `begin` elements, y, first `end` elements] per axis."""
    for axis, mode, begin, end in forms:
        if mode != "wrap":
            continue
        axes = g.int64s([axis], "axes")
        parts = []
        if begin:
            parts.append(
                g.op("Slice", [y, g.int64s([-begin], "starts"), g.int64s([np.iinfo(np.int64).max], "ends"), axes])
            )
        parts.append(y)
        if end:
            parts.append(g.op("Slice", [y, g.int64s([0], "starts"), g.int64s([end], "ends"), axes]))
        y = g.op("Concat", parts, axis=axis)
    return y


# --------------------------------------------------------------------------- Resize


def nearest_attributes(node):
    """[(axis, source index per output position)] of a nearest interpolation."""
    return node.indices


def linear_attributes(node):
    """[(axis, (low index, high index, weight of the high one))] of a bilinear one."""
    return node.maps


def _sizes_scale(n_in, n_out):
    return np.float32(n_out) / np.float32(n_in)  # onnxruntime's scale from `sizes`


def _scaled_size(n_in, scale):
    """The output size ONNX gives an axis of ``n_in`` for ``scales`` entry ``scale`` (a
    float32), or None where computing it in float32 and in float64 disagree (runtimes and
    ONNX's shape inference differ in that)."""
    scale = np.float32(scale)
    narrow, wide = np.floor(np.float32(n_in) * scale), np.floor(float(n_in) * float(scale))
    return int(narrow) if narrow == wide else None


def _onnx_nearest(n_in, n_out, scale):
    """Resize nearest, asymmetric, floor: floor(i / scale), clamped to the input."""
    pos = np.arange(n_out, dtype=np.float32) / np.float32(scale)
    return np.minimum(np.floor(pos).astype(np.int64), n_in - 1)


def _onnx_linear(n_in, n_out, mode, scale):
    """Resize linear: the source coordinate of each output position, clamped to the input."""
    i = np.arange(n_out, dtype=np.float32)
    if mode == "align_corners":
        src = i * np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.zeros(n_out, np.float32)
    else:
        src = (i + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
    return np.clip(src.astype(np.float64), 0, n_in - 1)


def _nearest_scale(n_in, idx):
    """A ``scales`` entry whose floor(i / scale) is ``idx`` and whose output size is
    len(idx): the middle of the interval every position allows, or None if it is empty."""
    n_out, i = len(idx), np.arange(len(idx), dtype=np.float64)
    low, high = n_out / n_in, (n_out + 1) / n_in  # the output size: low <= s < high
    upper = idx > 0  # i / s >= idx
    if upper.any():
        high = min(high, float(np.min(i[upper] / idx[upper])))
    lower = idx < n_in - 1  # i / s < idx + 1 (unless clamped)
    if lower.any():
        low = max(low, float(np.max(i[lower] / (idx[lower] + 1))))
    return (low + high) / 2 if low < high else None


def _linear_scale(n_in, lo, hi, frac):
    """The ``scales`` entry of half_pixel positions (i + 0.5) / s - 0.5, from the last
    unclamped one, or None."""
    src = _source(lo, hi, frac)
    free = np.flatnonzero((src > 0) & (src < n_in - 1))
    if not free.size:
        return None
    i = free[-1]
    return (i + 0.5) / (src[i] + 0.5)


def _first_fitting(scale, n_in, n_out, reproduces):
    """``scale`` as a float32, or its neighbour above or below (the product with n_in may
    round to either side of n_out), that gives n_out positions which ``reproduces``
    accepts; None if none does."""
    if scale is None:
        return None
    near = np.float32(scale)
    for s in (near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(0))):
        if _scaled_size(n_in, s) == n_out and reproduces(s):
            return float(s)
    return None


def _source(lo, hi, frac):
    return np.where(hi > lo, lo + np.asarray(frac, np.float64), lo)


def _resize(g, y, mode, transform, out_shape, scales=None, **attrs):
    """Resize to ``out_shape``: by ``sizes`` (the batch and channels from the input's
    Shape), or by ``scales`` (1 for the batch and channels) when given."""
    if scales is not None:
        factors = g.const(np.array([1.0, 1.0, *scales], dtype=np.float32), "scales")
        return g.op("Resize", [y, "", factors], mode=mode, coordinate_transformation_mode=transform, **attrs)
    batch_channels = g.op("Slice", [g.op("Shape", [y]), g.int64s([0], "starts"), g.int64s([2], "ends")])
    sizes = g.op("Concat", [batch_channels, g.int64s(out_shape[2:], "spatial_sizes")], axis=0)
    return g.op("Resize", [y, "", "", sizes], mode=mode, coordinate_transformation_mode=transform, **attrs)


def _spatial(g, x, axis_maps):
    dyn = g.dyn[x]
    for axis, _ in axis_maps:
        if axis in dyn:
            raise Unsupported(f"resampling dynamic axis {axis} ({dyn[axis]!r})")
    if [axis for axis, _ in axis_maps] != list(range(2, len(g.shapes[x]))):
        raise Unsupported("an interpolation that leaves a spatial axis out")
    return g.shapes[x]


@maps(interpolate.Nearest)
def nearest(g, node, x, out):
    axis_maps = [(axis, np.asarray(idx)) for axis, idx in nearest_attributes(node)]
    in_shape = _spatial(g, x[0], axis_maps)
    if all(
        np.array_equal(_onnx_nearest(in_shape[a], len(idx), _sizes_scale(in_shape[a], len(idx))), idx)
        for a, idx in axis_maps
    ):
        return _resize(g, x[0], "nearest", "asymmetric", out.shape, nearest_mode="floor")
    scales = [
        _first_fitting(
            _nearest_scale(in_shape[a], idx),
            in_shape[a],
            len(idx),
            lambda s, a=a, idx=idx: np.array_equal(_onnx_nearest(in_shape[a], len(idx), s), idx),
        )
        for a, idx in axis_maps
    ]
    if None not in scales:
        return _resize(g, x[0], "nearest", "asymmetric", out.shape, scales=scales, nearest_mode="floor")
    y = x[0]
    for axis, idx in axis_maps:
        y = g.op("Gather", [y, g.int64s(idx, "source_index")], axis=int(axis))
    return y


def _linear_matches(n_in, lo, hi, frac, transform, scale):
    return np.allclose(_onnx_linear(n_in, len(lo), transform, scale), _source(lo, hi, frac), rtol=0, atol=1e-5)


@maps(interpolate.Linear)
def bilinear(g, node, x, out):
    axis_maps = [(axis, tuple(np.asarray(a) for a in m)) for axis, m in linear_attributes(node)]
    in_shape = _spatial(g, x[0], axis_maps)
    for transform in ("half_pixel", "align_corners"):
        if all(_linear_matches(in_shape[a], *m, transform, _sizes_scale(in_shape[a], len(m[0]))) for a, m in axis_maps):
            return _resize(g, x[0], "linear", transform, out.shape)
    scales = [
        _first_fitting(
            _linear_scale(in_shape[a], *m),
            in_shape[a],
            len(m[0]),
            lambda s, a=a, m=m: _linear_matches(in_shape[a], *m, "half_pixel", s),
        )
        for a, m in axis_maps
    ]
    if None not in scales:
        return _resize(g, x[0], "linear", "half_pixel", out.shape, scales=scales)
    dtype, rank = out.data.dtype, len(in_shape)
    y = x[0]
    for axis, (lo, hi, frac) in axis_maps:
        a = g.op("Gather", [y, g.int64s(lo, "low_index")], axis=int(axis))
        b = g.op("Gather", [y, g.int64s(hi, "high_index")], axis=int(axis))
        w = np.asarray(frac, dtype=dtype).reshape([-1 if d == axis else 1 for d in range(rank)])
        y = g.op("Add", [a, g.op("Mul", [g.op("Sub", [b, a]), g.const(w, "blend")])])
    return y
