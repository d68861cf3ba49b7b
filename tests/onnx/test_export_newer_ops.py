"""The ONNX forms of the newer layers and functions, geometry by geometry: each model is
exported at batch 1 with a dynamic batch axis, checked by onnx.checker, and run by
onnxruntime at batch 5 against fastgrad's own forward (the oracle)."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_export import (
    DYNAMIC,
    assert_close,
    export_and_compare,
    forward,
    op_types,
    run_onnx,
)

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import nn
from fastgrad.onnx import UnsupportedOperatorError, export


class Lambda(nn.Module):
    """A forward given as a function of the input (the layers it uses are its children)."""

    def __init__(self, fn, *layers):
        super().__init__()
        self.fn, self.layers = fn, nn.ModuleList(layers)

    def forward(self, x):
        return self.fn(x, *self.layers)


def attribute(proto, op_type, name):
    node = next(n for n in proto.graph.node if n.op_type == op_type)
    return onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_keeps_its_approximation(tmp_path, opset, approximate):
    """Closer than the two forms are to each other: the export writes the form asked for."""
    model = nn.GELU(approximate=approximate).eval()
    path = tmp_path / "gelu.onnx"
    proto = export(model, fastgrad.randn(1, 200), path, dynamic_axes=DYNAMIC, opset_version=opset)
    assert ("Gelu" in op_types(proto)) == (opset >= 20)
    x = np.linspace(-5, 5, 5 * 200, dtype=np.float32).reshape(5, 200)
    want, other = forward(model, x), forward(nn.GELU({"none": "tanh", "tanh": "none"}[approximate]), x)
    assert np.abs(want - other).max() > 1e-4
    np.testing.assert_allclose(run_onnx(path, x), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("opset", [13, 17])
def test_smooth_activations_and_prelu(tmp_path, opset):
    for model, shape in [
        (nn.Sequential(nn.PReLU(5, init=-0.2), nn.ELU(0.3), nn.SiLU(), nn.Hardswish()), (5,)),
        (nn.Sequential(nn.PReLU(3), nn.ELU(), nn.Hardswish()), (3, 4, 4)),
        (nn.Sequential(nn.PReLU(), nn.SiLU()), (2, 7)),
    ]:
        model[0].weight.data[...] = np.linspace(-0.5, 0.5, model[0].weight.shape[0])
        x = np.random.default_rng(0).uniform(-5, 5, (5, *shape)).astype(np.float32)
        path = tmp_path / "act.onnx"
        export(model.eval(), fastgrad.randn(1, *shape), path, dynamic_axes=DYNAMIC, opset_version=opset)
        assert_close(run_onnx(path, x), forward(model, x))


# --------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
def test_layer_norm_and_group_norm_keep_their_epsilon(tmp_path, opset, eps):
    """The forward keeps no eps: the export recovers it. Small variances (the input scaled
    by 0.05) make a wrong epsilon show in the output."""
    model = Lambda(
        lambda x, ln, gn, ln_plain: ln_plain(gn(ln(x * 0.05)) * 0.05),
        nn.LayerNorm((4, 6), eps=eps),
        nn.GroupNorm(2, 6, eps=eps),
        nn.LayerNorm(6, eps=eps, elementwise_affine=False),
    )
    rng = np.random.default_rng(2)
    for p in model.parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape)
    proto = export_and_compare(model.eval(), (6, 4, 6), tmp_path, opset_version=opset)
    # recovered through float32 rounding: to within 1e-7 of the variance (about 1 here)
    assert attribute(proto, "InstanceNormalization", "epsilon") == pytest.approx(eps, rel=0.05)
    if opset >= 17:
        assert attribute(proto, "LayerNormalization", "epsilon") == pytest.approx(eps, rel=0.05)
    else:
        assert "LayerNormalization" not in op_types(proto)


# --------------------------------------------------------------------------- convolutions


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2, "padding": 1, "output_padding": 1},
        {"stride": (3, 2), "padding": (2, 0), "output_padding": (2, 1), "dilation": (1, 2)},
        {"groups": 3, "bias": False},
        {"stride": 2, "groups": 3, "dilation": 3},
    ],
)
def test_conv_transpose2d_geometries(tmp_path, kwargs):
    model = nn.ConvTranspose2d(6, 9, (3, 4), **kwargs).eval()
    proto = export_and_compare(model, (6, 5, 7), tmp_path)
    assert op_types(proto) == ["ConvTranspose"]


def test_conv1d_and_1d_pools(tmp_path):
    model = nn.Sequential(
        nn.Conv1d(3, 4, 4, padding="same"),
        nn.MaxPool1d(3, stride=2, ceil_mode=True),
        nn.Conv1d(4, 4, 3, stride=2, dilation=2, groups=2),
        nn.AvgPool1d(2, padding=1, count_include_pad=False),
        nn.Unflatten(1, (2, 2)),
    )
    proto = export_and_compare(model.eval(), (3, 31), tmp_path)
    assert {"Conv", "MaxPool", "AveragePool", "Reshape"} <= set(op_types(proto))


# --------------------------------------------------------------------------- pad and interpolate


@pytest.mark.parametrize("opset", [17, 19])
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes(tmp_path, opset, mode):
    value = {"value": -0.75} if mode == "constant" else {}
    model = Lambda(
        lambda x: fastgrad.cat(
            [
                F.pad(x, (2, 1, 0, 3, 1, 1), mode=mode, **value).flatten(1),
                F.pad(x[:, 1:], (3, 0, 1, 2, 1, 1), mode=mode, **value).flatten(1),
            ],
            1,
        )
    )
    proto = export_and_compare(model.eval(), (3, 4, 5), tmp_path, opset_version=opset)
    onnx_mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)
    modes = {
        onnx.helper.get_attribute_value(a).decode()
        for n in proto.graph.node
        if n.op_type == "Pad"
        for a in n.attribute
        if a.name == "mode"
    }
    if mode == "circular" and opset < 19:  # no "wrap" before opset 19: a Concat of the ends
        assert "wrap" not in modes and "Concat" in op_types(proto)
    else:
        assert onnx_mode in modes


def test_padding_the_dynamic_batch_axis_is_refused(tmp_path):
    model = Lambda(lambda x: F.pad(x, (1, 1, 2, 0)))
    with pytest.raises(UnsupportedOperatorError, match="padding dynamic axis 0"):
        export(model.eval(), fastgrad.randn(1, 3), tmp_path / "m.onnx", dynamic_axes=DYNAMIC)
    export(model.eval(), fastgrad.randn(1, 3), tmp_path / "m.onnx")  # a fixed batch is fine


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((3, 7), {"size": 12}),
        ((3, 7), {"scale_factor": 2}),
        ((2, 5, 6), {"size": (9, 4)}),
        ((2, 5, 6), {"scale_factor": (2, 3)}),
        ((2, 4, 3, 5), {"size": (6, 5, 3)}),
        ((2, 5, 6), {"size": (9, 4), "mode": "bilinear"}),
        ((2, 5, 6), {"size": (3, 13), "mode": "bilinear"}),
        ((2, 5, 6), {"size": (1, 13), "mode": "bilinear", "align_corners": True}),
        ((2, 5, 6), {"size": (9, 4), "mode": "bilinear", "align_corners": True}),
        ((2, 5, 6), {"scale_factor": 2, "mode": "bilinear"}),
        ((2, 5, 6), {"scale_factor": 2, "mode": "bilinear", "align_corners": True}),
    ],
)
def test_interpolate_as_resize(tmp_path, shape, kwargs):
    model = Lambda(lambda x: F.interpolate(x, **kwargs))
    proto = export_and_compare(model.eval(), shape, tmp_path)
    assert "Resize" in op_types(proto) and "Gather" not in op_types(proto)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("scale_factor", [1.7, (0.55, 2.3), 0.3])
def test_a_scale_factor_is_resized_by_scales(tmp_path, mode, scale_factor):
    """A scale_factor samples at 1 / scale_factor steps, not in / out ones: Resize by the
    ``scales`` found to reproduce fastgrad's positions and output size (nearest: or
    Gathers, where float32 rounding of i * (1 / scale_factor) leaves no one scale)."""
    model = Lambda(lambda x: F.interpolate(x, scale_factor=scale_factor, mode=mode))
    by_scales = 0
    for shape in ((2, 5, 6), (3, 31, 7), (1, 41, 30)):
        proto = export_and_compare(model.eval(), shape, tmp_path)
        types = op_types(proto)
        assert (types[-1] == "Resize" and "Gather" not in types) or (mode == "nearest" and "Resize" not in types)
        by_scales += types == ["Resize"]  # no Shape: scales, not sizes
    assert by_scales > 0 or scale_factor != 1.7  # at 1.7 some of these shapes need scales


def test_nearest_positions_no_scale_reproduces_are_gathered(tmp_path):
    """PyTorch's and fastgrad's floor(i * float32(1 / 2.3)) is 10 at i = 23 but 29 at
    i = 69 (float32 rounding): no one Resize scale gives both, so the export gathers."""
    model = Lambda(lambda x: F.interpolate(x, scale_factor=2.3))
    proto = export_and_compare(model.eval(), (2, 3, 64), tmp_path)
    assert "Resize" not in op_types(proto) and "Gather" in op_types(proto)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_positions_resize_cannot_reproduce_are_gathered(tmp_path, monkeypatch, mode):
    """Where no Resize reproduces fastgrad's source positions (here: a simulation of
    onnxruntime that never agrees), the export gathers the exact positions."""
    from fastgrad.onnx import resample_ops

    monkeypatch.setattr(resample_ops, "_onnx_nearest", lambda n_in, n_out, scale: np.full(n_out, -1))
    monkeypatch.setattr(resample_ops, "_onnx_linear", lambda n_in, n_out, mode, scale: np.full(n_out, -1.0))
    model = Lambda(
        lambda x: F.interpolate(x, size=(7, 4), mode=mode) + F.interpolate(x, scale_factor=1.7, mode=mode)[:, :, :7, :4]
    )
    proto = export_and_compare(model.eval(), (2, 5, 6), tmp_path)
    assert "Resize" not in op_types(proto) and "Gather" in op_types(proto)


# --------------------------------------------------------------------------- selection and lookup


def test_where_masked_fill_chunk_split_with_constant_masks(tmp_path):
    mask = fastgrad.tensor(np.array([[True, False, False], [False, True, True]]))
    model = Lambda(
        lambda x: (
            fastgrad.where(mask, x.chunk(2, dim=1)[0], 0.5)
            + x.split([2, 1, 3], dim=1)[2].masked_fill(mask, -2.0)
            - fastgrad.where(mask[0], 1.0, x[:, 1:2])
        )
    )
    proto = export_and_compare(model.eval(), (6, 2, 3), tmp_path)
    assert op_types(proto).count("Where") == 3


def test_a_mask_computed_from_the_input_is_refused(tmp_path):
    model = Lambda(lambda x: x.masked_fill(x > 0, 0.0))
    with pytest.raises(UnsupportedOperatorError, match="op Where .* computed from the input outside"):
        export(model.eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx")


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_embedding_of_an_integer_input(tmp_path, dtype):
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 4, padding_idx=0)
            self.fc = nn.Linear(4, 3)

        def forward(self, tokens):
            return self.fc(F.gelu(self.emb(tokens)))

    model, path = Tagger().eval(), tmp_path / "tagger.onnx"
    proto = export(model, fastgrad.tensor(np.array([[1, 5, 0, 10]], dtype=dtype)), path, dynamic_axes=DYNAMIC)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    assert ("Cast" in op_types(proto)) == (dtype != np.int64)
    tokens = np.random.default_rng(4).integers(0, 11, (5, 4)).astype(dtype)
    assert_close(run_onnx(path, tokens), forward(model, tokens))


def test_indices_computed_from_the_input_are_refused(tmp_path):
    emb = nn.Embedding(4, 3)
    model = Lambda(lambda x, e: e(fastgrad.tensor(np.argmax(x.detach().numpy(), axis=1))), emb)
    with pytest.raises(UnsupportedOperatorError, match="op Embedding .* computed from the input outside"):
        export(model.eval(), fastgrad.randn(1, 4), tmp_path / "m.onnx")


def test_an_output_computed_outside_the_graph_is_refused(tmp_path):
    """max_pool1d's indices (and an integer cast) make no graph node: frozen, they would
    be wrong for every other input."""
    model = Lambda(lambda x: F.max_pool1d(x, 2, return_indices=True))
    with pytest.raises(UnsupportedOperatorError, match="output 1 of Lambda is computed from the input outside"):
        export(model.eval(), fastgrad.randn(1, 2, 8), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedOperatorError, match="output 0 of Lambda"):
        export(Lambda(lambda x: (x * 4).long()).eval(), fastgrad.randn(1, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_float_casts(tmp_path):
    model = Lambda(lambda x: (x * 3.0).half().float() + x.double().sqrt().float())
    path = tmp_path / "casts.onnx"
    export(model.eval(), fastgrad.rand(1, 8), path, dynamic_axes=DYNAMIC)
    x = np.random.default_rng(1).uniform(0, 4, (5, 8)).astype(np.float32)
    assert_close(run_onnx(path, x), forward(model, x))
