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
Softmax/LogSoftmax, and a Sequential's chain (one form per layer). Dropout in eval mode
makes no node (it is the identity).
``tensor_ops.py``: Add/Sub/Mul/Div/Pow/MatMul, Neg/Exp/Log/Sqrt/Abs/Clamp/Clone/Cast,
reshape/flatten/squeeze/unsqueeze -> Flatten or Reshape, permute/transpose -> Transpose,
expand -> Expand, cat -> Concat, stack -> Unsqueeze + Concat, basic indexing -> Slice
(+ Squeeze/Unsqueeze), sum/mean/max/min -> ReduceSum/ReduceMean/ReduceMax/ReduceMin.
Losses and integer-array indexing have no mapping.

Adding an op
------------
Write one function next to its family's and register it for the op's Function class::

    @maps(activation.Sigmoid)
    def sigmoid(g, node, x, out):
        return g.op("Sigmoid", x)

``g`` is the GraphBuilder: ``g.op(op_type, inputs, **attributes)`` adds a node and
returns its output's name, ``g.const(array)`` / ``g.int64s([...])`` add initializers,
``g.shapes[name]`` is a value's traced shape. ``node`` is the recorded Function: read the
geometry from what its forward kept (``node.step.params``, ``node.negative_slope``) and
from ``out`` (the output Tensor). ``x`` are the names of its inputs, in the order of
``node.parents``. Raise ``errors.Unsupported("why")`` for a case ONNX cannot express. An
op that changes its input's rank also records which axes of its output are dynamic, with
``g.note(name, out.shape, {axis: symbol})`` (see ``tensor_ops.permute``); for the others
the dynamic axes of the inputs carry over. Then add the op to a test model in
tests/onnx, which compares onnxruntime's output with fastgrad's.
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
    return export_model(model, args, f, input_names=input_names, output_names=output_names,
                        dynamic_axes=dynamic_axes, opset_version=opset_version)
