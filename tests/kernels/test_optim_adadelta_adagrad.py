"""adadelta_step and adagrad_step: compiled against the pure-Python reference, bit for bit,
over option grids, both dtypes, odd shapes and special values; bad input raises first."""

import itertools

import numpy as np
import pytest

from fastgrad.reference import optim as reference

compiled = pytest.importorskip("fastgrad._ext._optim", reason="compiled kernels not built")

DTYPES = [np.float32, np.float64]
SHAPES = [(3, 5), (7,), (2, 3, 2), (), (0, 4), (1, 1, 9)]
MODULES = [pytest.param(compiled, id="compiled"), pytest.param(reference, id="reference")]


def _arrays(rng, dtype, shapes, scale=1.0):
    return [np.asarray(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


def _run_both(n_roles, dtype, steps, call, shapes=SHAPES, special=False, init=0.0):
    rng = np.random.default_rng(0)
    params = _arrays(rng, dtype, shapes)
    if special:
        params[0].reshape(-1)[:6] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40]
    homes = {
        m: ([p.copy() for p in params], [[np.full_like(p, init) for p in params] for _ in range(n_roles)])
        for m in (compiled, reference)
    }
    for step in range(1, steps + 1):
        grads = _arrays(rng, dtype, shapes, 0.1)
        if special:
            grads[0].reshape(-1)[-3:] = [np.nan, 1e30, -0.0]
        for module, (p, s) in homes.items():
            call(module, p, grads, s, step)
    (pc, sc), (pr, sr) = homes[compiled], homes[reference]
    for got, want in zip(pc + sum(sc, []), pr + sum(sr, [])):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=True), np.nanmax(np.abs(got.astype(float) - want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay,maximize,rho", list(itertools.product([0.0, 0.05], [False, True], [0.9, 0.3])))
def test_adadelta_matches_reference(dtype, weight_decay, maximize, rho):
    def call(module, p, g, s, step):
        module.adadelta_step(p, g, s[0], s[1], 1.0, rho, 1e-6, weight_decay, maximize, 1)

    _run_both(2, dtype, 4, call)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "weight_decay,maximize,lr_decay,init", list(itertools.product([0.0, 0.05], [False, True], [0.0, 0.1], [0.0, 0.2]))
)
def test_adagrad_matches_reference(dtype, weight_decay, maximize, lr_decay, init):
    def call(module, p, g, s, step):
        module.adagrad_step(p, g, s[0], step, 0.01, lr_decay, 1e-10, weight_decay, maximize, 1)

    _run_both(1, dtype, 4, call, init=init)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_and_hyperparameters_match_reference(dtype):
    shapes = [(4, 3), (5,)]
    _run_both(
        2,
        dtype,
        3,
        lambda m, p, g, s, step: m.adadelta_step(p, g, s[0], s[1], 1.0, 0.9, 0.0, 0.01, True, 1),
        shapes=shapes,
        special=True,
    )
    _run_both(
        1,
        dtype,
        3,
        lambda m, p, g, s, step: m.adagrad_step(p, g, s[0], step, 0.1, 0.0, 0.0, 0.01, False, 1),
        shapes=shapes,
        special=True,
    )
    for value in (np.nan, np.inf, -1.0, 1e30):  # lr_decay=-1 divides by zero on step 2
        _run_both(
            2,
            dtype,
            2,
            lambda m, p, g, s, step: m.adadelta_step(p, g, s[0], s[1], value, value, value, value, False, 1),
            shapes=shapes,
        )
        _run_both(
            1,
            dtype,
            2,
            lambda m, p, g, s, step: m.adagrad_step(p, g, s[0], step, value, value, value, value, False, 1),
            shapes=shapes,
        )


def test_many_tensors_match_reference():
    shapes = [(i % 4 + 1,) for i in range(70)]  # more than the compiled kernel keeps on its stack
    _run_both(
        2,
        np.float32,
        2,
        lambda m, p, g, s, step: m.adadelta_step(p, g, s[0], s[1], 1.0, 0.9, 1e-6, 0.0, False, 1),
        shapes=shapes,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_give_the_same_bits(dtype):
    rng = np.random.default_rng(2)
    shapes = [(300_001,), (17,), (64, 999)]
    params, grads = _arrays(rng, dtype, shapes), _arrays(rng, dtype, shapes, 0.1)
    results = []
    for n_threads in (1, 2, 3):
        p1, p2 = [p.copy() for p in params], [p.copy() for p in params]
        s = [[np.zeros_like(x) for x in params] for _ in range(3)]
        for step in (1, 2):
            compiled.adadelta_step(p1, grads, s[0], s[1], 1.0, 0.9, 1e-6, 0.01, False, n_threads)
            compiled.adagrad_step(p2, grads, s[2], step, 0.01, 0.1, 1e-10, 0.01, False, n_threads)
        results.append(p1 + p2 + s[0] + s[1] + s[2])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert np.array_equal(a, b)


def test_matches_the_formulas_in_float64():
    """An oracle apart from both homes: the documented update written with numpy."""
    rng = np.random.default_rng(3)
    p, g = rng.standard_normal(6), rng.standard_normal(6)
    for module in (compiled, reference):
        q, sq, acc = p.copy(), np.full(6, 0.3), np.full(6, 0.2)
        module.adadelta_step([q], [g], [sq], [acc], 0.5, 0.8, 1e-6, 0.1, False, 1)
        gd = g + 0.1 * p
        want_sq = 0.8 * 0.3 + 0.2 * gd * gd
        delta = np.sqrt(0.2 + 1e-6) / np.sqrt(want_sq + 1e-6) * gd
        np.testing.assert_allclose(sq, want_sq, rtol=1e-14)
        np.testing.assert_allclose(acc, 0.8 * 0.2 + 0.2 * delta * delta, rtol=1e-14)
        np.testing.assert_allclose(q, p - 0.5 * delta, rtol=1e-14)
        q, s = p.copy(), np.full(6, 0.4)
        module.adagrad_step([q], [g], [s], 3, 0.5, 0.25, 1e-10, 0.0, True, 1)
        np.testing.assert_allclose(s, 0.4 + g * g, rtol=1e-14)
        np.testing.assert_allclose(q, p + 0.5 / (1 + 2 * 0.25) * g / (np.sqrt(0.4 + g * g) + 1e-10), rtol=1e-14)


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_raises_and_changes_nothing(module):
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"adadelta_step: got 1 params but 0 acc_deltas"):
        module.adadelta_step([f32(3)], [f32(3)], [f32(3)], [], 1.0, 0.9, 1e-6, 0.0, False, 1)
    with pytest.raises(ValueError, match=r"adadelta_step: acc_deltas\[0\] has shape \(4,\), but params\[0\]"):
        module.adadelta_step([f32(3)], [f32(3)], [f32(3)], [f32(4)], 1.0, 0.9, 1e-6, 0.0, False, 1)
    with pytest.raises(TypeError, match=r"adadelta_step: rho must be a real number, got str"):
        module.adadelta_step([f32(3)], [f32(3)], [f32(3)], [f32(3)], 1.0, "0.9", 1e-6, 0.0, False, 1)
    with pytest.raises(ValueError, match=r"adagrad_step: step must be >= 1"):
        module.adagrad_step([f32(3)], [f32(3)], [f32(3)], 0, 0.1, 0.0, 1e-10, 0.0, False, 1)
    with pytest.raises(
        TypeError, match=r"adagrad_step: state_sums\[0\] has dtype float64, but params\[0\] has float32"
    ):
        module.adagrad_step([f32(3)], [f32(3)], [np.zeros(3)], 1, 0.1, 0.0, 1e-10, 0.0, False, 1)
    with pytest.raises(ValueError, match=r"adagrad_step: n_threads must be a positive integer, got 0"):
        module.adagrad_step([f32(3)], [f32(3)], [f32(3)], 1, 0.1, 0.0, 1e-10, 0.0, False, 0)
    read_only = f32(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"adagrad_step: state_sums\[0\] is read-only"):
        module.adagrad_step([f32(3)], [f32(3)], [read_only], 1, 0.1, 0.0, 1e-10, 0.0, False, 1)
    p = [np.ones(3, np.float32), np.ones(2, np.float32)]
    with pytest.raises(ValueError, match=r"must be C-contiguous"):
        module.adadelta_step(
            p,
            [np.ones(3, np.float32), np.ones((2, 2), np.float32)[:, 0]],
            [f32(3), f32(2)],
            [f32(3), f32(2)],
            1.0,
            0.9,
            1e-6,
            0.0,
            False,
            1,
        )
    np.testing.assert_array_equal(p[0], 1.0)
