"""A valid call of every kernel, as data: the arguments and the role of each one.

``SPECS[name]`` is (geometry strategy, builder). ``builder(geometry, dtype, rng)``
returns the argument list of one valid call and the roles of the arguments, so that
test code can break one argument of a known kind and rebuild the identical call for
each twin. Roles:

  in, out          a float array read / written (out also: in-out state)
  in?, out?        the same, where None is also valid
  ws               a conv workspace: a 1-D scratch array at least as long as the
                   compiled kernel asks (the reference ignores its length)
  int1, int0       an integer >= 1 / >= 0 (strides, kernel sizes / paddings)
  num              a float hyperparameter
  flag             a truth value (anything is valid)
  threads          n_threads, an integer >= 1
  target, index    an int64 array of class indices / of positions in a plane
  list_in, list_out  a list of float arrays (optimizers), read / updated in place
  fixed            not fuzzed (a kernel-kind string, a step count, ignore_index)
"""

import numpy as np
from hypothesis import strategies as st

from fuzz_common import compiled, conv_cases, pool_cases, random_array


def _arr(rng, shape, dtype):
    return random_array(rng, shape, dtype)


def _out(shape, dtype):
    return np.full(shape, np.nan, dtype)


# --------------------------------------------------------------------------- conv

CONV_PARAMS = ["int1", "int1", "int0", "int0", "int1", "int1", "int1"]


def _workspace(kind, case, dtype):
    """A workspace of exactly the size the compiled kernel asks (0 without it)."""
    size_of = compiled("conv2d_workspace_size")
    size = size_of(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1) if size_of else 0
    return np.zeros(size, dtype)


def _conv_forward(case, dtype, rng):
    x, w = _arr(rng, case.x_shape, dtype), _arr(rng, case.w_shape, dtype)
    b = _arr(rng, case.w_shape[:1], dtype)
    return (
        [x, w, b, _out(case.y_shape, dtype), *case.params, False, _workspace("forward", case, dtype), 1],
        ["in", "in", "in?", "out"] + CONV_PARAMS + ["flag", "ws", "threads"],
    )


def _conv_backward_input(case, dtype, rng):
    g, w = _arr(rng, case.y_shape, dtype), _arr(rng, case.w_shape, dtype)
    return (
        [g, w, _out(case.x_shape, dtype), *case.params, _workspace("backward_input", case, dtype), 1],
        ["in", "in", "out"] + CONV_PARAMS + ["ws", "threads"],
    )


def _conv_backward_weight(case, dtype, rng):
    x, g = _arr(rng, case.x_shape, dtype), _arr(rng, case.y_shape, dtype)
    return (
        [x, g, _out(case.w_shape, dtype), *case.params, _workspace("backward_weight", case, dtype), 1],
        ["in", "in", "out"] + CONV_PARAMS + ["ws", "threads"],
    )


def _conv_backward_bias(case, dtype, rng):
    return ([_arr(rng, case.y_shape, dtype), _out(case.w_shape[:1], dtype), 1], ["in", "out", "threads"])


def _conv_workspace_size(case, dtype, rng):
    return (
        ["forward", case.x_shape, case.w_shape, case.y_shape, *case.params, 1],
        ["fixed"] * 4 + CONV_PARAMS + ["threads"],
    )


convs = conv_cases(min_batch=1)

# --------------------------------------------------------------------------- pool


def _window(case):
    return list(case.kernel + case.stride + case.pad)


def _max_forward(case, dtype, rng):
    return (
        [
            _arr(rng, case.x_shape, dtype),
            _out(case.y_shape, dtype),
            np.full(case.y_shape, -1, np.int64),
            *_window(case),
            *case.dil,
            1,
        ],
        ["in", "out", "out"] + ["int1"] * 4 + ["int0"] * 2 + ["int1"] * 2 + ["threads"],
    )


def _max_backward(case, dtype, rng):
    n, c, h, w = case.x_shape
    indices = rng.integers(0, h * w, size=case.y_shape).astype(np.int64)
    return ([_arr(rng, case.y_shape, dtype), indices, _out(case.x_shape, dtype), 1], ["in", "index", "out", "threads"])


