"""GraphBuilder: the ONNX graph being written, node by node, with the onnx package's own
helpers (``onnx.helper``, ``onnx.numpy_helper``).

Besides the nodes and initializers it keeps, per value name, the shape the recorded
forward gave it and its dynamic axes (axis -> symbolic name, from ``dynamic_axes``): the
few mappings whose ONNX form holds a shape (Reshape, Expand) read them to keep a dynamic
batch dimension dynamic, and the graph's outputs declare them.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    def __init__(self, opset):
        self.opset = opset
        self.nodes, self.initializers = [], []
        self.shapes, self.dyn = {}, {}  # value name -> traced shape, -> {axis: symbol}
        self.path = ""  # module path of the op being mapped (node names)
        self._taken = set()
        self._constants = {}  # id(array) -> name, for arrays given twice
        self._integer_inputs = []  # (array, name) of the graph's integer inputs

    # ----------------------------------------------------------------- names
    def fresh(self, base):
        """``base``, or ``base_1``, ``base_2``... : a value or node name not used yet."""
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name

    def reserve(self, name):
        if name in self._taken:
            raise ValueError(f"export: the name {name!r} is used twice in the graph")
        self._taken.add(name)
        return name

    def _scope(self):
        return "/" + self.path.replace(".", "/") if self.path else ""

    # ----------------------------------------------------------------- nodes and values
    def op(self, op_type, inputs, outputs=1, **attrs):
        """Add a node of ``op_type``; return its output name (or list of names when
        ``outputs`` > 1). An input of None or "" is an omitted optional input."""
        scope = self._scope()
        names = [self.fresh(f"{scope}/{op_type}_output_{i}") for i in range(outputs)]
        inputs = ["" if x is None else x for x in inputs]
        while inputs and inputs[-1] == "":
            inputs.pop()
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.fresh(f"{scope}/{op_type}"), **attrs))
        return names[0] if outputs == 1 else names

    def note(self, name, shape, dyn):
        """Record the traced shape and dynamic axes of value ``name``."""
        self.shapes[name] = tuple(int(d) for d in shape)
        self.dyn[name] = dict(dyn)
        return name

    def initializer(self, array, name):
        """Add ``array`` as an initializer called ``name`` (taken as it is)."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), self.reserve(name)))
        return name

    def const(self, array, base="Constant"):
        """An initializer holding ``array`` (one per array object), named in the current
        module's scope."""
        array = np.asarray(array)
        key = id(array)
        if key in self._constants:
            return self._constants[key][0]
        name = self.fresh(f"{self._scope()}/{base}")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        self._constants[key] = (name, array)  # the array is kept alive with its id
        self.note(name, array.shape, {})
        return name

    def add_integer_input(self, array, name):
        self._integer_inputs.append((np.asarray(array), name))

    def integer_input(self, indices):
        """The name of the graph's integer input holding ``indices`` (as int64: through a
        Cast when the input has another integer type), or None."""
        for array, name in self._integer_inputs:
            if array.shape == indices.shape and np.array_equal(array, indices):
                if array.dtype == np.int64:
                    return name
                return self.note(self.op("Cast", [name], to=tensor_type(np.int64)), array.shape, self.dyn[name])
        return None

    def int64s(self, values, base="Constant"):
        return self.const(np.array(list(values), dtype=np.int64), base)

    # ----------------------------------------------------------------- opset-dependent forms
    def reduce(self, op_type, x, axes, keepdims):
        """Reduce<op_type> over ``axes`` (None: all): axes is an attribute before opset
        18 (13 for ReduceSum) and an input from then on."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        keep = int(bool(keepdims))
        if axes is None:
            return self.op(op_type, [x], keepdims=keep)
        axes = [int(a) for a in axes]
        if as_input:
            return self.op(op_type, [x, self.int64s(axes, "axes")], keepdims=keep)
        return self.op(op_type, [x], axes=axes, keepdims=keep)


def tensor_type(dtype):
    """The ONNX element type of a numpy dtype."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def value_info(name, dtype, shape, dyn):
    dims = [dyn.get(axis, d) for axis, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, tensor_type(dtype), dims)


def make_model(builder, inputs, outputs, opset, producer_version):
    """The ModelProto of a finished builder, checked by onnx.checker with ONNX's shape
    inference, which must agree with every shape the recorded forward gave."""
    graph = helper.make_graph(builder.nodes, "fastgrad", inputs, outputs, builder.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="fastgrad",
        producer_version=producer_version,
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RuntimeError(f"export: the ONNX graph fails onnx.checker, so a mapping is wrong: {exc}") from None
    return model
