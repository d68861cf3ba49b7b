"""fastgrad.onnx.export checked by onnxruntime: each model is exported at batch 1 with a
dynamic batch axis, passes onnx.checker, and onnxruntime's output at batch 5 equals
fastgrad's own forward (the oracle) to 1e-4 relative."""

import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx_nets import (
    CifarTutorialNet,
    EveryOp,
    MnistExampleNet,
    ResNet8,
    settle_batch_norms,
)

import fastgrad
from fastgrad import (
    models,
    nn,
)
from fastgrad.autograd import Function
from fastgrad.onnx import UnsupportedOperatorError, export
from fastgrad.onnx.record import record

DYNAMIC = {"input": {0: "batch"}, "output": {0: "batch"}}
# The larger nets take minutes per forward on the pure-Python kernels: compiled only
compiled_only = pytest.mark.skipif(
    fastgrad.kernels.backend != "compiled", reason="large convolutions (compiled kernels only)"
)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x})[0]


def forward(model, x):
    with fastgrad.no_grad():
        return model(fastgrad.tensor(x)).numpy()


def assert_close(got, want):
    """Equal to 1e-4 relative: elementwise, and against the output's scale where an
    element is near zero."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def export_and_compare(model, input_shape, tmp_path, opset_version=17, batch=5):
    path = tmp_path / "model.onnx"
    x1 = fastgrad.randn(1, *input_shape)
    export(model, x1, path, dynamic_axes=DYNAMIC, opset_version=opset_version)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)  # with ONNX's shape inference too
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert next(i for i in proto.opset_import if i.domain == "").version == opset_version
    x = np.random.default_rng(7).standard_normal((batch, *input_shape)).astype(np.float32)
    want = forward(model, x)
    got = run_onnx(path, x)
    assert_close(got, want)
    assert_close(run_onnx(path, x1.numpy()), forward(model, x1.numpy()))
    return proto


def op_types(proto):
    return [n.op_type for n in proto.graph.node]


# --------------------------------------------------------------------------- the six models


def test_lenet5(tmp_path):
    proto = export_and_compare(models.lenet5().eval(), (1, 28, 28), tmp_path)
    assert op_types(proto) == [
        "Conv",
        "Relu",
        "MaxPool",
        "Conv",
        "Relu",
        "MaxPool",
        "Flatten",
        "Gemm",
        "Relu",
        "Gemm",
        "Relu",
        "Gemm",
    ]
    # the weights are initializers under their state_dict names
    assert {i.name for i in proto.graph.initializer} == set(models.lenet5().state_dict())


def test_lenet5_replaying_its_plan_is_recorded_layer_by_layer(tmp_path):
    """A Sequential already called at this shape replays a plan of its ops; while the
    export records, it calls its layers, so that each op is known with its module."""
    model = models.lenet5().eval()
    x1 = fastgrad.randn(1, 1, 28, 28)
    with fastgrad.no_grad():
        for _ in range(4):
            model(x1)
    assert model._plan_cache.stats["replays"] == 3
    names = [type(n).__name__ for n in record(model, [x1]).nodes]
    assert names.count("Conv2d") == 2 and names.count("Linear") == 3 and "Replay" not in names
    proto = export_and_compare(model, (1, 28, 28), tmp_path)
    assert op_types(proto).count("Conv") == 2 and op_types(proto).count("Gemm") == 3


@compiled_only
def test_cifar_small(tmp_path):
    export_and_compare(models.cifar_small().eval(), (3, 32, 32), tmp_path)


@compiled_only
def test_pytorch_cifar10_tutorial_net(tmp_path):
    export_and_compare(CifarTutorialNet().eval(), (3, 32, 32), tmp_path)


@compiled_only
def test_pytorch_mnist_example_net(tmp_path):
    proto = export_and_compare(MnistExampleNet().eval(), (1, 28, 28), tmp_path)
    assert "Dropout" not in op_types(proto) and op_types(proto)[-1] == "LogSoftmax"


@compiled_only
def test_resnet8_with_batch_norm_in_eval_mode(tmp_path):
    model = settle_batch_norms(ResNet8(), (3, 32, 32))
    proto = export_and_compare(model, (3, 32, 32), tmp_path)
    types = op_types(proto)
    assert types.count("BatchNormalization") == 9 and types.count("Conv") == 9
    assert "GlobalAveragePool" in types and types.count("Add") == 3


# ONNX ops whose presence depends on the opset: (op, first opset that has it, the form before)
BY_OPSET = [("Gelu", 20, "Erf"), ("HardSwish", 14, "HardSigmoid"), ("LayerNormalization", 17, "ReduceMean")]


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_a_model_using_every_mapped_op(tmp_path, opset):
    model = settle_batch_norms(EveryOp(), (4, 12, 12))
    proto = export_and_compare(model, (4, 12, 12), tmp_path, opset_version=opset)
    types = set(op_types(proto))
    for op in (
        "Conv",
        "Gemm",
        "MatMul",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "BatchNormalization",
        "Flatten",
        "Reshape",
        "Add",
        "Mul",
        "Sub",
        "Div",
        "Softmax",
        "LogSoftmax",
        "Concat",
        "Slice",
        "Transpose",
        "Expand",
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "Pow",
        "Neg",
        "Exp",
        "Log",
        "Sqrt",
        "Abs",
        "Clip",
        "Cast",
        "Identity",
        "Unsqueeze",
        "Squeeze",
        "ConvTranspose",
        "Elu",
        "PRelu",
        "InstanceNormalization",
        "Pad",
        "Resize",
        "Gather",
        "Where",
        "Shape",
    ):
        assert op in types, op
    for op, since, before in BY_OPSET:
        assert (op in types) == (opset >= since), op
        assert opset >= since or before in types, op
    modes = {a.s.decode() for n in proto.graph.node if n.op_type == "Pad" for a in n.attribute if a.name == "mode"}
    assert modes == ({"constant", "reflect", "edge", "wrap"} if opset >= 19 else {"constant", "reflect", "edge"})
    transforms = {
        a.s.decode()
        for n in proto.graph.node
        if n.op_type == "Resize"
        for a in n.attribute
        if a.name == "coordinate_transformation_mode"
    }
    assert transforms == {"half_pixel", "align_corners", "asymmetric"}


def test_the_every_op_model_runs_every_mapped_function():
    """Every Function class with a mapping is among the ops the model's forward records
    (but Dropout, whose mapping refuses training-mode dropout: eval makes no node)."""
    from fastgrad.onnx import exporter  # noqa: F401  (fills the table)
    from fastgrad.onnx.table import MAPPINGS
    from fastgrad.ops import dropout

    model, x = EveryOp().eval(), fastgrad.randn(1, 4, 12, 12)
    with fastgrad.no_grad():
        model(x)  # as export does first
    recorded = {type(n) for n in record(model, [x]).nodes}
    missing = set(MAPPINGS) - recorded - {dropout.Dropout}
    assert not missing, sorted(f"{c.__module__}.{c.__name__}" for c in missing)


def test_every_pooling_geometry_matches(tmp_path):
    """Pooling whose last window starts in the padding (ceil_mode), on odd sizes, with and
    without count_include_pad: the ONNX padding must reproduce fastgrad's windows."""
    for ceil_mode in (False, True):
        for count_include_pad in (False, True):
            model = nn.Sequential(
                nn.AvgPool2d(
                    (3, 2), stride=(2, 3), padding=1, ceil_mode=ceil_mode, count_include_pad=count_include_pad
                ),
                nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=ceil_mode),
            )
            export_and_compare(model.eval(), (2, 10, 11), tmp_path)