def _avg_forward(case, dtype, rng):
    return (
        [_arr(rng, case.x_shape, dtype), _out(case.y_shape, dtype), *_window(case), True, None, 1],
        ["in", "out"] + ["int1"] * 4 + ["int0"] * 2 + ["flag", "fixed", "threads"],
    )


def _avg_backward(case, dtype, rng):
    return (
        [_arr(rng, case.y_shape, dtype), _out(case.x_shape, dtype), *_window(case), False, 2, 1],
        ["in", "out"] + ["int1"] * 4 + ["int0"] * 2 + ["flag", "fixed", "threads"],
    )


def _adaptive_forward(shapes, dtype, rng):
    x_shape, y_shape = shapes
    return [_arr(rng, x_shape, dtype), _out(y_shape, dtype), 1], ["in", "out", "threads"]


def _adaptive_backward(shapes, dtype, rng):
    x_shape, y_shape = shapes
    return [_arr(rng, y_shape, dtype), _out(x_shape, dtype), 1], ["in", "out", "threads"]


pools = pool_cases(min_batch=1)
adaptive_shapes = st.tuples(
    st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)
).map(lambda s: ((s[0], s[1], s[2], s[3]), (s[0], s[1], s[4], s[5])))

# --------------------------------------------------------------------------- linear

matrices = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5))


def _linear_forward(nko, dtype, rng):
    n, k, o = nko
    return (
        [_arr(rng, (n, k), dtype), _arr(rng, (o, k), dtype), _arr(rng, (o,), dtype), _out((n, o), dtype), False, 1],
        ["in", "in", "in?", "out", "flag", "threads"],
    )


def _linear_backward_input(nko, dtype, rng):
    n, k, o = nko
    return (
        [_arr(rng, (n, o), dtype), _arr(rng, (o, k), dtype), _out((n, k), dtype), 1],
        ["in", "in", "out", "threads"],
    )


def _linear_backward_weight(nko, dtype, rng):
    n, k, o = nko
    return (
        [_arr(rng, (n, k), dtype), _arr(rng, (n, o), dtype), _out((o, k), dtype), 1],
        ["in", "in", "out", "threads"],
    )


def _linear_backward_bias(nko, dtype, rng):
    n, k, o = nko
    return [_arr(rng, (n, o), dtype), _out((o,), dtype), 1], ["in", "out", "threads"]


def _linear_backward(nko, dtype, rng):
    n, k, o = nko
    return (
        [
            _arr(rng, (n, k), dtype),
            _arr(rng, (n, o), dtype),
            _arr(rng, (n, o), dtype),
            _arr(rng, (o, k), dtype),
            _out((n, k), dtype),
            _out((o, k), dtype),
            _out((o,), dtype),
            1,
        ],
        ["in", "in", "in?", "in", "out?", "out?", "out?", "threads"],
    )


# --------------------------------------------------------------------------- activation

any_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
rows = st.tuples(st.integers(1, 4), st.integers(1, 6))


def _unary_forward(slope):
    def build(shape, dtype, rng):
        args = [_arr(rng, shape, dtype), _out(shape, dtype)] + ([0.1] if slope else []) + [1]
        return args, ["in", "out"] + (["num"] if slope else []) + ["threads"]

    return build


def _unary_backward(slope):
    def build(shape, dtype, rng):
        args = [_arr(rng, shape, dtype), _arr(rng, shape, dtype), _out(shape, dtype)]
        return args + ([0.1] if slope else []) + [1], (["in", "in", "out"] + (["num"] if slope else []) + ["threads"])

    return build


# --------------------------------------------------------------------------- loss

classes = st.tuples(st.integers(1, 5), st.integers(1, 5))


def _targets(rng, n, c):
    t = rng.integers(0, c, size=n).astype(np.int64)
    t[rng.random(n) < 0.3] = -100
    return t


def _cross_entropy(nc, dtype, rng):
    n, c = nc
    return (
        [
            _arr(rng, (n, c), dtype),
            _targets(rng, n, c),
            rng.uniform(0, 2, c).astype(dtype),
            -100,
            0.1,
            True,
            _out((n,), dtype),
            _out((n, c), dtype),
            1,
        ],
        ["in", "target", "in?", "fixed", "num", "flag", "out", "out?", "threads"],
    )


