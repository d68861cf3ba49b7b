"""The optimizer kernels: compiled against the pure-Python reference, bit for bit.

Both homes do the same float32 (or float64) operations in the same order, so every
update, over several steps and every option combination, must give identical arrays.
Bad input must raise the same clear error in both.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgrad.reference import optim as reference

compiled = pytest.importorskip("fastgrad._ext._optim", reason="compiled kernels not built")

DTYPES = [np.float32, np.float64]
# odd sizes, a 0-d tensor and an empty one; few elements because the reference is slow
SHAPES = [(3, 5), (7,), (2, 3, 2), (), (0, 4), (1, 1, 9)]


def _random_arrays(rng, dtype, shapes, scale=1.0):
    return [np.asarray(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def _copies(arrays):
    return [a.copy() for a in arrays]


def _assert_identical(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        if not np.array_equal(g, w, equal_nan=True):
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            raise AssertionError(f"{what}[{i}]: compiled and reference differ (max |diff| {np.nanmax(diff)})")


def _run_both(kernel_name, n_roles, dtype, steps, call, shapes=SHAPES, seed=0, special=False):
    """Run ``call(module, params, grads, states, step)`` on both homes from the same arrays."""
    rng = np.random.default_rng(seed)
    params = _random_arrays(rng, dtype, shapes)
    if special and params[0].size >= 6:
        params[0].reshape(-1)[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40]
    states = [[np.zeros_like(p) for p in params] for _ in range(n_roles)]
    homes = {}
    for module in (compiled, reference):
        homes[module] = (_copies(params), [_copies(s) for s in states])
    for step in range(1, steps + 1):
        grads = _random_arrays(rng, dtype, shapes, scale=0.1)
        if special and grads[0].size >= 6:
            grads[0].reshape(-1)[-3:] = [np.nan, 1e30, -0.0]
        for module, (p, s) in homes.items():
            call(module, p, grads, s, step)
    (pc, sc), (pr, sr) = homes[compiled], homes[reference]
    _assert_identical(pc, pr, f"{kernel_name} params")
    for r in range(n_roles):
        _assert_identical(sc[r], sr[r], f"{kernel_name} state {r}")


# --------------------------------------------------------------------------- compiled == reference

SGD_CASES = [
    c
    for c in itertools.product([0.0, 0.9], [0.0, 0.25], [0.0, 0.01], [False, True], [False, True])
    if not (c[3] and (c[0] == 0 or c[1] != 0))
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov,maximize", SGD_CASES)
def test_sgd_matches_reference(dtype, momentum, dampening, weight_decay, nesterov, maximize):
    def call(module, p, g, s, step):
        module.sgd_step(
            p, g, s[0] if momentum else [], 0.05, momentum, dampening, weight_decay, nesterov, maximize, step == 1, 1
        )

    _run_both("sgd_step", 1, dtype, 4, call)


ADAM_CASES = list(itertools.product([0.0, 0.05], [False, True], [False, True], [False, True], [0.9, 0.2]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,amsgrad,maximize,decoupled,beta1", ADAM_CASES)
def test_adam_matches_reference(dtype, weight_decay, amsgrad, maximize, decoupled, beta1):
    def call(module, p, g, s, step):
        module.adam_step(
            p,
            g,
            s[0],
            s[1],
            s[2] if amsgrad else [],
            step,
            0.01,
            beta1,
            0.999,
            1e-8,
            weight_decay,
            amsgrad,
            maximize,
            decoupled,
            1,
        )

    _run_both("adam_step", 3, dtype, 4, call)


RMSPROP_CASES = list(itertools.product([0.0, 0.05], [0.0, 0.9], [False, True], [False, True], [0.99, 0.3]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,momentum,centered,maximize,alpha", RMSPROP_CASES)
def test_rmsprop_matches_reference(dtype, weight_decay, momentum, centered, maximize, alpha):
    def call(module, p, g, s, step):
        module.rmsprop_step(
            p,
            g,
            s[0],
            s[1] if centered else [],
            s[2] if momentum else [],
            0.01,
            alpha,
            1e-8,
            weight_decay,
            momentum,
            centered,
            maximize,
            1,
        )

    _run_both("rmsprop_step", 3, dtype, 4, call)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -1.0, 1e30])
def test_non_finite_hyperparameters_match_reference(dtype, value):
    """The kernels take any real hyperparameter (the optimizers reject the odd ones) and the
    two homes agree on what it does, down to the scalar math (pow, division by zero)."""

    def adam(module, p, g, s, step):
        module.adam_step(p, g, s[0], s[1], s[2], step, value, value, value, value, value, True, False, False, 1)

    def sgd(module, p, g, s, step):
        module.sgd_step(p, g, s[0], value, value, value, value, False, True, step == 1, 1)

    def rmsprop(module, p, g, s, step):
        module.rmsprop_step(p, g, s[0], s[1], s[2], value, value, value, value, value, True, False, 1)

    for name, call in (("adam_step", adam), ("sgd_step", sgd), ("rmsprop_step", rmsprop)):
        _run_both(name, 3, dtype, 2, call, shapes=[(3, 2), ()])


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_match_reference(dtype):
    """inf, nan, signed zeros, subnormals and huge gradients go through both homes alike."""

    def sgd(module, p, g, s, step):
        module.sgd_step(p, g, s[0], 0.1, 0.9, 0.0, 0.01, True, False, step == 1, 1)

    def adam(module, p, g, s, step):
        module.adam_step(p, g, s[0], s[1], s[2], step, 0.01, 0.9, 0.999, 0.0, 0.01, True, False, False, 1)

    def rmsprop(module, p, g, s, step):
        module.rmsprop_step(p, g, s[0], s[1], s[2], 0.01, 0.99, 0.0, 0.0, 0.5, True, True, 1)

    for name, call in (("sgd_step", sgd), ("adam_step", adam), ("rmsprop_step", rmsprop)):
        _run_both(name, 3, dtype, 3, call, shapes=[(4, 3), (5,)], special=True)


def test_many_tensors_match_reference():
    """More tensors than the compiled kernel keeps on its stack (its pointer table is then allocated)."""
    shapes = [(i % 4 + 1,) for i in range(70)]

    def call(module, p, g, s, step):
        module.adam_step(p, g, s[0], s[1], [], step, 0.01, 0.9, 0.999, 1e-8, 0.0, False, False, False, 1)

    _run_both("adam_step", 3, np.float32, 2, call, shapes=shapes)


def test_tuples_are_accepted():
    rng = np.random.default_rng(1)
    for module in (compiled, reference):
        p = _random_arrays(rng, np.float32, [(3,)])
        before = p[0].copy()
        module.sgd_step(tuple(p), (np.ones(3, np.float32),), (), 0.5, 0.0, 0.0, 0.0, False, False, False, 1)
        np.testing.assert_array_equal(p[0], before - np.float32(0.5))


def test_empty_call_is_a_no_op():
    """No tensors, or zero-size tensors beside real ones: nothing is written to the empty
    ones, and the real ones get exactly what they get alone."""
    calls = {
        "sgd_step": lambda m, p, g, s: m.sgd_step(p, g, s[0], 0.1, 0.9, 0.0, 0.0, False, False, True, 1),
        "adam_step": lambda m, p, g, s: m.adam_step(
            p, g, s[0], s[1], s[2], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, True, False, False, 2
        ),
        "rmsprop_step": lambda m, p, g, s: m.rmsprop_step(
            p, g, s[0], s[1], s[2], 0.1, 0.99, 1e-8, 0.0, 0.9, True, False, 2
        ),
    }
    rng = np.random.default_rng(3)
    for module in (compiled, reference):
        for name, call in calls.items():
            assert call(module, [], [], [[], [], []]) is None, name
            alone = _random_arrays(rng, np.float32, [(5,)])
            grads = _random_arrays(rng, np.float32, [(5,)])
            state = [[np.zeros(5, np.float32)] for _ in range(3)]
            mixed = [np.empty(0, np.float32), alone[0].copy(), np.empty((3, 0), np.float32)]
            mixed_grads = [np.empty(0, np.float32), grads[0], np.empty((3, 0), np.float32)]
            mixed_state = [
                [np.empty(0, np.float32), np.zeros(5, np.float32), np.empty((3, 0), np.float32)] for _ in range(3)
            ]
            call(module, alone, grads, state)
            call(module, mixed, mixed_grads, mixed_state)
            np.testing.assert_array_equal(mixed[1], alone[0], err_msg=name)
            for s_mixed, s_alone in zip(mixed_state, state):
                np.testing.assert_array_equal(s_mixed[1], s_alone[0], err_msg=name)
            assert [a.shape for a in mixed] == [(0,), (5,), (3, 0)], name


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("kernel", ["sgd_step", "adam_step", "rmsprop_step"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_give_the_same_bits(kernel, dtype):
    """Calls big enough to be split across threads give what one thread gives."""
    rng = np.random.default_rng(2)
    shapes = [(300_001,), (17,), (64, 999), (5,)]
    params = _random_arrays(rng, dtype, shapes)
    grads = _random_arrays(rng, dtype, shapes, 0.1)
    results = []
    for n_threads in (1, 2, 3):
        p = _copies(params)
        s = [[np.zeros_like(x) for x in params] for _ in range(3)]
        for step in (1, 2):
            if kernel == "sgd_step":
                compiled.sgd_step(p, grads, s[0], 0.1, 0.9, 0.0, 0.01, True, False, step == 1, n_threads)
            elif kernel == "adam_step":
                compiled.adam_step(
                    p, grads, s[0], s[1], s[2], step, 0.01, 0.9, 0.999, 1e-8, 0.01, True, False, True, n_threads
                )
            else:
                compiled.rmsprop_step(p, grads, s[0], s[1], s[2], 0.01, 0.99, 1e-8, 0.01, 0.9, True, False, n_threads)
        results.append(p + s[0] + s[1] + s[2])
    for other in results[1:]:
        _assert_identical(other, results[0], kernel)


# --------------------------------------------------------------------------- bad input

MODULES = [pytest.param(compiled, id="compiled"), pytest.param(reference, id="reference")]


def _sgd(module, params, grads, bufs, **kw):
    args = dict(
        lr=0.1,
        momentum=0.9,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        maximize=False,
        first_step=False,
        n_threads=1,
    )
    args.update(kw)
    module.sgd_step(params, grads, bufs, *args.values())


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_raises(module):
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    with pytest.raises(TypeError, match=r"sgd_step: params must be a list or tuple"):
        _sgd(module, f32(3), [f32(3)], [f32(3)])
    with pytest.raises(TypeError, match=r"sgd_step: grads\[0\] must be a numpy array, got list"):
        _sgd(module, [f32(3)], [[0.0, 0.0, 0.0]], [f32(3)])
    with pytest.raises(ValueError, match=r"sgd_step: got 2 params but 1 grads"):
        _sgd(module, [f32(3), f32(2)], [f32(3)], [f32(3), f32(2)])
    with pytest.raises(ValueError, match=r"sgd_step: got 1 params but 0 momentum_buffers"):
        _sgd(module, [f32(3)], [f32(3)], [])
    with pytest.raises(TypeError, match=r"sgd_step: params\[0\] must be float32 or float64, got int64"):
        _sgd(module, [np.zeros(3, np.int64)], [np.zeros(3, np.int64)], [np.zeros(3, np.int64)])
    with pytest.raises(TypeError, match=r"sgd_step: grads\[1\] has dtype float64, but params\[0\] has float32"):
        _sgd(module, [f32(3), f32(2)], [f32(3), np.zeros(2)], [f32(3), f32(2)])
    with pytest.raises(
        ValueError, match=r"sgd_step: grads\[0\] has shape \(3, 2\), but params\[0\] has shape \(2, 3\)"
    ):
        _sgd(module, [f32(2, 3)], [f32(3, 2)], [f32(2, 3)])
    with pytest.raises(ValueError, match=r"sgd_step: momentum_buffers\[0\] has shape \(5,\)"):
        _sgd(module, [f32(4)], [f32(4)], [f32(5)])
    with pytest.raises(ValueError, match=r"sgd_step: params\[0\] must be C-contiguous"):
        _sgd(module, [f32(4, 3).T], [f32(3, 4)], [f32(3, 4)])
    read_only = f32(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"sgd_step: momentum_buffers\[0\] is read-only"):
        _sgd(module, [f32(3)], [f32(3)], [read_only])
    _sgd(module, [f32(3)], [read_only], [f32(3)])  # gradients are only read
    with pytest.raises(ValueError, match=r"sgd_step: n_threads must be a positive integer, got 0"):
        _sgd(module, [f32(3)], [f32(3)], [f32(3)], n_threads=0)
    with pytest.raises(TypeError, match=r"sgd_step: n_threads must be a positive integer, got 1.5"):
        _sgd(module, [f32(3)], [f32(3)], [f32(3)], n_threads=1.5)
    with pytest.raises(TypeError, match=r"sgd_step: lr must be a real number, got list"):
        _sgd(module, [f32(3)], [f32(3)], [f32(3)], lr=[0.1])
    with pytest.raises(TypeError, match=r"rmsprop_step: alpha must be a real number, got str"):
        module.rmsprop_step([f32(3)], [f32(3)], [f32(3)], [], [], 0.1, "0.99", 1e-8, 0.0, 0.0, False, False, 1)
    _sgd(module, [f32(3)], [f32(3)], [f32(3)], n_threads=2**70)  # more threads than exist: capped
    with pytest.raises(ValueError, match=r"adam_step: step must be >= 1"):
        module.adam_step(
            [f32(3)], [f32(3)], [f32(3)], [f32(3)], [], 0, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False, 1
        )
    with pytest.raises(ValueError, match=r"adam_step: got 1 params but 0 max_exp_avg_sqs"):
        module.adam_step(
            [f32(3)], [f32(3)], [f32(3)], [f32(3)], [], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, True, False, False, 1
        )
    with pytest.raises(ValueError, match=r"rmsprop_step: got 1 params but 0 grad_avgs"):
        module.rmsprop_step([f32(3)], [f32(3)], [f32(3)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, True, False, 1)


@pytest.mark.parametrize("module", MODULES)
def test_failed_call_changes_nothing(module):
    """Validation runs before any element is touched."""
    p = [np.ones(3, np.float32), np.ones(2, np.float32)]
    with pytest.raises(ValueError):
        _sgd(module, p, [np.ones(3, np.float32), np.ones(3, np.float32)], [np.zeros(3, np.float32)] * 2)
    np.testing.assert_array_equal(p[0], 1.0)


_arrays = st.sampled_from(
    [
        np.zeros(3, np.float32),
        np.zeros(3, np.float64),
        np.zeros((3, 1), np.float32),
        np.zeros(4, np.float32),
        np.zeros(3, np.int32),
        np.zeros((2, 6), np.float32)[:, ::2],
        np.float32(1.0),
        None,
        [1.0, 2.0],
        "x",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    p=st.lists(_arrays, max_size=3),
    g=st.lists(_arrays, max_size=3),
    b=st.lists(_arrays, max_size=3),
    n_threads=st.integers(-1, 3),
)
def test_malformed_input_never_crashes(p, g, b, n_threads):
    """Random malformed lists: both homes raise the same kind of error, or both run."""
    outcomes = []
    for module in (compiled, reference):
        pc, gc, bc = ([x.copy() if isinstance(x, np.ndarray) else x for x in lst] for lst in (p, g, b))
        try:
            module.sgd_step(pc, gc, bc, 0.1, 0.9, 0.0, 0.0, False, False, False, n_threads)
            outcomes.append(("ok", pc))
        except (TypeError, ValueError) as exc:
            outcomes.append((type(exc), str(exc)))
    (kind_c, msg_c), (kind_r, msg_r) = outcomes
    assert kind_c == kind_r, (msg_c, msg_r)
    if kind_c == "ok":
        _assert_identical(msg_c, msg_r, "sgd_step params")
    else:
        assert msg_c == msg_r
