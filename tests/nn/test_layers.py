"""The layers: gradients by finite differences (float64, tiny shapes, inputs and
parameters), reprs against PyTorch's, wrong input shapes, containers, default
initialization and constructor checks."""

import math
from collections import OrderedDict

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn


def t64(*shape, seed=0, scale=1.0):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    return fastgrad.tensor(a, dtype=fastgrad.float64, requires_grad=True)


# (id, layer factory, input shape); every layer is checked in float64 after .double()
GRAD_CASES = [
    ("conv", lambda: nn.Conv2d(2, 3, 3), (2, 2, 5, 4)),
    ("conv_stride_pad", lambda: nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 2)), (1, 2, 5, 6)),
    ("conv_dilation_groups_nobias", lambda: nn.Conv2d(4, 2, 2, dilation=2, groups=2, bias=False), (2, 4, 5, 5)),
    ("conv_same", lambda: nn.Conv2d(1, 2, 3, padding="same"), (1, 1, 4, 5)),
    ("conv_same_even_kernel", lambda: nn.Conv2d(2, 2, (2, 4), padding="same", dilation=(1, 1)), (1, 2, 4, 5)),
    ("conv_unbatched", lambda: nn.Conv2d(2, 2, 3, padding=1), (2, 3, 4)),
    ("linear", lambda: nn.Linear(5, 3), (4, 5)),
    ("linear_nobias_3d", lambda: nn.Linear(3, 2, bias=False), (2, 3, 3)),
    ("linear_1d", lambda: nn.Linear(3, 2), (3,)),
    ("maxpool", lambda: nn.MaxPool2d(2), (2, 2, 4, 6)),
    ("maxpool_overlap_pad", lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 5)),
    ("avgpool", lambda: nn.AvgPool2d(2), (2, 2, 4, 4)),
    (
        "avgpool_pad_ceil",
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 2, 6, 5),
    ),
    ("adaptive_avgpool", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
    ("adaptive_avgpool_1", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 3, 3)),
    ("relu", lambda: nn.ReLU(), (3, 4)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), (3, 4)),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 4)),
    ("tanh", lambda: nn.Tanh(), (3, 4)),
    ("softmax", lambda: nn.Softmax(dim=1), (3, 4)),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), (2, 3, 4)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("identity", lambda: nn.Identity(54, unused=True), (2, 3)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(3), (4, 3)),
    ("batchnorm1d_3d", lambda: nn.BatchNorm1d(2), (3, 2, 4)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(2), (2, 2, 3, 3)),
    ("batchnorm2d_no_affine", lambda: nn.BatchNorm2d(2, affine=False), (3, 2, 2, 2)),
    ("batchnorm1d_no_bias", lambda: nn.BatchNorm1d(3, bias=False), (4, 3)),
    (
        "sequential",
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)),
        (2, 1, 4, 4),
    ),
]


@pytest.mark.parametrize("factory,shape", [c[1:] for c in GRAD_CASES], ids=[c[0] for c in GRAD_CASES])
def test_layer_gradients(factory, shape, module_gradcheck):
    layer = factory().double()
    # distinct values keep max pooling away from ties, where finite differences are meaningless
    x = t64(*shape, seed=len(shape))
    if isinstance(layer, nn.MaxPool2d):
        x.data[...] = np.random.default_rng(1).permutation(x.data.size).reshape(shape) / x.data.size
    module_gradcheck(layer, [x], layer.parameters())


def test_batchnorm_eval_gradients(module_gradcheck):
    bn = nn.BatchNorm2d(3).double()
    bn.running_mean.data[:] = [0.5, -1.0, 2.0]
    bn.running_var.data[:] = [0.25, 2.0, 1.5]
    bn.eval()
    module_gradcheck(bn, [t64(2, 3, 2, 2)], bn.parameters())


def test_dropout_gradients(module_gradcheck):
    drop = nn.Dropout(0.4)

    def seeded(x):  # the same mask on every call, so finite differences see one function
        fastgrad.manual_seed(5)
        return drop(x)

    module_gradcheck(seeded, [t64(4, 6)])


def loss_cases():
    rng = np.random.default_rng(3)
    labels = fastgrad.tensor(rng.integers(0, 4, size=5))
    probs = fastgrad.tensor(rng.random((5, 4)), dtype=fastgrad.float64)
    target = fastgrad.tensor(rng.standard_normal((5, 4)), dtype=fastgrad.float64)
    weight = fastgrad.tensor([1.0, 0.5, 2.0, 1.5], dtype=fastgrad.float64)
    return [
        ("mse", nn.MSELoss(), target),
        ("mse_sum", nn.MSELoss(reduction="sum"), target),
        ("mse_none", nn.MSELoss(reduction="none"), target),
        ("cross_entropy", nn.CrossEntropyLoss(), labels),
        ("cross_entropy_weighted_smooth", nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1), labels),
        ("cross_entropy_ignore", nn.CrossEntropyLoss(ignore_index=2, reduction="sum"), labels),
        ("nll", nn.NLLLoss(), labels),
        ("nll_weighted", nn.NLLLoss(weight=weight), labels),
        ("bce_logits", nn.BCEWithLogitsLoss(), probs),
        ("bce_logits_pos_weight", nn.BCEWithLogitsLoss(pos_weight=weight, reduction="sum"), probs),
    ]


