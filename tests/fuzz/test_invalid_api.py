"""Invalid calls of the public API (functionals, layers, optimizers) must raise
ValueError, TypeError, IndexError or RuntimeError with a message that names the
function (or the layer, or for optimizers PyTorch's "Invalid <hyperparameter>"), before
any kernel runs.

Each test starts from a valid call and breaks one thing: an ndim, a channel count, a
dtype (integer, float16, float32 mixed with float64), a type (a numpy array or a list
for a Tensor), a size or hyperparameter (zero, negative, NaN, infinite), a target out of
range. Shapes stay small: enormous sizes are fuzzed in a memory-capped subprocess
(test_enormous.py)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastgrad
import fastgrad.nn as nn
import fastgrad.nn.functional as F
import fastgrad.optim as optim
from fuzz_common import dtypes, kernels_forbidden, rng_of, seeds
from fuzz_common import expect_error as _expect_error

NAN, INF = math.nan, math.inf


def expect_error(name, fn, *args, **kwargs):
    """The call raises an allowed error naming ``name``, and no kernel ran before."""
    with kernels_forbidden():
        return _expect_error(name, fn, *args, **kwargs)


def tensor(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return fastgrad.tensor(rng.standard_normal(shape).astype(dtype), dtype=dtype)
    return fastgrad.tensor(rng.integers(-3, 3, size=shape), dtype=dtype)


def other_float(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


wrong_dtypes = st.sampled_from([np.int64, np.int32, np.float16, np.bool_, "other float"])


def break_dtype(rng, shape, dtype, choice):
    """A tensor of ``shape`` of a dtype the call must refuse next to ``dtype`` tensors."""
    if choice == "other float":
        return tensor(rng, shape, other_float(dtype))
    if choice == np.bool_:
        return fastgrad.tensor(rng.random(shape) < 0.5)
    return tensor(rng, shape, choice)


# --------------------------------------------------------------------------- conv2d

CONV_MUTATIONS = [
    "input ndim",
    "weight ndim",
    "channels",
    "groups divide",
    "groups value",
    "input dtype",
    "weight dtype",
    "bias dtype",
    "bias shape",
    "stride",
    "padding",
    "dilation",
    "same with stride",
    "kernel too big",
    "input type",
    "weight type",
    "bias type",
]
bad_ints = st.sampled_from([0, -1, -7, 1.5, "2", None, True, (1, 2, 3), (1,), (1, 0), (2, -1), (1.0, 1), NAN, INF])


@pytest.mark.parametrize("mutation", CONV_MUTATIONS)
@given(dtype=dtypes, seed=seeds, wrong_dtype=wrong_dtypes, bad=bad_ints, relu=st.booleans(), data=st.data())
def test_conv2d(mutation, dtype, seed, wrong_dtype, bad, relu, data):
    rng = rng_of(seed)
    n, groups = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    c, co, k = 2 * groups, 2 * groups, data.draw(st.integers(1, 3))
    x, w, b = tensor(rng, (n, c, 5, 6), dtype), tensor(rng, (co, 2, k, k), dtype), tensor(rng, (co,), dtype)
    kwargs = dict(stride=1, padding=0, dilation=1, groups=groups)
    if mutation == "input ndim":
        x = tensor(rng, data.draw(st.sampled_from([(), (c,), (5, 6), (1, 1, c, 5, 6)])), dtype)
    elif mutation == "weight ndim":
        w = tensor(rng, data.draw(st.sampled_from([(co,), (co, 2, k), (co, 2, k, k, 1)])), dtype)
    elif mutation == "channels":
        x = tensor(rng, (n, c + data.draw(st.sampled_from([-1, 1, 3])), 5, 6), dtype)
    elif mutation == "groups divide":
        kwargs["groups"] = 3  # divides neither 2 nor 4 channels
    elif mutation == "groups value":
        kwargs["groups"] = data.draw(st.sampled_from([0, -1, 1.0, "1", None, True]))
    elif mutation == "input dtype":
        x = break_dtype(rng, (n, c, 5, 6), dtype, wrong_dtype)
    elif mutation == "weight dtype":
        w = break_dtype(rng, (co, 2, k, k), dtype, wrong_dtype)
    elif mutation == "bias dtype":
        b = break_dtype(rng, (co,), dtype, wrong_dtype)
    elif mutation == "bias shape":
        b = tensor(rng, data.draw(st.sampled_from([(co + 1,), (co - 1,), (1, co), ()])), dtype)
    elif mutation in ("stride", "dilation"):
        kwargs[mutation] = bad
    elif mutation == "padding":
        kwargs["padding"] = data.draw(st.sampled_from([-1, (0, -2), "full", "SAME", "", 1.5, None, (1, 1, 1), NAN]))
    elif mutation == "same with stride":
        kwargs.update(padding="same", stride=data.draw(st.sampled_from([2, (1, 2), (3, 1)])))
    elif mutation == "kernel too big":
        w = tensor(rng, (co, 2, 7, 3), dtype)  # 7 rows > 5 input rows, no padding
    elif mutation == "input type":
        x = data.draw(st.sampled_from([x.data, x.data.tolist(), None, 3.0]))
    elif mutation == "weight type":
        w = data.draw(st.sampled_from([w.data, w.data.tolist(), None]))
    elif mutation == "bias type":
        b = data.draw(st.sampled_from([b.data, b.data.tolist(), 1.0]))
    fn = F.conv2d_relu if relu else F.conv2d
    expect_error(fn.__name__, fn, x, w, b, **kwargs)


# --------------------------------------------------------------------------- linear

LINEAR_MUTATIONS = [
    "weight ndim",
    "features",
    "bias shape",
    "input dtype",
    "weight dtype",
    "bias dtype",
    "input 0-d",
    "input type",
    "weight type",
]


@pytest.mark.parametrize("mutation", LINEAR_MUTATIONS)
@given(dtype=dtypes, seed=seeds, wrong_dtype=wrong_dtypes, relu=st.booleans(), data=st.data())
def test_linear(mutation, dtype, seed, wrong_dtype, relu, data):
    rng = rng_of(seed)
    k, o = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x, w, b = tensor(rng, (3, k), dtype), tensor(rng, (o, k), dtype), tensor(rng, (o,), dtype)
    if mutation == "weight ndim":
        w = tensor(rng, data.draw(st.sampled_from([(k,), (o, k, 1), ()])), dtype)
    elif mutation == "features":
        x = tensor(rng, (3, k + data.draw(st.sampled_from([-1, 1, 2]))), dtype)
    elif mutation == "bias shape":
        b = tensor(rng, data.draw(st.sampled_from([(o + 1,), (1, o), ()])), dtype)
    elif mutation == "input dtype":
        x = break_dtype(rng, (3, k), dtype, wrong_dtype)
    elif mutation == "weight dtype":
        w = break_dtype(rng, (o, k), dtype, wrong_dtype)
    elif mutation == "bias dtype":
        b = break_dtype(rng, (o,), dtype, wrong_dtype)
    elif mutation == "input 0-d":
        x = tensor(rng, (), dtype)
    elif mutation == "input type":
        x = data.draw(st.sampled_from([x.data, x.data.tolist(), None]))
    elif mutation == "weight type":
        w = data.draw(st.sampled_from([w.data, None]))
    fn = F.linear_relu if relu else F.linear
    expect_error(fn.__name__, fn, x, w, b)


# --------------------------------------------------------------------------- pooling

POOL_MUTATIONS = [
    "input ndim",
    "empty plane",
    "input dtype",
    "input type",
    "kernel_size",
    "stride",
    "padding",
    "padding over half",
    "dilation",
    "window too big",
]


# invalid for a window of kernel_size 2 over a 6 x 5 input (None and () mean the default
# stride, a one-element tuple is PyTorch's spelling of a pair)
POOL_BAD_VALUES = {
    "kernel_size": [0, -1, (2, 0), 1.5, "2", None, True, (1, 2, 3), (), NAN, INF],
    "stride": [0, -1, (1, 0), 1.5, "2", True, (1, 2, 3), NAN],
    "padding": [-1, (0, -1), 2, (2, 0), 1.5, "1", None, (1, 1, 1), NAN],
    "dilation": [0, -1, (1, 0), 1.5, "1", None, (1, 1, 1), NAN],
}


@pytest.mark.parametrize("mutation", POOL_MUTATIONS)
@given(kind=st.sampled_from(["max", "avg"]), dtype=dtypes, seed=seeds, wrong_dtype=wrong_dtypes, data=st.data())
def test_max_and_avg_pool2d(mutation, kind, dtype, seed, wrong_dtype, data):
    rng = rng_of(seed)
    x = tensor(rng, (2, 3, 6, 5), dtype)
    kwargs = dict(kernel_size=2, stride=None, padding=0)
    if kind == "max":
        kwargs["dilation"] = 1
    if mutation == "input ndim":
        x = tensor(rng, data.draw(st.sampled_from([(), (5,), (6, 5), (1, 2, 3, 6, 5)])), dtype)
    elif mutation == "empty plane":
        x = tensor(rng, data.draw(st.sampled_from([(2, 0, 6, 5), (2, 3, 0, 5), (3, 6, 0)])), dtype)
    elif mutation == "input dtype":
        x = break_dtype(rng, (2, 3, 6, 5), dtype, wrong_dtype)
        if wrong_dtype == "other float":
            return  # one tensor: either float dtype is valid
    elif mutation == "input type":
        x = x.data
    elif mutation in POOL_BAD_VALUES:
        if mutation == "dilation" and kind == "avg":
            return  # avg_pool2d has no dilation
        kwargs[mutation] = data.draw(st.sampled_from(POOL_BAD_VALUES[mutation]))
    elif mutation == "padding over half":
        kwargs.update(kernel_size=data.draw(st.sampled_from([1, 2, 3])), padding=2)
    elif mutation == "window too big":
        kwargs["kernel_size"] = data.draw(st.sampled_from([7, (7, 1), (1, 6)]))
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    expect_error(fn.__name__, fn, x, **kwargs)


@pytest.mark.parametrize("mutation", ["divisor zero", "divisor type", "output_size"])
@given(dtype=dtypes, seed=seeds, data=st.data())
def test_avg_and_adaptive_pool_options(mutation, dtype, seed, data):
    x = tensor(rng_of(seed), (2, 3, 6, 5), dtype)
    if mutation == "divisor zero":
        expect_error("avg_pool2d", F.avg_pool2d, x, 2, divisor_override=0)
    elif mutation == "divisor type":
        expect_error("avg_pool2d", F.avg_pool2d, x, 2, divisor_override=data.draw(st.sampled_from([1.5, "2", NAN])))
    else:
        size = data.draw(st.sampled_from([-1, (2, -1), (1, 2, 3), 1.5, "3", (NAN, 2)]))
        expect_error("adaptive_avg_pool2d", F.adaptive_avg_pool2d, x, size)


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"])
@given(
    mutation=st.sampled_from(["dtype", "type", "dim", "softmax dtype", "slope"]),
    seed=seeds,
    wrong_dtype=st.sampled_from([np.int64, np.int32, np.bool_, np.float16]),
    data=st.data(),
)
def test_activations(name, mutation, seed, wrong_dtype, data):
    rng = rng_of(seed)
    x, kwargs = tensor(rng, (2, 3)), {}
    if name in ("softmax", "log_softmax"):
        kwargs["dim"] = 1
    if mutation == "dtype":
        x = break_dtype(rng, (2, 3), np.float32, wrong_dtype)
    elif mutation == "type":
        x = data.draw(st.sampled_from([x.data, x.data.tolist(), 1.0, None]))
    elif mutation == "dim" and "dim" in kwargs:
        kwargs["dim"] = data.draw(st.sampled_from([2, -3, 1.0, "1", (0, 1)]))
    elif mutation == "softmax dtype" and "dim" in kwargs:
        kwargs["dtype"] = data.draw(st.sampled_from([np.int64, np.float16, "int32"]))
    elif mutation == "slope" and name == "leaky_relu":
        kwargs["negative_slope"] = data.draw(st.sampled_from(["0.1", None, [0.1], True]))
    else:
        return  # the mutation does not apply to this function
    expect_error(name, getattr(F, name), x, **kwargs)


# --------------------------------------------------------------------------- losses

CLASS_MUTATIONS = [
    "target range",
    "target dtype",
    "target shape",
    "weight shape",
    "reduction",
    "ignore_index type",
    "input 0-d",
    "input dtype",
    "target type",
]


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("mutation", CLASS_MUTATIONS + ["smoothing"])
@given(dtype=dtypes, seed=seeds, data=st.data())
def test_class_losses(name, mutation, dtype, seed, data):
    rng = rng_of(seed)
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    x = tensor(rng, (n, c), dtype)
    target = fastgrad.tensor(rng.integers(0, c, size=n))
    kwargs = {}
    if mutation == "target range":
        bad = data.draw(st.sampled_from([c, c + 5, -1, -101, 2**40]))
        target.data[data.draw(st.integers(0, n - 1))] = bad
    elif mutation == "target dtype":
        target = fastgrad.tensor(target.data.astype(data.draw(st.sampled_from([np.float32, np.float64]))))
    elif mutation == "target shape":
        target = fastgrad.tensor(rng.integers(0, c, size=data.draw(st.sampled_from([(n + 1,), (n, 1), ()]))))
    elif mutation == "weight shape":
        kwargs["weight"] = tensor(rng, data.draw(st.sampled_from([(c + 1,), (1, c), ()])), dtype)
    elif mutation == "reduction":
        kwargs["reduction"] = data.draw(st.sampled_from(["avg", "", None, "MEAN", 1]))
    elif mutation == "ignore_index type":
        kwargs["ignore_index"] = data.draw(st.sampled_from([1.5, "x", None]))
    elif mutation == "input 0-d":
        x = tensor(rng, (), dtype)
    elif mutation == "input dtype":
        x = break_dtype(rng, (n, c), dtype, data.draw(st.sampled_from([np.int64, np.float16])))
    elif mutation == "target type":
        target = data.draw(st.sampled_from([target.data.tolist(), None, 1]))
    elif mutation == "smoothing":
        if name == "nll_loss":
            return
        kwargs["label_smoothing"] = data.draw(st.sampled_from([-0.1, 1.5, NAN, INF, -INF, "0.1"]))
    expect_error(name, getattr(F, name), x, target, **kwargs)


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("mutation", ["shape", "dtype", "reduction", "type", "weight", "pos_weight"])
@given(dtype=dtypes, seed=seeds, data=st.data())
def test_elementwise_losses(name, mutation, dtype, seed, data):
    rng = rng_of(seed)
    x, y = tensor(rng, (3, 4), dtype), fastgrad.tensor(rng.random((3, 4)), dtype=dtype)
    kwargs = {}
    if mutation == "shape":
        y = fastgrad.tensor(rng.random(data.draw(st.sampled_from([(4, 3), (3, 5), (12,), ()]))), dtype=dtype)
    elif mutation == "dtype":
        y = fastgrad.tensor(rng.random((3, 4)), dtype=data.draw(st.sampled_from([other_float(dtype), np.int64])))
    elif mutation == "reduction":
        kwargs["reduction"] = data.draw(st.sampled_from(["avg", None, "SUM"]))
    elif mutation == "type":
        x = x.data.tolist()
    elif name == "mse_loss":
        return  # mse_loss has no weights
    elif mutation == "weight":
        kwargs["weight"] = tensor(rng, data.draw(st.sampled_from([(2, 4), (5,), (3, 4, 2)])), dtype)
    else:
        kwargs["pos_weight"] = tensor(rng, data.draw(st.sampled_from([(3,), (5,), (2, 4)])), dtype)
    expect_error(name, getattr(F, name), x, y, **kwargs)


# --------------------------------------------------------------------------- batch norm, dropout


@pytest.mark.parametrize(
    "mutation",
    [
        "input ndim",
        "stats shape",
        "stats dtype",
        "one stat",
        "eval without stats",
        "one value",
        "weight shape",
        "momentum",
        "eps",
        "input dtype",
    ],
)
@given(dtype=dtypes, seed=seeds, data=st.data())
def test_batch_norm(mutation, dtype, seed, data):
    """Includes NaN/inf eps and momentum: they turn every output into NaN."""
    rng = rng_of(seed)
    c = data.draw(st.integers(1, 3))
    x = tensor(rng, (4, c, 3), dtype)
    mean, var = fastgrad.zeros(c, dtype=dtype), fastgrad.ones(c, dtype=dtype)
    kwargs = dict(training=data.draw(st.booleans()))
    if mutation == "input ndim":
        x = tensor(rng, data.draw(st.sampled_from([(), (4,)])), dtype)
    elif mutation == "stats shape":
        mean = fastgrad.zeros(data.draw(st.sampled_from([c + 1, 1 if c > 1 else 2])), dtype=dtype)
    elif mutation == "stats dtype":
        var = fastgrad.ones(c, dtype=other_float(dtype))
    elif mutation == "one stat":
        mean, var = data.draw(st.sampled_from([(mean, None), (None, var)]))
    elif mutation == "eval without stats":
        mean = var = None
        kwargs["training"] = False
    elif mutation == "one value":
        x = tensor(rng, data.draw(st.sampled_from([(1, c), (1, c, 1)])), dtype)
        kwargs["training"] = True
    elif mutation == "weight shape":
        kwargs["weight"] = tensor(rng, (c + 1,), dtype)
    elif mutation in ("momentum", "eps"):
        kwargs[mutation] = data.draw(st.sampled_from([NAN, INF, -INF, None, "x"]))
    elif mutation == "input dtype":
        x = break_dtype(rng, (4, c, 3), dtype, data.draw(st.sampled_from([np.int64, np.float16])))
    expect_error("batch_norm", F.batch_norm, x, mean, var, **kwargs)


@given(p=st.sampled_from([-0.1, 1.01, NAN, INF, "0.5", None, True]), seed=seeds)
def test_dropout(p, seed):
    expect_error("dropout", F.dropout, tensor(rng_of(seed), (3, 4)), p)


# --------------------------------------------------------------------------- layers

LAYER_CONSTRUCTIONS = [  # (layer, what is wrong, construction)
    ("Conv2d", "in_channels 0", lambda: nn.Conv2d(0, 4, 3)),
    ("Conv2d", "kernel_size 0", lambda: nn.Conv2d(3, 4, 0)),
    ("Conv2d", "groups vs in_channels", lambda: nn.Conv2d(3, 4, 3, groups=2)),
    ("Conv2d", "groups vs out_channels", lambda: nn.Conv2d(4, 3, 3, groups=2)),
    ("Conv2d", "stride 0", lambda: nn.Conv2d(3, 4, 3, stride=0)),
    ("Conv2d", "padding -1", lambda: nn.Conv2d(3, 4, 3, padding=-1)),
    ("Conv2d", "padding 'full'", lambda: nn.Conv2d(3, 4, 3, padding="full")),
    ("Conv2d", "same with stride", lambda: nn.Conv2d(3, 4, 3, padding="same", stride=2)),
    ("Conv2d", "dilation 0", lambda: nn.Conv2d(3, 4, 3, dilation=0)),
    ("Conv2d", "padding_mode", lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect")),
    ("Conv2d", "in_channels 3.5", lambda: nn.Conv2d(3.5, 4, 3)),
    ("Conv2d", "dtype int64", lambda: nn.Conv2d(3, 4, 3, dtype=np.int64)),
    ("Linear", "in_features -1", lambda: nn.Linear(-1, 3)),
    ("Linear", "out_features -2", lambda: nn.Linear(3, -2)),
    ("Linear", "in_features 2.5", lambda: nn.Linear(2.5, 3)),
    ("Linear", "dtype float16", lambda: nn.Linear(3, 3, dtype=np.float16)),
    ("BatchNorm", "num_features 0", lambda: nn.BatchNorm2d(0)),
    ("BatchNorm", "num_features -3", lambda: nn.BatchNorm1d(-3)),
    ("BatchNorm", "eps 0", lambda: nn.BatchNorm2d(3, eps=0)),
    ("BatchNorm", "eps negative", lambda: nn.BatchNorm2d(3, eps=-1e-5)),
    ("BatchNorm", "eps nan", lambda: nn.BatchNorm1d(3, eps=NAN)),
    ("BatchNorm", "eps inf", lambda: nn.BatchNorm1d(3, eps=INF)),
    ("BatchNorm", "momentum 1.5", lambda: nn.BatchNorm2d(3, momentum=1.5)),
    ("BatchNorm", "momentum nan", lambda: nn.BatchNorm2d(3, momentum=NAN)),
    ("BatchNorm", "momentum negative", lambda: nn.BatchNorm2d(3, momentum=-0.1)),
    ("Dropout", "p 1.5", lambda: nn.Dropout(1.5)),
    ("Dropout", "p -0.5", lambda: nn.Dropout(-0.5)),
    ("Dropout", "p nan", lambda: nn.Dropout(NAN)),
    ("CrossEntropyLoss", "label_smoothing 2", lambda: nn.CrossEntropyLoss(label_smoothing=2.0)),
    ("CrossEntropyLoss", "label_smoothing nan", lambda: nn.CrossEntropyLoss(label_smoothing=NAN)),
    ("MSELoss", "reduction 'avg'", lambda: nn.MSELoss(reduction="avg")),
    ("NLLLoss", "reduction None", lambda: nn.NLLLoss(reduction=None)),
]
# PyTorch's wording names the setting, not the layer: accepted for these
MESSAGE_NAMES = {
    "Dropout": ("dropout",),
    "CrossEntropyLoss": ("label_smoothing",),
    "MSELoss": ("reduction",),
    "NLLLoss": ("reduction",),
}


@pytest.mark.parametrize(
    "layer, wrong, build", LAYER_CONSTRUCTIONS, ids=[f"{layer}-{wrong}" for layer, wrong, _ in LAYER_CONSTRUCTIONS]
)
def test_layer_construction(layer, wrong, build):
    """Bad settings raise at construction, with a message that names the layer (or, for
    dropout and the losses, the setting, as PyTorch's messages do)."""
    expect_error(MESSAGE_NAMES.get(layer, (layer,)), build)


@pytest.mark.parametrize(
    "case",
    [
        "conv channels",
        "conv ndim",
        "linear features",
        "linear 0-d",
        "bn channels",
        "bn ndim",
        "pool ndim",
        "flatten ndim",
    ],
)
@given(seed=seeds)
def test_layer_wrong_input(case, seed):
    rng = rng_of(seed)
    layers = {
        "conv channels": (nn.Conv2d(3, 4, 3), (2, 4, 8, 8)),
        "conv ndim": (nn.Conv2d(3, 4, 3), (3, 8)),
        "linear features": (nn.Linear(5, 2), (4, 6)),
        "linear 0-d": (nn.Linear(5, 2), ()),
        "bn channels": (nn.BatchNorm2d(3), (2, 4, 5, 5)),
        "bn ndim": (nn.BatchNorm1d(3), (2, 3, 4, 5)),
        "pool ndim": (nn.MaxPool2d(2), (4, 4)),
        "flatten ndim": (nn.Flatten(2, 3), (2, 3)),
    }
    layer, shape = layers[case]
    expect_error(type(layer).__name__, layer, tensor(rng, shape))


# --------------------------------------------------------------------------- optimizers

# hyperparameter -> the words of PyTorch's "Invalid ..." message
HYPERS = {
    "SGD": {"lr": "learning rate", "momentum": "momentum", "dampening": "dampening", "weight_decay": "weight_decay"},
    "Adam": {"lr": "learning rate", "eps": "epsilon", "beta1": "beta", "beta2": "beta", "weight_decay": "weight_decay"},
    "AdamW": {
        "lr": "learning rate",
        "eps": "epsilon",
        "beta1": "beta",
        "beta2": "beta",
        "weight_decay": "weight_decay",
    },
    "RMSprop": {
        "lr": "learning rate",
        "eps": "epsilon",
        "alpha": "alpha",
        "momentum": "momentum",
        "weight_decay": "weight_decay",
    },
}
optimizer_hypers = pytest.mark.parametrize(
    "which", [(opt, h) for opt in sorted(HYPERS) for h in sorted(HYPERS[opt])], ids="-".join
)


def build_optimizer(name, hyper, value, where):
    """optimizer ``name`` with ``hyper`` = ``value`` given to the constructor, to a param
    group, or to add_param_group."""
    params = [fastgrad.randn(3, requires_grad=True)]
    kwargs = {}
    if hyper in ("beta1", "beta2"):
        kwargs["betas"] = (value, 0.999) if hyper == "beta1" else (0.9, value)
    else:
        kwargs[hyper] = value
    cls = getattr(optim, name)
    if where == "constructor":
        return cls(params, **kwargs)
    if where == "group":
        return cls([{"params": params, **kwargs}])
    opt = cls([fastgrad.randn(2, requires_grad=True)])
    opt.add_param_group({"params": params, **kwargs})
    return opt


where_choices = st.sampled_from(["constructor", "group", "add_param_group"])


@optimizer_hypers
@given(where=where_choices)
def test_optimizer_nan_hyperparameters(which, where):
    """lr=nan must raise "Invalid learning rate", and every other NaN its own error."""
    name, hyper = which
    expect_error(f"Invalid {HYPERS[name][hyper]}", build_optimizer, name, hyper, NAN, where)


@optimizer_hypers
@given(where=where_choices, sign=st.sampled_from([1, -1]))
def test_optimizer_infinite_hyperparameters(which, where, sign):
    """An infinite hyperparameter makes every updated parameter inf or NaN."""
    name, hyper = which
    expect_error(f"Invalid {HYPERS[name][hyper]}", build_optimizer, name, hyper, sign * INF, where)


@optimizer_hypers
@given(where=where_choices, value=st.sampled_from([-1e-3, -1.0, -1e30]))
def test_optimizer_negative_hyperparameters(which, where, value):
    name, hyper = which
    if hyper == "dampening":
        return  # PyTorch does not bound dampening: 1 - dampening is any real factor
    expect_error(f"Invalid {HYPERS[name][hyper]}", build_optimizer, name, hyper, value, where)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("beta", ["beta1", "beta2"])
@given(value=st.sampled_from([1.0, 1.5]), where=where_choices)
def test_optimizer_betas_at_least_one(name, beta, value, where):
    expect_error("Invalid beta", build_optimizer, name, beta, value, where)


@pytest.mark.parametrize(
    "case",
    [
        "nesterov without momentum",
        "nesterov with dampening",
        "empty",
        "tensor",
        "set",
        "non-leaf",
        "integer param",
        "duplicate",
    ],
)
def test_optimizer_construction(case):
    p = fastgrad.randn(3, requires_grad=True)
    builds = {
        "nesterov without momentum": lambda: optim.SGD([p], lr=0.1, nesterov=True),
        "nesterov with dampening": lambda: optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        "empty": lambda: optim.Adam([]),
        "tensor": lambda: optim.SGD(p, lr=0.1),
        "set": lambda: optim.SGD({p}, lr=0.1),
        "non-leaf": lambda: optim.SGD([p * 2], lr=0.1),
        "integer param": lambda: optim.SGD([fastgrad.tensor([1, 2])], lr=0.1),
        "duplicate": lambda: optim.RMSprop([p, p]),
    }
    expect_error(("nesterov", "param", "optimize", "tensor", "iterable", "ordered", "empty"), builds[case])