def test_a_file_object_gets_the_same_bytes(tmp_path):
    import io

    model, x = models.lenet5().eval(), fastgrad.randn(1, 1, 28, 28)
    buffer = io.BytesIO()
    proto = export(model, x, buffer, dynamic_axes=DYNAMIC)
    export(model, x, tmp_path / "m.onnx", dynamic_axes=DYNAMIC)
    assert buffer.getvalue() == (tmp_path / "m.onnx").read_bytes() == proto.SerializeToString()


def test_float64_model(tmp_path):
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    path = tmp_path / "model.onnx"
    export(model, fastgrad.randn(1, 6).double(), path, dynamic_axes={"input": [0]})
    x = np.random.default_rng(0).standard_normal((5, 6))
    assert_close(run_onnx(path, x), forward(model, x))


def test_several_inputs_and_outputs_and_names(tmp_path):
    class TwoWays(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, a, b):
            y = self.fc(a * b)
            return y, y.relu(), y

    model, path = TwoWays().eval(), tmp_path / "two.onnx"
    a, b = fastgrad.randn(1, 3), fastgrad.randn(1, 3)
    proto = export(
        model,
        (a, b),
        path,
        input_names=["a", "b"],
        output_names=["y", "r"],
        dynamic_axes={"a": {0: "n"}, "b": {0: "n"}, "y": {0: "n"}},
    )
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == ["y", "r", "output_2"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xa, xb = (np.random.default_rng(i).standard_normal((4, 3)).astype(np.float32) for i in (1, 2))
    got = session.run(None, {"a": xa, "b": xb})
    with fastgrad.no_grad():
        want = [t.numpy() for t in model(fastgrad.tensor(xa), fastgrad.tensor(xb))]
    for g, w in zip(got, want):
        assert_close(g, w)


# --------------------------------------------------------------------------- bad input


class Cube(Function):
    """A user's own op: fastgrad.onnx has no mapping for it."""

    def forward(self, x):
        self.x = x
        return x**3

    def backward(self, grad):
        return (3 * self.x**2 * grad,)


class CubeLayer(nn.Module):
    def forward(self, x):
        return Cube.apply(x)


def test_an_unmapped_op_names_the_op_and_module_and_writes_nothing(tmp_path):
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), CubeLayer()))
    model.add_module("head", nn.Linear(2 * 4 * 4, 3))
    path = tmp_path / "model.onnx"
    with pytest.raises(UnsupportedOperatorError, match=r"op Cube in module 'features\.3' has no ONNX mapping"):
        export(model.eval(), fastgrad.randn(1, 1, 6, 6), path)
    assert os.listdir(tmp_path) == []