@pytest.mark.parametrize("case", range(10), ids=[c[0] for c in loss_cases()])
def test_loss_module_gradients(case, module_gradcheck):
    _, loss, target = loss_cases()[case]
    module_gradcheck(lambda x: loss(x, target), [t64(5, 4)])


def test_loss_modules_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    probs = rng.random((6, 5)).astype(np.float32)
    w = np.array([1.0, 0.5, 2.0, 1.5, 1.0], dtype=np.float32)
    pairs = [
        (nn.MSELoss(), torch.nn.MSELoss(), probs),
        (
            nn.CrossEntropyLoss(weight=fastgrad.tensor(w), label_smoothing=0.2, ignore_index=1),
            torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.2, ignore_index=1),
            labels,
        ),
        (nn.NLLLoss(reduction="sum"), torch.nn.NLLLoss(reduction="sum"), labels),
        (
            nn.BCEWithLogitsLoss(pos_weight=fastgrad.tensor(w)),
            torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w)),
            probs,
        ),
        (nn.MSELoss(size_average=False), torch.nn.MSELoss(reduction="sum"), probs),
    ]
    for ours, theirs, target in pairs:
        got = ours(fastgrad.tensor(x), fastgrad.tensor(target)).data
        want = theirs(torch.tensor(x), torch.tensor(target)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=repr(ours))


# ---------------------------------------------------------------------------- reprs


def repr_pairs(lib):
    return [
        lib.Conv2d(1, 6, 5, padding=2),
        lib.Conv2d(6, 16, 5),
        lib.Conv2d(4, 8, (3, 1), stride=2, dilation=(1, 2)),
        lib.Conv2d(4, 4, 3, groups=2, bias=False),
        lib.Conv2d(2, 2, 3, padding="same"),
        lib.Conv2d(2, 2, 4, padding="valid"),
        lib.Linear(400, 120),
        lib.Linear(3, 1, bias=False),
        lib.MaxPool2d(2),
        lib.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
        lib.AvgPool2d(2),
        lib.AvgPool2d((2, 3), stride=1),
        lib.AdaptiveAvgPool2d((1, 1)),
        lib.AdaptiveAvgPool2d(3),
        lib.ReLU(),
        lib.ReLU(inplace=True),
        lib.LeakyReLU(),
        lib.LeakyReLU(0.2, inplace=True),
        lib.Sigmoid(),
        lib.Tanh(),
        lib.Softmax(dim=1),
        lib.LogSoftmax(dim=-1),
        lib.Flatten(),
        lib.Flatten(0, 2),
        lib.Identity(),
        lib.Dropout(),
        lib.Dropout(0.1),
        lib.BatchNorm1d(10),
        lib.BatchNorm2d(3, eps=1e-3, momentum=None, affine=False),
        lib.BatchNorm2d(4, track_running_stats=False),
        lib.BatchNorm1d(2, bias=False),
        lib.MSELoss(),
        lib.CrossEntropyLoss(),
        lib.NLLLoss(),
        lib.BCEWithLogitsLoss(),
        lib.Sequential(
            lib.Conv2d(1, 6, 5, padding=2),
            lib.ReLU(),
            lib.MaxPool2d(2),
            lib.Conv2d(6, 16, 5),
            lib.ReLU(),
            lib.MaxPool2d(2),
            lib.Flatten(),
            lib.Linear(400, 120),
            lib.ReLU(),
            lib.Linear(120, 84),
            lib.ReLU(),
            lib.Linear(84, 10),
        ),
        lib.Sequential(OrderedDict([("block", lib.Sequential(lib.Linear(2, 2), lib.Tanh())), ("out", lib.Identity())])),
        lib.ModuleList([lib.Linear(2, 2), lib.Linear(2, 2), lib.Linear(2, 2), lib.ReLU(), lib.Linear(2, 2)]),
        lib.ModuleList(),
    ]


def test_reprs_match_pytorch():
    torch = pytest.importorskip("torch")
    for ours, theirs in zip(repr_pairs(nn), repr_pairs(torch.nn)):
        assert repr(ours) == repr(theirs)