def _nll_forward(nc, dtype, rng):
    n, c = nc
    return (
        [_arr(rng, (n, c), dtype), _targets(rng, n, c), rng.uniform(0, 2, c).astype(dtype), -100, _out((n,), dtype), 1],
        ["in", "target", "in?", "fixed", "out", "threads"],
    )


def _nll_backward(nc, dtype, rng):
    n, c = nc
    return (
        [_targets(rng, n, c), rng.uniform(0, 2, c).astype(dtype), -100, _arr(rng, (n,), dtype), _out((n, c), dtype), 1],
        ["target", "in?", "fixed", "in", "out", "threads"],
    )


def _mse_forward(shape, dtype, rng):
    return (
        [_arr(rng, shape, dtype), _arr(rng, shape, dtype), _out(shape, dtype), _out(shape, dtype), 1],
        ["in", "in", "out", "out?", "threads"],
    )


def _mse_backward(shape, dtype, rng):
    return (
        [_arr(rng, shape, dtype), _arr(rng, shape, dtype), 0.5, _out(shape, dtype), 1],
        ["in", "in", "num", "out", "threads"],
    )


def _bce(nc, dtype, rng):
    n, c = nc
    return (
        [
            _arr(rng, (n, c), dtype),
            rng.random((n, c)).astype(dtype),
            rng.uniform(0, 2, (n, c)).astype(dtype),
            rng.uniform(0, 2, c).astype(dtype),
            0.5,
            _out((n, c), dtype),
            _out((n, c), dtype),
            1,
        ],
        ["in", "in", "in?", "in?", "num", "out?", "out?", "threads"],
    )


# --------------------------------------------------------------------------- norm

norm_shapes = st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(1, 4))


def _bn_train(shape, dtype, rng):
    c = shape[1]
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, (c,), dtype),
            _arr(rng, (c,), dtype),
            np.zeros(c, dtype),
            np.ones(c, dtype),
            0.1,
            1e-5,
            _out(shape, dtype),
            _out((c,), dtype),
            _out((c,), dtype),
            1,
        ],
        ["in", "in?", "in?", "out?", "out?", "num", "num", "out", "out", "out", "threads"],
    )


def _bn_eval(shape, dtype, rng):
    c = shape[1]
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, (c,), dtype),
            _arr(rng, (c,), dtype),
            np.zeros(c, dtype),
            np.ones(c, dtype),
            1e-5,
            _out(shape, dtype),
            _out((c,), dtype),
            1,
        ],
        ["in", "in?", "in?", "in", "in", "num", "out", "out", "threads"],
    )


def _bn_backward(shape, dtype, rng):
    c = shape[1]
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, shape, dtype),
            _arr(rng, (c,), dtype),
            _arr(rng, (c,), dtype),
            np.ones(c, dtype),
            True,
            _out(shape, dtype),
            _out((c,), dtype),
            _out((c,), dtype),
            1,
        ],
        ["in", "in", "in?", "in", "in", "flag", "out?", "out?", "out?", "threads"],
    )


# --------------------------------------------------------------------------- optim, engine

tensor_lists = st.lists(st.lists(st.integers(1, 3), max_size=2).map(tuple), min_size=1, max_size=3)


def _tensors(rng, shapes, dtype, positive=False):
    arrays = [_arr(rng, s, dtype) for s in shapes]
    for a in arrays if positive else ():
        np.abs(a, out=a)  # in place: a 0-d array stays an array
    return arrays


def _sgd(shapes, dtype, rng):
    return (
        [
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            0.1,
            0.9,
            0.0,
            0.01,
            False,
            False,
            False,
            1,
        ],
        ["list_out", "list_in", "list_out", "num", "num", "num", "num", "flag", "flag", "flag", "threads"],
    )


def _adam(shapes, dtype, rng):
    return (
        [
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype, True),
            _tensors(rng, shapes, dtype, True),
            2,
            1e-3,
            0.9,
            0.999,
            1e-8,
            0.01,
            True,
            False,
            False,
            1,
        ],
        [
            "list_out",
            "list_in",
            "list_out",
            "list_out",
            "list_out",
            "fixed",
            "num",
            "num",
            "num",
            "num",
            "num",
            "flag",
            "flag",
            "flag",
            "threads",
        ],
    )


