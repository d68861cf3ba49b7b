"""ONNX export: ``fastgrad.onnx.export(model, args, "model.onnx", ...)``, with
torch.onnx.export's arguments, writes a model that onnxruntime (or any ONNX runtime) runs.
Needs the optional ``onnx`` package (``pip install "fastgrad[onnx]"``).

How it works
------------
1. ``record.py`` runs one eval-mode forward with gradients enabled, so that every op
   leaves its autograd node (a ``fastgrad.autograd.Function``: its type, what its forward
   kept, its inputs), and notes which module made each node (through
   ``nn.module._forward_observers``). Nothing is changed in the ops to export them.
2. ``exporter.py`` walks the nodes in order and looks each one's class up in the table
   (``table.MAPPINGS``); parameters and buffers become initializers under their
   ``state_dict`` names, other constants (say, the 2 of ``x * 2``) initializers too.
3. The graph is built with ``onnx.helper`` (``graph.py``), checked with
   ``onnx.checker.check_model`` and written atomically (``fastgrad.io.atomic_write``):
   an op without a mapping raises UnsupportedOperatorError, naming the op and the module
   path, before anything is written.
4. The forward is recorded a second time on other input values: a constant that changes
   with them was computed from the input outside the graph (``detach()``, ``.data``, a
   comparison, numpy) and is refused rather than frozen into the file, and so is a
   forward whose ops depend on the input's values (Python control flow).

The mapped ops (opsets 13 and up; 17 by default)
------------------------------------------------
``nn_ops.py``: Conv2d -> Conv (stride, padding incl. 'same', dilation, groups; a fused
ReLU adds Relu), Linear -> Gemm (2-d input) or MatMul + Add, MaxPool2d -> MaxPool,
AvgPool2d -> AveragePool (ceil_mode, count_include_pad; divisor_override as a window sum
and Div), AdaptiveAvgPool2d -> GlobalAveragePool / AveragePool / two MatMuls (uneven
regions), BatchNorm (eval) -> BatchNormalization, ReLU/Sigmoid/Tanh/LeakyReLU,
Softmax/LogSoftmax. Dropout in eval mode
makes no node (it is the identity).
``tensor_ops.py``: Add/Sub/Mul/Div/Pow/MatMul, Neg/Exp/Log/Sqrt/Abs/Clamp/Clone/Cast (the
float casts: float, double, half), reshape/flatten/squeeze/unsqueeze/Unflatten -> Flatten
or Reshape, permute/transpose -> Transpose, expand -> Expand, cat -> Concat, stack ->
Unsqueeze + Concat, basic indexing, chunk and split -> Slice (+ Squeeze/Unsqueeze),
sum/mean/max/min -> ReduceSum/ReduceMean/ReduceMax/ReduceMin.
``conv_transpose_ops.py``: ConvTranspose2d -> ConvTranspose (output_padding, dilation,
groups). Conv1d, MaxPool1d and AvgPool1d run as the 2-D ops between Reshapes.
``smooth_ops.py``: GELU -> Gelu (opset 20 and up; before, its erf or tanh formula as
``approximate`` says), ELU -> Elu, SiLU -> Sigmoid + Mul, Hardswish -> HardSwish (opset
14 and up; HardSigmoid + Mul before), PReLU -> PRelu.
``norm_ops.py``: LayerNorm -> LayerNormalization (opset 17 and up; its formula before),
GroupNorm -> Reshape + InstanceNormalization + Reshape + the affine.
``resample_ops.py``: F.pad -> Pad (constant, reflect, replicate as edge, circular as wrap
from opset 19, as a Concat before), F.interpolate -> Resize (nearest: asymmetric + floor;
bilinear: half_pixel or align_corners), or exact Gathers where Resize's coordinates
cannot reproduce fastgrad's (a scale_factor whose reciprocal is not out / in).
``select_ops.py``: where / masked_fill -> Where, Embedding -> Gather (its indices a
constant, or an integer input of the graph).
Dropout and Dropout2d in eval mode make no node (they are the identity). Losses,
integer-array indexing, one_hot and the integer and bool casts have no mapping: the
last two make no autograd node (their result is a constant to the recording, refused
when it depends on the input).

Adding an op
------------
Write one function next to its family's and register it for the op's Function class::

    @maps(activation.Sigmoid)
    def sigmoid(g, node, x, out):
        return g.op("Sigmoid", x)

``g`` is the GraphBuilder: ``g.op(op_type, inputs, **attributes)`` adds a node and
returns its output's name, ``g.const(array)`` / ``g.int64s([...])`` add initializers,
``g.shapes[name]`` is a value's traced shape. ``node`` is the recorded Function: read the
geometry from what its forward kept, in one small accessor per op next to its mapping
(``leaky_relu_slope(node)``), so that a renamed attribute is a one-line fix, and from
``out`` (the output Tensor). ``x`` are the names of its inputs, in the order of
``node.parents``. Raise ``errors.Unsupported("why")`` for a case ONNX cannot express. An
op that changes its input's rank also records which axes of its output are dynamic, with
``g.note(name, out.shape, {axis: symbol})`` (see ``tensor_ops.permute``); for the others
the dynamic axes of the inputs carry over. An array the forward holds outside its inputs
(a where's condition) becomes a constant: register an accessor for it with
``@holds(Function)`` so that export refuses it when it changes with the input. Then add
the op to ``EveryOp`` in tests/onnx/onnx_nets.py (a test checks that it runs every
mapped Function), which compares onnxruntime's output with fastgrad's.
"""

from .errors import Unsupported, UnsupportedOperatorError

__all__ = ["Unsupported", "UnsupportedOperatorError", "export"]


def export(model, args, f, input_names=None, output_names=None, dynamic_axes=None, opset_version=17):
    """Export ``model`` to ONNX (see fastgrad.onnx.exporter.export)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("fastgrad.onnx.export needs the onnx package: pip install 'fastgrad[onnx]'") from None
    from .exporter import export as export_model

    return export_model(
        model,
        args,
        f,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        opset_version=opset_version,
    )
