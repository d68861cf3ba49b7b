"""fastgrad.nn layers and fastgrad.optim optimizers on random valid configurations:
the compiled kernels, the reference kernels and PyTorch (when installed), started from
the same state, must give the same outputs, gradients, running statistics and
parameter updates. Inputs are views (flipped, transposed, strided, expanded)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastgrad
import fastgrad.optim
from fuzz_api import check_module, make_arg, torch, views
from fuzz_common import (
    RTOL,
    backend,
    compiled_available,
    conv_cases,
    dtypes,
    magnitude,
    pool_cases,
    rng_of,
    seeds,
    value_kinds,
)


@given(
    case=conv_cases(allow_extra=False),
    dtype=dtypes,
    seed=seeds,
    use_bias=st.booleans(),
    then_relu=st.booleans(),
    data=st.data(),
)
def test_conv2d_layer(case, dtype, seed, use_bias, then_relu, data):
    """Conv2d alone, and followed by a ReLU in a Sequential (run as one fused call)."""
    n, c, h, w = case.x_shape
    co, _, kh, kw = case.w_shape
    kwargs = dict(
        kernel_size=(kh, kw),
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        bias=use_bias,
    )

    def build(lib, dt):
        conv = lib.Conv2d(c, co, dtype=dt, **kwargs)
        return lib.Sequential(conv, lib.ReLU()) if then_relu else conv

    arg = make_arg(rng_of(seed), case.x_shape, dtype, data.draw(views(case.x_shape)))
    _, _, ho, wo = case.y_shape
    scale = 4 * max(case.depth, n * ho * wo, case.fan_out) * magnitude(arg.leaf)
    check_module("Conv2d", build, [arg], dtype, scale, seed=seed)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")
@given(
    lead=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    k=st.integers(0, 6),
    o=st.integers(0, 6),
    dtype=dtypes,
    seed=seeds,
    use_bias=st.booleans(),
    then_relu=st.booleans(),
    data=st.data(),
)
def test_linear_layer(lead, k, o, dtype, seed, use_bias, then_relu, data):
    def build(lib, dt):
        linear = lib.Linear(k, o, bias=use_bias, dtype=dt)
        return lib.Sequential(linear, lib.ReLU()) if then_relu else linear

    shape = tuple(lead) + (k,)
    arg = make_arg(rng_of(seed), shape, dtype, data.draw(views(shape)))
    scale = 4 * max(k, o, int(np.prod(lead)), 1) * magnitude(arg.leaf)
    check_module("Linear", build, [arg], dtype, scale, seed=seed)


@given(
    case=pool_cases(dilation=False, min_batch=1),
    kind=st.sampled_from(["max", "avg"]),
    dtype=dtypes,
    seed=seeds,
    value_kind=value_kinds,
    data=st.data(),
)
def test_pooling_layers(case, kind, dtype, seed, value_kind, data):
    kwargs = dict(kernel_size=case.kernel, stride=case.stride, padding=case.pad, ceil_mode=case.ceil_mode)

    def build(lib, dt):
        return lib.MaxPool2d(**kwargs) if kind == "max" else lib.AvgPool2d(**kwargs)

    arg = make_arg(rng_of(seed), case.x_shape, dtype, data.draw(views(case.x_shape)), value_kind)
    check_module(f"{kind}_pool2d", build, [arg], dtype, 40 * magnitude(arg.leaf), seed=seed)


@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    out=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    dtype=dtypes,
    seed=seeds,
    data=st.data(),
)
def test_adaptive_avg_pool2d_layer(shape, out, dtype, seed, data):
    arg = make_arg(rng_of(seed), shape, dtype, data.draw(views(shape)))
    check_module(
        "AdaptiveAvgPool2d",
        lambda lib, dt: lib.AdaptiveAvgPool2d(out),
        [arg],
        dtype,
        40 * magnitude(arg.leaf),
        seed=seed,
    )


@given(
    two_d=st.booleans(),
    n=st.integers(2, 4),
    c=st.integers(1, 3),
    extra=st.integers(1, 3),
    dtype=dtypes,
    seed=seeds,
    affine=st.booleans(),
    track=st.booleans(),
    momentum=st.sampled_from([None, 0.0, 0.1, 1.0]),
    eps=st.sampled_from([1e-5, 0.1]),
    modes=st.lists(st.sampled_from(["train", "eval"]), min_size=1, max_size=3),
    data=st.data(),
)
def test_batch_norm_layers(two_d, n, c, extra, dtype, seed, affine, track, momentum, eps, modes, data):
    """BatchNorm1d/2d over a few train/eval runs: the running statistics (and
    num_batches_tracked, and momentum=None's cumulative average) must follow PyTorch."""
    shape = (n, c, extra, extra + 1) if two_d else ((n, c, extra) if extra > 1 else (n, c))

    def build(lib, dt):
        layer = lib.BatchNorm2d if two_d else lib.BatchNorm1d
        return layer(c, eps=eps, momentum=momentum, affine=affine, track_running_stats=track, dtype=dt)

    arg = make_arg(rng_of(seed), shape, dtype, data.draw(views(shape)))
    # PyTorch 2.13's backward mishandles some non-contiguous inputs in training mode as in
    # evaluation mode (see test_functional.check_batch_norm): it gets a contiguous copy
    arg.torch_contiguous = True
    scale = 40 * n * extra * extra * magnitude(arg.leaf) ** 2 / eps
    check_module("BatchNorm", build, [arg], dtype, scale, modes=modes, seed=seed)


ACTIVATIONS = {
    "ReLU": lambda lib: lib.ReLU(),
    "LeakyReLU": lambda lib: lib.LeakyReLU(0.2),
    "Sigmoid": lambda lib: lib.Sigmoid(),
    "Tanh": lambda lib: lib.Tanh(),
    "Softmax": lambda lib: lib.Softmax(dim=-1),
    "LogSoftmax": lambda lib: lib.LogSoftmax(dim=1),
    "Flatten": lambda lib: lib.Flatten(),
    "Identity": lambda lib: lib.Identity(),
    "Dropout": lambda lib: lib.Dropout(0.5),  # run in eval mode: the identity
}


@given(
    name=st.sampled_from(sorted(ACTIVATIONS)),
    shape=st.lists(st.integers(0, 4), min_size=2, max_size=4).map(tuple),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    data=st.data(),
)
def test_activation_layers(name, shape, dtype, seed, kind, data):
    arg = make_arg(rng_of(seed), shape, dtype, data.draw(views(shape)), kind)
    check_module(
        name,
        lambda lib, dt: ACTIVATIONS[name](lib),
        [arg],
        dtype,
        40 * max(shape) * magnitude(arg.leaf),
        modes=("eval",),
        seed=seed,
    )


@given(
    loss=st.sampled_from(["MSELoss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss"]),
    n=st.integers(0, 4),
    c=st.integers(1, 5),
    dtype=dtypes,
    seed=seeds,
    reduction=st.sampled_from(["mean", "sum", "none"]),
    data=st.data(),
)
def test_loss_layers(loss, n, c, dtype, seed, reduction, data):
    rng = rng_of(seed)
    arg = make_arg(rng, (n, c), dtype, data.draw(views((n, c))))
    if loss in ("CrossEntropyLoss", "NLLLoss"):
        target = rng.integers(0, c, size=n).astype(np.int64)
    elif loss == "BCEWithLogitsLoss":
        target = rng.random((n, c)).astype(dtype)
    else:
        target = rng.standard_normal((n, c)).astype(dtype)

    def call(module, x):
        is_torch = torch is not None and isinstance(module, torch.nn.Module)
        return module(x, torch.from_numpy(target) if is_torch else fastgrad.tensor(target))

    check_module(
        loss,
        lambda lib, dt: getattr(lib, loss)(reduction=reduction),
        [arg],
        dtype,
        40 * (n + 1) * (c + 1) * (magnitude(arg.leaf) + 1) ** 2,
        call=call,
        seed=seed,
    )


# --------------------------------------------------------------------------- optimizers

hyper = st.floats(0, 0.5, allow_nan=False)
OPTIMIZERS = {
    "SGD": st.fixed_dictionaries(
        {
            "lr": hyper,
            "momentum": st.sampled_from([0.0, 0.9]),
            "dampening": st.sampled_from([0.0, 0.1]),
            "weight_decay": hyper,
            "nesterov": st.booleans(),
            "maximize": st.booleans(),
        }
    ).filter(lambda h: not h["nesterov"] or (h["momentum"] > 0 and h["dampening"] == 0)),
    "Adam": st.fixed_dictionaries(
        {
            "lr": hyper,
            "betas": st.tuples(st.floats(0, 0.99), st.floats(0, 0.999)),
            "eps": st.sampled_from([1e-8, 1e-3]),
            "weight_decay": hyper,
            "amsgrad": st.booleans(),
            "maximize": st.booleans(),
        }
    ),
    "AdamW": st.fixed_dictionaries(
        {
            "lr": hyper,
            "betas": st.tuples(st.floats(0, 0.99), st.floats(0, 0.999)),
            "eps": st.sampled_from([1e-8, 1e-3]),
            "weight_decay": hyper,
            "amsgrad": st.booleans(),
            "maximize": st.booleans(),
        }
    ),
    # alpha = 0 with centered=True makes sqrt(g*g - g*g): PyTorch's fused multiply-add
    # leaves a rounding error there (often a NaN), fastgrad's exact 0: both are fine
    "RMSprop": st.fixed_dictionaries(
        {
            "lr": hyper,
            "alpha": st.floats(0.1, 0.999),
            "eps": st.sampled_from([1e-8, 1e-3]),
            "weight_decay": hyper,
            "momentum": st.sampled_from([0.0, 0.5]),
            "centered": st.booleans(),
            "maximize": st.booleans(),
        }
    ),
}


def run_optimizer(lib, name, hypers, start, grads_per_step, dtype):
    """Parameters after each step of optimizer ``name`` of ``lib`` (fastgrad or torch)."""
    if lib is fastgrad:
        params = [fastgrad.tensor(p, dtype=dtype, requires_grad=True) for p in start]
        optimizer = getattr(fastgrad.optim, name)(params, **hypers)
    else:
        params = [torch.tensor(p, requires_grad=True) for p in start]
        optimizer = getattr(torch.optim, name)(params, foreach=False, **hypers)
    history = []
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            if g is None:
                p.grad = None  # a parameter without a gradient is left alone
            else:
                p.grad = fastgrad.tensor(g, dtype=dtype) if lib is fastgrad else torch.tensor(g)
        optimizer.step()
        history.append([np.array(p.data if lib is fastgrad else p.detach().numpy()) for p in params])
    return history


@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    data=st.data(),
    dtype=dtypes,
    seed=seeds,
    shapes=st.lists(st.lists(st.integers(0, 4), max_size=3).map(tuple), min_size=1, max_size=3),
    steps=st.integers(1, 4),
)
def test_optimizers(name, data, dtype, seed, shapes, steps):
    hypers = data.draw(OPTIMIZERS[name])
    rng = rng_of(seed)
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [
        [None if rng.random() < 0.2 else rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)
    ]
    runs = {}
    for side in (["compiled"] if compiled_available() else []) + ["reference"]:
        with backend(side):
            runs[side] = run_optimizer(fastgrad, name, hypers, start, grads, dtype)
    if "compiled" in runs:  # the kernels are twins to the bit
        for step, (a, b) in enumerate(zip(runs["compiled"], runs["reference"])):
            for i, (x, y) in enumerate(zip(a, b)):
                np.testing.assert_array_equal(x, y, err_msg=f"{name} step {step} param {i}")
    if torch is not None:
        rtol = RTOL[np.dtype(dtype)] * 10
        expected = run_optimizer(torch, name, hypers, start, grads, dtype)
        for step, (a, b) in enumerate(zip(runs["reference"], expected)):
            for i, (x, y) in enumerate(zip(a, b)):
                np.testing.assert_allclose(
                    x, y, rtol=rtol, atol=rtol, err_msg=(f"{name}({hypers}) step {step} param {i}: fastgrad vs torch")
                )


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")
@pytest.mark.parametrize("shape", [(4, 0), (2, 3, 0), (0, 0, 0)])
def test_linear_layer_without_input_features(shape):
    """Linear(0, 3) maps (*, 0) to (*, 3) filled with the bias, as PyTorch does, for any
    number of leading dimensions (the fuzzed test above reaches this only rarely)."""
    layer = fastgrad.nn.Linear(0, 3)
    out = layer(fastgrad.zeros(*shape))
    np.testing.assert_array_equal(out.data, np.broadcast_to(layer.bias.data, shape[:-1] + (3,)))
