"""Threaded compiled kernels against the same kernels on one thread.

The kernels only start threads above a work threshold, on inputs far too big for the
pure-Python twins; the one-thread compiled run (checked against the twin on small
inputs by the test_twins_* files) is the oracle here. Sizes are drawn around each
kernel's threshold, with odd sizes so that the work does not split evenly."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fuzz_common import ConvCase, assert_close, both, dtypes, magnitude, random_array, rng_of, seeds

many_threads = st.integers(2, 3)


def run_twice(kernel, make_args, outputs, n_threads):
    """Call kernel(*make_args(outs), n) for one thread and for n_threads, each with fresh
    outputs (NaN-filled, or -7 for integers); return both sets of outputs."""
    runs = []
    for n in (1, n_threads):
        outs = [np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -7, dtype) for shape, dtype in outputs]
        kernel(*make_args(outs), n)
        runs.append(outs)
    return runs


def compare(runs, dtype, scale, what):
    for one, many in zip(*runs):
        assert_close(many, one, dtype, scale, what)


@given(
    n=st.integers(2, 9),
    cg=st.integers(1, 9),
    co=st.integers(8, 17),
    hw=st.integers(12, 19),
    stride=st.integers(1, 2),
    dtype=dtypes,
    seed=seeds,
    n_threads=many_threads,
)
def test_conv2d(n, cg, co, hw, stride, dtype, seed, n_threads):
    case = ConvCase(n, 1, cg, co, hw, hw + 3, 3, 3, (stride, stride), (1, 1), (1, 1), (0, 0), False)
    rng = rng_of(seed)
    x, w = random_array(rng, case.x_shape, dtype), random_array(rng, case.w_shape, dtype)
    b, g = random_array(rng, (co,), dtype), random_array(rng, case.y_shape, dtype)
    p = case.params
    forward, _ = both("conv2d_forward")
    runs = run_twice(forward, lambda o: (x, w, b, o[0], *p, True, None), [(case.y_shape, dtype)], n_threads)
    compare(runs, dtype, case.depth * magnitude(x, w), f"forward {case}")
    backward_input, _ = both("conv2d_backward_input")
    runs = run_twice(backward_input, lambda o: (g, w, o[0], *p, None), [(case.x_shape, dtype)], n_threads)
    compare(runs, dtype, case.fan_out * magnitude(g, w), f"backward_input {case}")
    backward_weight, _ = both("conv2d_backward_weight")
    runs = run_twice(backward_weight, lambda o: (x, g, o[0], *p, None), [(case.w_shape, dtype)], n_threads)
    compare(runs, dtype, g[0, 0].size * n * magnitude(x, g), f"backward_weight {case}")


@given(
    n=st.integers(1, 6),
    c=st.integers(50, 70),
    hw=st.integers(24, 33),
    k=st.integers(1, 3),
    dtype=dtypes,
    seed=seeds,
    n_threads=many_threads,
)
def test_pooling(n, c, hw, k, dtype, seed, n_threads):
    rng = rng_of(seed)
    x = random_array(rng, (n, c, hw, hw + 1), dtype, "ties")
    oh, ow = (hw - k) // k + 1, (hw + 1 - k) // k + 1
    grad = random_array(rng, (n, c, oh, ow), dtype)
    window = (k, k, k, k, 0, 0)
    max_forward, _ = both("max_pool2d_forward")
    runs = run_twice(
        max_forward,
        lambda o: (x, o[0], o[1], *window, 1, 1),
        [((n, c, oh, ow), dtype), ((n, c, oh, ow), np.int64)],
        n_threads,
    )
    for one, many in zip(*runs):
        np.testing.assert_array_equal(many, one)
    indices = runs[0][1]
    kernels = [
        ("max_pool2d_backward", lambda o: (grad, indices, o[0]), (n, c, hw, hw + 1)),
        ("avg_pool2d_forward", lambda o: (x, o[0], *window, True, None), (n, c, oh, ow)),
        ("avg_pool2d_backward", lambda o: (grad, o[0], *window, False, None), (n, c, hw, hw + 1)),
        ("adaptive_avg_pool2d_forward", lambda o: (x, o[0]), (n, c, oh, ow)),
        ("adaptive_avg_pool2d_backward", lambda o: (grad, o[0]), (n, c, hw, hw + 1)),
    ]
    for name, make_args, shape in kernels:
        kernel, _ = both(name)
        compare(run_twice(kernel, make_args, [(shape, dtype)], n_threads), dtype, k * k * magnitude(x, grad), name)


@given(
    n=st.integers(1, 200),
    k=st.integers(100, 160),
    o=st.integers(100, 170),
    dtype=dtypes,
    seed=seeds,
    n_threads=many_threads,
)
def test_linear(n, k, o, dtype, seed, n_threads):
    rng = rng_of(seed)
    x, w = random_array(rng, (n, k), dtype), random_array(rng, (o, k), dtype)
    b, g = random_array(rng, (o,), dtype), random_array(rng, (n, o), dtype)
    kernels = [
        ("linear_forward", lambda out: (x, w, b, out[0], True), (n, o), k),
        ("linear_backward_input", lambda out: (g, w, out[0]), (n, k), o),
        ("linear_backward_weight", lambda out: (x, g, out[0]), (o, k), n),
        ("linear_backward_bias", lambda out: (g, out[0]), (o,), n),
    ]
    for name, make_args, shape, depth in kernels:
        kernel, _ = both(name)
        compare(run_twice(kernel, make_args, [(shape, dtype)], n_threads), dtype, depth * magnitude(x, w, g), name)


@given(rows=st.integers(2, 40), cols=st.integers(1000, 9000), dtype=dtypes, seed=seeds, n_threads=many_threads)
def test_activations_softmax_losses(rows, cols, dtype, seed, n_threads):
    rng = rng_of(seed)
    x, g = random_array(rng, (rows, cols), dtype), random_array(rng, (rows, cols), dtype)
    y = rng.random((rows, cols)).astype(dtype)
    target = rng.integers(0, cols, size=rows).astype(np.int64)
    same = [((rows, cols), dtype)]
    kernels = [
        (f"{name}_forward", lambda o: (x, o[0]), same) for name in ("relu", "sigmoid", "tanh", "softmax", "log_softmax")
    ]
    kernels += [
        (f"{name}_backward", lambda o: (y, g, o[0]), same)
        for name in ("relu", "sigmoid", "tanh", "softmax", "log_softmax")
    ]
    kernels += [
        ("leaky_relu_forward", lambda o: (x, o[0], 0.1), same),
        ("leaky_relu_backward", lambda o: (x, g, o[0], 0.1), same),
        (
            "cross_entropy_forward",
            lambda o: (x, target, None, -100, 0.1, True, o[0], o[1]),
            [((rows,), dtype), ((rows, cols), dtype)],
        ),
        ("mse_loss_forward", lambda o: (x, y, o[0], o[1]), same + same),
        ("binary_cross_entropy_with_logits_forward", lambda o: (x, y, None, None, 0.5, o[0], o[1]), same + same),
    ]
    for name, make_args, outputs in kernels:
        kernel, _ = both(name)
        compare(run_twice(kernel, make_args, outputs, n_threads), dtype, cols * magnitude(x, g), name)


@given(
    n=st.integers(2, 30),
    c=st.integers(2, 9),
    s=st.integers(1000, 3000),
    dtype=dtypes,
    seed=seeds,
    n_threads=many_threads,
)
def test_batch_norm(n, c, s, dtype, seed, n_threads):
    rng = rng_of(seed)
    x, g = random_array(rng, (n, c, s), dtype), random_array(rng, (n, c, s), dtype)
    weight, bias = random_array(rng, (c,), dtype), random_array(rng, (c,), dtype)
    mean, var = random_array(rng, (c,), dtype), rng.uniform(0.5, 2, c).astype(dtype)
    train, _ = both("batch_norm_forward_train")

    def train_args(o):
        o[3][...], o[4][...] = mean, var  # running statistics: updated in place
        return x, weight, bias, o[3], o[4], 0.1, 1e-5, o[0], o[1], o[2]

    vec = ((c,), dtype)
    runs = run_twice(train, train_args, [((n, c, s), dtype), vec, vec, vec, vec], n_threads)
    compare(runs, dtype, n * s * magnitude(x) ** 2 * 10, "batch_norm_forward_train")
    eval_, _ = both("batch_norm_forward_eval")
    compare(
        run_twice(
            eval_, lambda o: (x, weight, bias, mean, var, 1e-5, o[0], o[1]), [((n, c, s), dtype), vec], n_threads
        ),
        dtype,
        magnitude(x, weight) * 4,
        "batch_norm_forward_eval",
    )
    invstd = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    backward, _ = both("batch_norm_backward")
    compare(
        run_twice(
            backward,
            lambda o: (g, x, weight, mean, invstd, True, o[0], o[1], o[2]),
            [((n, c, s), dtype), vec, vec],
            n_threads,
        ),
        dtype,
        n * s * magnitude(x, g, invstd) * 4,
        "batch_norm_backward",
    )


# one tensor above the largest threshold (SGD's 2**18 elements), small ones around it
tensor_sizes = st.tuples(
    st.integers(262_145, 300_000), st.lists(st.integers(0, 999), max_size=3), st.integers(0, 3)
).map(lambda t: t[1][: t[2]] + [t[0]] + t[1][t[2] :])


@given(sizes=tensor_sizes, dtype=dtypes, seed=seeds, n_threads=many_threads)
def test_optimizer_steps(sizes, dtype, seed, n_threads):
    """The updates are elementwise: any split over threads gives the same bits."""
    rng = rng_of(seed)
    base = [[random_array(rng, (size,), dtype) for size in sizes] for _ in range(5)]
    for arrays in base[2:]:
        for a in arrays:
            np.abs(a, out=a)
    calls = {
        "sgd_step": lambda r, n: (r[0], r[1], r[2], 0.01, 0.9, 0.1, 0.01, False, True, False, n),
        "adam_step": lambda r, n: (r[0], r[1], r[2], r[3], r[4], 3, 0.01, 0.9, 0.99, 1e-8, 0.01, True, False, True, n),
        "rmsprop_step": lambda r, n: (r[0], r[1], r[2], r[3], r[4], 0.01, 0.9, 1e-8, 0.01, 0.5, True, False, n),
    }
    for name, make_args in calls.items():
        kernel, _ = both(name)
        results = []
        for n in (1, n_threads):
            roles = [[a.copy() for a in arrays] for arrays in base]
            kernel(*make_args(roles, n))
            results.append(roles)
        for one, many in zip(*results):
            for a, b in zip(one, many):
                np.testing.assert_array_equal(b, a, err_msg=f"{name} with {n_threads} threads")
