"""The compiled loss and batch-norm kernels against their pure-Python twins: class
weights, ignore_index (also a valid class index), label smoothing, logits of +-1e4,
empty batches and zero classes, the optional outputs; batch norm with and without
affine parameters and running statistics, in training and evaluation, and its backward
with every output optional. Threaded runs: test_threads.py."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz_common import (
    assert_close,
    both,
    dtypes,
    magnitude,
    outcome,
    random_array,
    rng_of,
    same_outcome,
    seeds,
    sentinel,
    threads,
    value_kinds,
)


def class_targets(rng, n, c, ignore_index, ignore_fraction):
    """int64 targets in [0, c), some of them ignore_index (all of them when c == 0)."""
    t = rng.integers(0, max(c, 1), size=n).astype(np.int64)
    t[(rng.random(n) < ignore_fraction) | (c == 0)] = ignore_index
    return t


loss_shapes = st.tuples(st.integers(0, 6), st.integers(0, 7))
ignore_choices = st.sampled_from(["-100", "class 0", "last class", "huge"])


def ignore_value(choice, c):
    return {"-100": -100, "class 0": 0, "last class": max(c - 1, 0), "huge": 2**62}[choice]


@given(
    shape=loss_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    big=st.booleans(),
    use_weight=st.booleans(),
    ignore=ignore_choices,
    ignore_fraction=st.sampled_from([0, 0.3, 1]),
    smoothing=st.one_of(st.just(0.0), st.floats(0, 1)),
    normalize=st.booleans(),
    want_grad=st.booleans(),
    n_threads=threads,
)
def test_cross_entropy_forward(
    shape, dtype, seed, kind, big, use_weight, ignore, ignore_fraction, smoothing, normalize, want_grad, n_threads
):
    n, c = shape
    rng = rng_of(seed)
    logits = random_array(rng, shape, dtype, kind) * dtype(1e4 if big else 1)
    weight = rng.uniform(0, 2, size=c).astype(dtype) if use_weight else None
    ignore_index = ignore_value(ignore, c)
    target = class_targets(rng, n, c, ignore_index, ignore_fraction)
    comp, ref = both("cross_entropy_forward")
    results = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        losses = sentinel((n,), dtype)
        grad = sentinel(shape, dtype) if want_grad else None
        sums = kernel(logits, target, weight, ignore_index, smoothing, normalize, losses, grad, threads_)
        results.append((sums, losses, grad))
    (got_sums, got_losses, got_grad), (sums, losses, grad) = results
    what = f"shape={shape} ignore={ignore_index} smoothing={smoothing} normalize={normalize}"
    row_scale = (c + 1) * magnitude(logits) * magnitude(weight)
    assert_close(got_losses, losses, dtype, row_scale, "losses " + what)
    assert_close(got_sums[0], sums[0], dtype, n * row_scale, "loss sum " + what)
    assert_close(got_sums[1], sums[1], dtype, n * magnitude(weight), "total weight " + what)
    if want_grad:
        assert_close(got_grad, grad, dtype, 1.0 + 1.0 / max(abs(sums[1]), 1e-30) * magnitude(weight), "grad " + what)


@given(
    shape=st.tuples(st.integers(0, 6), st.integers(0, 7)),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    use_weight=st.booleans(),
    ignore=ignore_choices,
    ignore_fraction=st.sampled_from([0, 0.3, 1]),
    n_threads=threads,
)
def test_nll_loss_forward_and_backward(shape, dtype, seed, kind, use_weight, ignore, ignore_fraction, n_threads):
    n, c = shape
    rng = rng_of(seed)
    log_probs = random_array(rng, shape, dtype, kind)
    weight = rng.uniform(0, 2, size=c).astype(dtype) if use_weight else None
    ignore_index = ignore_value(ignore, c)
    target = class_targets(rng, n, c, ignore_index, ignore_fraction)
    grad_losses = random_array(rng, (n,), dtype, kind)
    comp, ref = both("nll_loss_forward")
    got_losses, losses = sentinel((n,), dtype), sentinel((n,), dtype)
    got_sums = comp(log_probs, target, weight, ignore_index, got_losses, n_threads)
    sums = ref(log_probs, target, weight, ignore_index, losses, 1)
    scale = magnitude(log_probs, weight)
    assert_close(got_losses, losses, dtype, scale, "nll losses")
    assert_close(got_sums[0], sums[0], dtype, n * scale, "nll loss sum")
    assert_close(got_sums[1], sums[1], dtype, n * magnitude(weight), "nll total weight")
    comp, ref = both("nll_loss_backward")
    got, expected = sentinel(shape, dtype), sentinel(shape, dtype)
    comp(target, weight, ignore_index, grad_losses, got, n_threads)
    ref(target, weight, ignore_index, grad_losses, expected, 1)
    assert_close(got, expected, dtype, magnitude(grad_losses, weight), "nll backward")


any_shapes = st.lists(st.integers(0, 5), max_size=4).map(tuple)


@given(
    shape=any_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    want_squares=st.booleans(),
    per_element=st.booleans(),
    scale=st.floats(-4, 4, allow_nan=False),
    n_threads=threads,
)
def test_mse_loss_forward_and_backward(shape, dtype, seed, kind, want_squares, per_element, scale, n_threads):
    rng = rng_of(seed)
    x, y = random_array(rng, shape, dtype, kind), random_array(rng, shape, dtype, kind)
    comp, ref = both("mse_loss_forward")
    outs = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        diff = sentinel(shape, dtype)
        squares = sentinel(shape, dtype) if want_squares else None
        outs.append((kernel(x, y, diff, squares, threads_), diff, squares))
    (got_total, got_diff, got_sq), (total, diff, sq) = outs
    assert_close(got_diff, diff, dtype, 1.0, "mse diff")
    if want_squares:
        assert_close(got_sq, sq, dtype, 1.0, "mse squares")
    assert_close(got_total, total, dtype, diff.size * magnitude(diff) ** 2, "mse sum")
    grad_loss = random_array(rng, shape if per_element else (), dtype, kind)
    comp, ref = both("mse_loss_backward")
    got, expected = sentinel(shape, dtype), sentinel(shape, dtype)
    comp(diff, grad_loss, scale, got, n_threads)
    ref(diff, grad_loss, scale, expected, 1)
    assert_close(got, expected, dtype, magnitude(diff, grad_loss) * abs(scale), "mse backward")


@given(
    shape=st.tuples(st.integers(0, 5), st.integers(0, 6)),
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    big=st.booleans(),
    use_weight=st.booleans(),
    use_pos_weight=st.booleans(),
    want_losses=st.booleans(),
    want_grad=st.booleans(),
    grad_scale=st.floats(-2, 2, allow_nan=False),
    n_threads=threads,
)
def test_binary_cross_entropy_with_logits_forward(
    shape, dtype, seed, kind, big, use_weight, use_pos_weight, want_losses, want_grad, grad_scale, n_threads
):
    rng = rng_of(seed)
    x = random_array(rng, shape, dtype, kind) * dtype(1e4 if big else 1)
    y = rng.random(shape).astype(dtype)
    w = rng.uniform(0, 2, size=shape).astype(dtype) if use_weight else None
    pw = rng.uniform(0, 3, size=shape[1:]).astype(dtype) if use_pos_weight else None
    comp, ref = both("binary_cross_entropy_with_logits_forward")
    outs = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        losses = sentinel(shape, dtype) if want_losses else None
        grad = sentinel(shape, dtype) if want_grad else None
        outs.append((kernel(x, y, w, pw, grad_scale, losses, grad, threads_), losses, grad))
    (got_total, got_losses, got_grad), (total, losses, grad) = outs
    scale = magnitude(x, w, pw) + 1.0
    if want_losses:
        assert_close(got_losses, losses, dtype, scale, "bce losses")
    if want_grad:
        assert_close(got_grad, grad, dtype, magnitude(w, pw) * abs(grad_scale), "bce grad")
    assert_close(got_total, total, dtype, x.size * scale, "bce sum")


norm_shapes = st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 6))
norm_options = st.fixed_dictionaries(
    {
        "affine": st.sampled_from(["none", "weight", "both"]),
        "running": st.booleans(),
        "momentum": st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        "eps": st.sampled_from([1e-5, 1e-3, 0.5]),
    }
)


def norm_arrays(rng, shape, dtype, kind, options):
    n, c, s = shape
    x = random_array(rng, shape, dtype, kind) + dtype(rng.normal() * 3)
    weight = random_array(rng, (c,), dtype, kind) if options["affine"] != "none" else None
    bias = random_array(rng, (c,), dtype, kind) if options["affine"] == "both" else None
    mean = random_array(rng, (c,), dtype, kind)
    var = rng.uniform(0.1, 3, size=c).astype(dtype)
    return x, weight, bias, mean, var


@given(shape=norm_shapes, dtype=dtypes, seed=seeds, kind=value_kinds, options=norm_options, n_threads=threads)
def test_batch_norm_forward_train(shape, dtype, seed, kind, options, n_threads):
    rng = rng_of(seed)
    x, weight, bias, mean, var = norm_arrays(rng, shape, dtype, kind, options)
    comp, ref = both("batch_norm_forward_train")
    outs = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        rm, rv = (mean.copy(), var.copy()) if options["running"] else (None, None)
        out, sm, si = sentinel(shape, dtype), sentinel(shape[1:2], dtype), sentinel(shape[1:2], dtype)
        result = outcome(kernel, x, weight, bias, rm, rv, options["momentum"], options["eps"], out, sm, si, threads_)
        outs.append((result, out, sm, si, rm, rv))
    if not same_outcome("batch_norm_forward_train", outs[0][0], outs[1][0]):
        return
    n, c, s = shape
    spread = magnitude(x) ** 2 / options["eps"]  # rounding of (x - mean) * invstd
    names = ("out", "save_mean", "save_invstd", "running_mean", "running_var")
    scales = (
        n * s * (1 + spread) * magnitude(weight) + magnitude(bias),
        n * s * magnitude(x),
        n * s * spread / options["eps"] ** 0.5,
        n * s * magnitude(x),
        n * s * spread,
    )
    for name, got, expected, scale in zip(names, outs[0][1:], outs[1][1:], scales):
        if expected is not None:
            assert_close(got, expected, dtype, scale, f"{name} {shape} {options}")


@given(shape=norm_shapes, dtype=dtypes, seed=seeds, kind=value_kinds, options=norm_options, n_threads=threads)
def test_batch_norm_forward_eval(shape, dtype, seed, kind, options, n_threads):
    rng = rng_of(seed)
    x, weight, bias, mean, var = norm_arrays(rng, shape, dtype, kind, options)
    comp, ref = both("batch_norm_forward_eval")
    outs = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        out, si = sentinel(shape, dtype), sentinel(shape[1:2], dtype)
        kernel(x, weight, bias, mean, var, options["eps"], out, si, threads_)
        outs.append((out, si))
    scale = (magnitude(x) + magnitude(mean)) * magnitude(weight) * 4 + magnitude(bias)
    assert_close(outs[0][0], outs[1][0], dtype, scale, "out")
    assert_close(outs[0][1], outs[1][1], dtype, 4.0, "save_invstd")


@given(
    shape=norm_shapes,
    dtype=dtypes,
    seed=seeds,
    kind=value_kinds,
    options=norm_options,
    batch_stats=st.booleans(),
    wants=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    n_threads=threads,
)
def test_batch_norm_backward(shape, dtype, seed, kind, options, batch_stats, wants, n_threads):
    rng = rng_of(seed)
    x, weight, _, mean, var = norm_arrays(rng, shape, dtype, kind, options)
    grad = random_array(rng, shape, dtype, kind)
    invstd = (1 / np.sqrt(var + dtype(options["eps"]))).astype(dtype)
    comp, ref = both("batch_norm_backward")
    outs = []
    for kernel, threads_ in ((comp, n_threads), (ref, 1)):
        gi = sentinel(shape, dtype) if wants[0] else None
        gw = sentinel(shape[1:2], dtype) if wants[1] else None
        gb = sentinel(shape[1:2], dtype) if wants[2] else None
        kernel(grad, x, weight, mean, invstd, batch_stats, gi, gw, gb, threads_)
        outs.append((gi, gw, gb))
    n, c, s = shape
    m = n * s * magnitude(grad) * (magnitude(x) + magnitude(mean)) * magnitude(invstd)
    scales = (magnitude(grad, invstd, weight) * (1 + 2 * m * magnitude(invstd)), m, n * s * magnitude(grad))
    for name, got, expected, scale in zip(("grad_input", "grad_weight", "grad_bias"), *outs, scales):
        if expected is not None:
            assert_close(got, expected, dtype, scale, f"{name} {shape} batch_stats={batch_stats}")


@given(
    shape=norm_shapes.filter(lambda s: s[1] > 0 and s[0] * s[2] > 1),
    dtype=dtypes,
    value=st.floats(-3, 3, allow_nan=False),
    train=st.booleans(),
)
# found by the long profile: the twins' means differed by rounding, so x - mean was a
# residue of opposite signs (-1 and +1 after normalization) instead of 0 (NaN)
@example(shape=(2, 1, 3), dtype=np.float64, value=1e-08, train=True)
@example(shape=(2, 1, 3), dtype=np.float64, value=1.0105102148444407e-25, train=True)
def test_batch_norm_zero_variance_without_eps(shape, dtype, value, train):
    """eps=0 over a constant channel: 1/sqrt(0) is inf (PyTorch gives NaN/inf there); the
    twins must agree, not one return and the other raise."""
    x = np.full(shape, value, dtype)
    c = shape[1]
    comp_ref = both("batch_norm_forward_train" if train else "batch_norm_forward_eval")
    results = []
    for kernel in comp_ref:
        out, si = sentinel(shape, dtype), sentinel((c,), dtype)
        if train:
            args = (x, None, None, None, None, 0.1, 0.0, out, sentinel((c,), dtype), si, 1)
        else:
            args = (x, None, None, np.zeros(c, dtype), np.zeros(c, dtype), 0.0, out, si, 1)
        results.append((outcome(kernel, *args), out, si))
    if same_outcome(comp_ref[0].__name__, results[0][0], results[1][0]):
        np.testing.assert_array_equal(results[0][1], results[1][1])
        np.testing.assert_array_equal(results[0][2], results[1][2])