def test_an_unmapped_op_in_a_custom_forward_names_the_model(tmp_path):
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return nn.functional.cross_entropy(self.fc(x), fastgrad.tensor([0]))

    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous file")
    with pytest.raises(UnsupportedOperatorError, match=r"op CrossEntropy in the forward of WithLoss"):
        export(WithLoss().eval(), fastgrad.randn(1, 4), path)
    assert path.read_bytes() == b"the previous file"


def test_dropout_forced_on_is_refused(tmp_path):
    class AlwaysDrop(nn.Module):
        def forward(self, x):
            return nn.functional.dropout(x, 0.5, training=True)

    with pytest.raises(UnsupportedOperatorError, match="op Dropout .* training=True"):
        export(AlwaysDrop().eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx")


def test_a_reshape_that_moves_the_dynamic_batch_axis_is_refused(tmp_path):
    class FlattenAll(nn.Module):
        def forward(self, x):
            return x.reshape(-1) * 2.0

    with pytest.raises(UnsupportedOperatorError, match="moves dynamic axis 0"):
        export(FlattenAll().eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx", dynamic_axes={"input": [0]})
    export(FlattenAll().eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx")  # a fixed batch is fine


def test_training_mode_exports_eval_semantics_with_a_warning_and_is_restored(tmp_path):
    model = settle_batch_norms(
        nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 4 * 4, 2)
        ),
        (2, 6, 6),
    )
    x = np.random.default_rng(3).standard_normal((5, 2, 6, 6)).astype(np.float32)
    want = forward(model, x)
    model.train()
    model[4].eval()  # one module in eval mode: every module's own mode comes back
    stats = model[1].running_mean.numpy().copy()
    path = tmp_path / "model.onnx"
    with pytest.warns(UserWarning, match="training mode"):
        export(model, fastgrad.randn(1, 2, 6, 6), path, dynamic_axes=DYNAMIC)
    assert [m.training for m in model.modules()] == [True, True, True, True, True, False, True]
    np.testing.assert_array_equal(model[1].running_mean.numpy(), stats)  # no batch statistics taken
    assert_close(run_onnx(path, x), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export(model.eval(), fastgrad.randn(1, 2, 6, 6), path)  # eval mode: no warning


def test_an_unwritable_path_raises_the_os_error_and_leaves_no_file(tmp_path):
    model = models.lenet5().eval()
    x = fastgrad.randn(1, 1, 28, 28)
    with pytest.raises(FileNotFoundError):
        export(model, x, tmp_path / "no such folder" / "model.onnx")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(IsADirectoryError):
        export(model, x, tmp_path / "folder.onnx")
    assert os.listdir(tmp_path) == ["folder.onnx"] and os.listdir(tmp_path / "folder.onnx") == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"opset_version": 12}, ValueError, "opset_version 12"),
        ({"dynamic_axes": {"images": [0]}}, ValueError, "'images', which is not an input or output"),
        ({"dynamic_axes": {"input": [2]}}, ValueError, "axis 2 is not an axis"),
        ({"input_names": ["a", "b"]}, ValueError, "2 input_names for 1 input"),
        ({"output_names": ["x", "x"]}, ValueError, "at most|repeat|1 output"),
    ],
)
def test_bad_arguments_raise_before_anything_is_written(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export(nn.Linear(3, 2).eval(), fastgrad.randn(1, 3), tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_not_a_module_or_not_tensors():
    with pytest.raises(TypeError, match="must be a fastgrad.nn.Module"):
        export(lambda x: x, fastgrad.randn(1, 3), "unused.onnx")
    with pytest.raises(TypeError, match=r"args\[0\] must be a fastgrad Tensor"):
        export(nn.Linear(3, 2), np.zeros((1, 3), np.float32), "unused.onnx")


def test_a_constant_computed_from_the_input_is_refused(tmp_path):
    """A mask taken by comparison (no graph node) would be frozen as a constant."""

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            positive = (x > 0).float()
            return self.fc(x) * positive

    with pytest.raises(
        UnsupportedOperatorError,
        match="op Mul in the forward of Masked itself takes a tensor "
        "computed from the input outside the autograd graph",
    ):
        export(Masked().eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_control_flow_on_values_is_refused(tmp_path):
    class Branchy(nn.Module):
        def forward(self, x):  # any other input value takes the other branch
            return x.relu() if x[0, 0].item() == 0.5 else x.tanh()

    with pytest.raises(ValueError, match="runs different ops for different input values"):
        export(Branchy().eval(), fastgrad.full((1, 4), 0.5), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_basic_indexing_forms(tmp_path):
    class Indexing(nn.Module):
        def forward(self, x):
            return fastgrad.cat(
                [x[:, ::-1, 0], x[..., 1], x[:, -3:-1, 2], x[None, :, 2:, -1][0], x[:, 3::-2, 1]], dim=1
            )

    model = Indexing().eval()
    path = tmp_path / "m.onnx"
    export(model, fastgrad.randn(1, 5, 3), path, dynamic_axes=DYNAMIC)
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    assert_close(run_onnx(path, x), forward(model, x))


def test_an_op_made_before_a_child_call_belongs_to_the_caller(tmp_path):
    from collections import OrderedDict

    from fastgrad.nn import module

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(Cube.apply(x))

    model = nn.Sequential(OrderedDict(first=nn.Linear(4, 4), block=Block())).eval()
    with pytest.raises(UnsupportedOperatorError, match=r"op Cube in module 'block' has no ONNX mapping"):
        export(model, fastgrad.randn(1, 4), tmp_path / "m.onnx")
    assert module._forward_observers == []  # the recording stopped listening, error or not


def test_a_wrong_mapping_is_caught_by_the_checker_before_writing(tmp_path, monkeypatch):
    from fastgrad.onnx.table import MAPPINGS
    from fastgrad.ops.activation import Tanh

    def shrinking_tanh(g, node, x, out):  # a mapping bug: the output loses a column
        return g.op("Slice", [x[0], g.int64s([0]), g.int64s([-1]), g.int64s([1])])

    monkeypatch.setitem(MAPPINGS, Tanh, shrinking_tanh)
    with pytest.raises(RuntimeError, match="fails onnx.checker, so a mapping is wrong"):
        export(nn.Sequential(nn.Linear(3, 4), nn.Tanh()).eval(), fastgrad.randn(1, 3), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