def test_lenet_repr_without_torch():
    assert repr(nn.Conv2d(1, 6, 5, padding=2)) == "Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))"
    assert repr(nn.Linear(84, 10)) == "Linear(in_features=84, out_features=10, bias=True)"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"


# ---------------------------------------------------------------------------- wrong input shapes


@pytest.mark.parametrize(
    "layer,shape,expected",
    [
        (nn.Conv2d(3, 6, 5), (2, 1, 28, 28), "(N, 3, H, W) or (3, H, W)"),
        (nn.Conv2d(3, 6, 5), (28, 28), "(N, 3, H, W) or (3, H, W)"),
        (nn.Linear(400, 120), (8, 256), "(*, 400)"),
        (nn.Linear(4, 2), (), "(*, 4)"),
        (nn.BatchNorm2d(6), (2, 5, 4, 4), "(N, 6, H, W)"),
        (nn.BatchNorm2d(6), (2, 6), "(N, 6, H, W)"),
        (nn.BatchNorm1d(4), (2, 4, 3, 3), "(N, 4) or (N, 4, L)"),
        (nn.MaxPool2d(2), (4, 4), "(N, C, H, W) or (C, H, W)"),
        (nn.AvgPool2d(2), (1, 1, 1, 4, 4), "(N, C, H, W) or (C, H, W)"),
        (nn.AdaptiveAvgPool2d(1), (5,), "(N, C, H, W) or (C, H, W)"),
        (nn.Flatten(), (5,), "at least 2 dimensions"),
    ],
)
def test_wrong_input_shape_names_the_layer(layer, shape, expected):
    with pytest.raises(ValueError) as info:
        layer(fastgrad.zeros(*shape))
    msg = str(info.value)
    assert msg.startswith(repr(layer) + ": ")
    assert f"expected input of shape {expected}, got {shape}" in msg


def test_wrong_shape_inside_sequential_names_the_inner_layer():
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(ValueError, match=r"Linear\(in_features=100, out_features=10, bias=True\): .* got \(2, 96\)"):
        model(fastgrad.zeros(2, 1, 8, 8))


# ---------------------------------------------------------------------------- containers


def test_sequential_indexing_slicing_and_editing():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Tanh()]
    seq = nn.Sequential(*layers)
    assert len(seq) == 4 and seq[0] is layers[0] and seq[-1] is layers[3]
    assert list(seq) == layers
    tail = seq[2:]
    assert isinstance(tail, nn.Sequential) and list(tail._modules) == ["2", "3"]  # names kept, as PyTorch
    assert tail(fastgrad.ones(1, 3)).shape == (1, 4)
    seq.append(nn.Identity())
    assert list(seq._modules) == ["0", "1", "2", "3", "4"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2", "3"] and seq[1] is layers[2]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    seq[3] = nn.Sigmoid()
    assert isinstance(seq[3], nn.Sigmoid)
    with pytest.raises(IndexError):
        seq[9]
    with pytest.raises(TypeError):
        seq["0"]
    named = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 1, 1)), ("act", nn.ReLU())]))
    assert named.conv is named[0] and list(named.state_dict()) == ["conv.weight", "conv.bias"]


def test_modulelist_registers_its_modules():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    model = Stack()
    assert [n for n, _ in model.named_parameters()][:2] == ["blocks.0.weight", "blocks.0.bias"]
    assert len(list(model.parameters())) == 6
    model.blocks.append(nn.Linear(2, 2))
    model.blocks += [nn.Linear(2, 2)]
    model.blocks.insert(0, nn.Identity())
    assert len(model.blocks) == 6 and isinstance(model.blocks[0], nn.Identity)
    assert isinstance(model.blocks[1:3], nn.ModuleList) and len(model.blocks[1:3]) == 2
    assert model(fastgrad.ones(1, 2)).shape == (1, 2)


# ---------------------------------------------------------------------------- construction