def _rmsprop(shapes, dtype, rng):
    return (
        [
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype, True),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            1e-2,
            0.99,
            1e-8,
            0.0,
            0.5,
            True,
            False,
            1,
        ],
        [
            "list_out",
            "list_in",
            "list_out",
            "list_out",
            "list_out",
            "num",
            "num",
            "num",
            "num",
            "num",
            "flag",
            "flag",
            "threads",
        ],
    )


def _accumulate(shape, dtype, rng):
    return [_arr(rng, shape, dtype), _arr(rng, shape, dtype)], ["out", "in"]


SPECS = {
    "conv2d_forward": (convs, _conv_forward),
    "conv2d_backward_input": (convs, _conv_backward_input),
    "conv2d_backward_weight": (convs, _conv_backward_weight),
    "conv2d_backward_bias": (convs, _conv_backward_bias),
    "conv2d_workspace_size": (convs, _conv_workspace_size),
    "max_pool2d_forward": (pools, _max_forward),
    "max_pool2d_backward": (pools, _max_backward),
    "avg_pool2d_forward": (pool_cases(dilation=False, min_batch=1), _avg_forward),
    "avg_pool2d_backward": (pool_cases(dilation=False, min_batch=1), _avg_backward),
    "adaptive_avg_pool2d_forward": (adaptive_shapes, _adaptive_forward),
    "adaptive_avg_pool2d_backward": (adaptive_shapes, _adaptive_backward),
    "linear_forward": (matrices, _linear_forward),
    "linear_backward_input": (matrices, _linear_backward_input),
    "linear_backward_weight": (matrices, _linear_backward_weight),
    "linear_backward_bias": (matrices, _linear_backward_bias),
    "linear_backward": (matrices, _linear_backward),
    "relu_forward": (any_shapes, _unary_forward(False)),
    "relu_backward": (any_shapes, _unary_backward(False)),
    "leaky_relu_forward": (any_shapes, _unary_forward(True)),
    "leaky_relu_backward": (any_shapes, _unary_backward(True)),
    "sigmoid_forward": (any_shapes, _unary_forward(False)),
    "sigmoid_backward": (any_shapes, _unary_backward(False)),
    "tanh_forward": (any_shapes, _unary_forward(False)),
    "tanh_backward": (any_shapes, _unary_backward(False)),
    "softmax_forward": (rows, _unary_forward(False)),
    "softmax_backward": (rows, _unary_backward(False)),
    "log_softmax_forward": (rows, _unary_forward(False)),
    "log_softmax_backward": (rows, _unary_backward(False)),
    "cross_entropy_forward": (classes, _cross_entropy),
    "nll_loss_forward": (classes, _nll_forward),
    "nll_loss_backward": (classes, _nll_backward),
    "mse_loss_forward": (any_shapes, _mse_forward),
    "mse_loss_backward": (any_shapes, _mse_backward),
    "binary_cross_entropy_with_logits_forward": (classes, _bce),
    "batch_norm_forward_train": (norm_shapes, _bn_train),
    "batch_norm_forward_eval": (norm_shapes, _bn_eval),
    "batch_norm_backward": (norm_shapes, _bn_backward),
    "sgd_step": (tensor_lists, _sgd),
    "adam_step": (tensor_lists, _adam),
    "rmsprop_step": (tensor_lists, _rmsprop),
    "accumulate": (any_shapes, _accumulate),
}


# --------------------------------------------------------------------------- smooth activations, group norm,
# Adadelta and Adagrad


def _smooth_forward(extra, extra_roles):
    def build(shape, dtype, rng):
        return [_arr(rng, shape, dtype), _out(shape, dtype)] + extra + [1], ["in", "out"] + extra_roles + ["threads"]

    return build


def _smooth_backward(extra, extra_roles):
    def build(shape, dtype, rng):
        return (
            [_arr(rng, shape, dtype), _arr(rng, shape, dtype), _out(shape, dtype)] + extra + [1],
            ["in", "in", "out"] + extra_roles + ["threads"],
        )

    return build


def _prelu_forward(shape, dtype, rng):
    return (
        [_arr(rng, shape, dtype), _arr(rng, shape[1:2], dtype), _out(shape, dtype), 1],
        ["in", "in", "out", "threads"],
    )


