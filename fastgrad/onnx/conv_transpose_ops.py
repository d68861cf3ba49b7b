"""ONNX form of conv_transpose2d (fastgrad.ops.conv_variants): ConvTranspose, whose weight
layout (C_in, C_out / groups, kH, kW) is PyTorch's. conv1d and the 1-D pools need no form
of their own: they run as the 2-D ops between an unsqueeze and a squeeze (Reshapes).
"""

from ..ops import conv_variants
from .table import maps


def conv_transpose_attributes(node):
    """(stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups) of a ConvTranspose2d node."""
    return node.params


@maps(conv_variants.ConvTranspose2d)
def conv_transpose2d(g, node, x, out):
    sh, sw, ph, pw, dh, dw, groups = (int(p) for p in conv_transpose_attributes(node))
    (h, w), (kh, kw) = g.shapes[x[0]][2:], g.shapes[x[1]][2:]
    # H_out = (H - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1
    output_padding = [
        int(o - ((i - 1) * s - 2 * p + d * (k - 1) + 1))
        for o, i, s, p, d, k in zip(out.shape[2:], (h, w), (sh, sw), (ph, pw), (dh, dw), (kh, kw))
    ]
    return g.op(
        "ConvTranspose",
        x,
        kernel_shape=[int(kh), int(kw)],
        strides=[sh, sw],
        pads=[ph, pw, ph, pw],
        dilations=[dh, dw],
        group=groups,
        output_padding=output_padding,
    )