def test_default_init_bounds_are_pytorchs():
    fastgrad.manual_seed(1)
    conv = nn.Conv2d(6, 16, 5)
    bound = 1 / math.sqrt(6 * 25)  # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for p in (conv.weight, conv.bias):
        assert np.abs(p.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.95 * bound  # spread over the whole interval
    assert abs(np.std(conv.weight.data) - bound / math.sqrt(3)) < 0.05 * bound
    lin = nn.Linear(400, 120)
    assert np.abs(lin.weight.data).max() <= 1 / 20 and np.abs(lin.bias.data).max() <= 1 / 20
    fastgrad.manual_seed(1)
    np.testing.assert_array_equal(nn.Conv2d(6, 16, 5).weight.data, conv.weight.data)  # seeded


def test_dtype_argument_and_shapes():
    conv = nn.Conv2d(4, 6, (3, 2), groups=2, dtype=fastgrad.float64)
    assert conv.weight.shape == (6, 2, 3, 2) and conv.weight.dtype == np.float64
    assert nn.Linear(3, 5).weight.shape == (5, 3)
    assert nn.Linear(3, 5, bias=False).bias is None


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: nn.Conv2d(3, 4, 3, groups=2), "in_channels must be divisible by groups"),
        (lambda: nn.Conv2d(4, 3, 3, groups=2), "out_channels must be divisible by groups"),
        (lambda: nn.Conv2d(0, 3, 3), "in_channels must be a positive integer"),
        (lambda: nn.Conv2d(1, 3, 0), "kernel_size must be >= 1"),
        (lambda: nn.Conv2d(1, 3, 3, stride=0), "stride must be >= 1"),
        (lambda: nn.Conv2d(1, 3, 3, padding=-1), "padding must be >= 0"),
        (lambda: nn.Conv2d(1, 3, 3, padding_mode="reflect"), "padding_mode"),
        (lambda: nn.Conv2d(1, 3, 3, stride=2, padding="same"), "strided"),
        (lambda: nn.Conv2d(1, 3, 3, padding="full"), "Invalid padding string"),
        (lambda: nn.Linear(-1, 3), "in_features must be a non-negative integer"),
        (lambda: nn.Dropout(1.5), "dropout probability has to be between 0 and 1, but got 1.5"),
        (lambda: nn.BatchNorm2d(0), "num_features must be a positive integer"),
        (lambda: nn.BatchNorm2d(3, momentum=2), "momentum"),
        (lambda: nn.BatchNorm1d(3, eps=float("nan")), "BatchNorm1d: eps must be a finite positive number"),
        (lambda: nn.BatchNorm2d(3, eps=float("inf")), "BatchNorm2d: eps must be a finite positive number"),
        (lambda: nn.BatchNorm2d(3, momentum=float("nan")), "BatchNorm2d: momentum"),
        (lambda: nn.Linear(10**7, 10**7), "Linear: weight of shape .* more than this machine's memory"),
        (lambda: nn.BatchNorm1d(10**12), "BatchNorm1d: .* more than this machine's memory"),
        (lambda: nn.MSELoss(reduction="avg"), "avg is not a valid value for reduction"),
        (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), "label_smoothing"),
    ],
)
def test_bad_constructor_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_softmax_without_dim_warns_and_picks_pytorchs_dim():
    x = fastgrad.tensor(np.arange(6.0).reshape(2, 3))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = nn.Softmax()(x)
    np.testing.assert_allclose(out.data.sum(axis=1), 1, rtol=1e-6)


def test_sequential_fuses_relu_without_changing_values_or_gradients():
    class OwnReLU(nn.ReLU):  # a subclass of the user's: the Sequential runs one by one
        pass

    def make(last_relu):
        return nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(12, 5),
            nn.ReLU(inplace=True),
            nn.Linear(5, 4),
            last_relu(),
            nn.Linear(4, 2),
            nn.ReLU(),
        )

    for last_relu in (nn.ReLU, OwnReLU):
        model = make(last_relu)
        x = fastgrad.tensor(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
        for _ in range(5):  # captured, traced, then replayed
            model.zero_grad()
            fused = model(x)
            fused.sum().backward()
        fused_grads = [p.grad.data.copy() for p in model.parameters()]
        model.zero_grad()
        layer_by_layer = x
        for layer in model:
            layer_by_layer = layer(layer_by_layer)
        layer_by_layer.sum().backward()
        np.testing.assert_array_equal(fused.data, layer_by_layer.data)
        for got, want in zip(fused_grads, [p.grad.data for p in model.parameters()]):
            np.testing.assert_array_equal(got, want)
        entries = [plan for v in model._plan_cache.plans.values() for _, plan in v if plan is not None]
        if last_relu is OwnReLU:
            assert not entries and "OwnReLU" in model._plan_cache.stats["graph_breaks"][0]
        else:  # the four ReLUs run inside the convolution's and the linear layers' kernels
            (plan,) = entries
            assert [e.cls.__name__ for e in plan.entries] == [
                "Conv2d", "MaxPool2d", "Reshape", "Linear", "Linear", "Linear"
            ]  # fmt: skip


def test_linear_rejects_other_dtypes_naming_itself():
    with pytest.raises(TypeError, match="Linear: expected dtype float32 or float64, got float16"):
        nn.Linear(3, 3, dtype=np.float16)


@pytest.mark.parametrize("shape", [(4, 0), (2, 3, 0), (0, 0, 0)])
def test_linear_without_input_features_outputs_the_bias(shape):
    layer = nn.Linear(0, 3)
    layer.bias.data[...] = [1.0, 2.0, 3.0]
    out = layer(fastgrad.zeros(*shape))
    np.testing.assert_array_equal(out.data, np.broadcast_to(layer.bias.data, shape[:-1] + (3,)))