def _prelu_backward(shape, dtype, rng):
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, shape[1:2], dtype),
            _arr(rng, shape, dtype),
            _out(shape, dtype),
            _out(shape[1:2], dtype),
            1,
        ],
        ["in", "in", "in", "out", "out", "threads"],
    )


def _layer_norm_forward(rk, dtype, rng):
    r, k = rk
    return (
        [
            _arr(rng, rk, dtype),
            _arr(rng, (k,), dtype),
            _arr(rng, (k,), dtype),
            1e-5,
            _out(rk, dtype),
            _out((r,), dtype),
            _out((r,), dtype),
            1,
        ],
        ["in", "in?", "in?", "num", "out", "out", "out", "threads"],
    )


def _layer_norm_backward(rk, dtype, rng):
    r, k = rk
    return (
        [
            _arr(rng, rk, dtype),
            _arr(rng, rk, dtype),
            _arr(rng, (k,), dtype),
            _arr(rng, (r,), dtype),
            np.abs(_arr(rng, (r,), dtype)),
            _out(rk, dtype),
            _out((k,), dtype),
            _out((k,), dtype),
            1,
        ],
        ["in", "in", "in?", "in", "in", "out", "out?", "out?", "threads"],
    )


group_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 4))


def _group_norm_forward(ngcs, dtype, rng):
    n, g, cg, s = ngcs
    shape = (n, g * cg, s)
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, (g * cg,), dtype),
            _arr(rng, (g * cg,), dtype),
            g,
            1e-5,
            _out(shape, dtype),
            _out((n, g), dtype),
            _out((n, g), dtype),
            1,
        ],
        ["in", "in?", "in?", "int1", "num", "out", "out", "out", "threads"],
    )


def _group_norm_backward(ngcs, dtype, rng):
    n, g, cg, s = ngcs
    shape = (n, g * cg, s)
    return (
        [
            _arr(rng, shape, dtype),
            _arr(rng, shape, dtype),
            _arr(rng, (g * cg,), dtype),
            _arr(rng, (n, g), dtype),
            np.abs(_arr(rng, (n, g), dtype)),
            g,
            _out(shape, dtype),
            _out((g * cg,), dtype),
            _out((g * cg,), dtype),
            1,
        ],
        ["in", "in", "in?", "in", "in", "int1", "out", "out?", "out?", "threads"],
    )


def _adadelta(shapes, dtype, rng):
    return (
        [
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype, True),
            _tensors(rng, shapes, dtype, True),
            1.0,
            0.9,
            1e-6,
            0.01,
            False,
            1,
        ],
        ["list_out", "list_in", "list_out", "list_out", "num", "num", "num", "num", "flag", "threads"],
    )


def _adagrad(shapes, dtype, rng):
    return (
        [
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype),
            _tensors(rng, shapes, dtype, True),
            3,
            1e-2,
            0.1,
            1e-10,
            0.01,
            False,
            1,
        ],
        ["list_out", "list_in", "list_out", "fixed", "num", "num", "num", "num", "flag", "threads"],
    )


prelu_shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))

SPECS.update(
    {
        "gelu_forward": (any_shapes, _smooth_forward([False], ["flag"])),
        "gelu_backward": (any_shapes, _smooth_backward([True], ["flag"])),
        "silu_forward": (any_shapes, _smooth_forward([], [])),
        "silu_backward": (any_shapes, _smooth_backward([], [])),
        "elu_forward": (any_shapes, _smooth_forward([0.7], ["num"])),
        "elu_backward": (any_shapes, _smooth_backward([0.7], ["num"])),
        "hardswish_forward": (any_shapes, _smooth_forward([], [])),
        "hardswish_backward": (any_shapes, _smooth_backward([], [])),
        "prelu_forward": (prelu_shapes, _prelu_forward),
        "prelu_backward": (prelu_shapes, _prelu_backward),
        "layer_norm_forward": (rows, _layer_norm_forward),
        "layer_norm_backward": (rows, _layer_norm_backward),
        "group_norm_forward": (group_shapes, _group_norm_forward),
        "group_norm_backward": (group_shapes, _group_norm_backward),
        "adadelta_step": (tensor_lists, _adadelta),
        "adagrad_step": (tensor_lists, _adagrad),
    }
)
