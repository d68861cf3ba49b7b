"""Adadelta and Adagrad against torch.optim (20 steps, both dtypes, skipped parameters),
their state dicts, construction errors with PyTorch's wording, and a torch-free oracle."""

import numpy as np
import pytest

from fastgrad import optim
from fastgrad.tensor import Tensor

SHAPES = [(6, 1, 5, 5), (6,), (16, 6), (3, 7, 2), ()]
CONFIGS = [
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=1e-2)),
    ("Adadelta", dict(maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=1e-2)),
    ("Adagrad", dict(initial_accumulator_value=0.3, eps=1e-6, maximize=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def _close(actual, desired, msg=""):
    desired = np.asarray(desired)
    rtol = RTOL[desired.dtype.type]
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=msg)


def _data(dtype, steps):
    rng = np.random.default_rng(0)
    arrays = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES]
    grads = [[np.asarray(rng.standard_normal(s)).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return arrays, grads


def _skip(step, i):
    return i == 1 and step in (3, 4)  # parameter 1 has no gradient on two steps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_matches_torch_for_20_steps(name, kw, dtype):
    torch = pytest.importorskip("torch")
    arrays, grad_seq = _data(dtype, 20)
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = getattr(optim, name)(ours, **kw)
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for step, grads in enumerate(grad_seq):
        for i, (p, t, g) in enumerate(zip(ours, theirs, grads)):
            p.grad = None if _skip(step, i) else Tensor(g.copy())
            t.grad = None if _skip(step, i) else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for i, (p, t) in enumerate(zip(ours, theirs)):
        _close(p.data, t.detach().numpy(), f"param {i}")
        assert set(opt.state[p]) == set(topt.state[t])
        for key, value in topt.state[t].items():
            if key == "step":
                assert opt.state[p][key] == int(value.item())
            else:
                _close(opt.state[p][key], value.numpy(), f"param {i} state {key}")
    assert opt.defaults.keys() - {"maximize"} <= topt.defaults.keys()


def test_adagrad_state_exists_before_the_first_step_as_in_torch():
    torch = pytest.importorskip("torch")
    p = Tensor(np.zeros(3, np.float32), requires_grad=True)
    t = torch.zeros(3, requires_grad=True)
    ours = optim.Adagrad([p], initial_accumulator_value=0.5).state_dict()
    theirs = torch.optim.Adagrad([t], initial_accumulator_value=0.5).state_dict()
    assert ours["state"].keys() == theirs["state"].keys() == {0}
    np.testing.assert_array_equal(ours["state"][0]["sum"], theirs["state"][0]["sum"].numpy())
    assert float(ours["state"][0]["step"]) == float(theirs["state"][0]["step"]) == 0.0
    mine, torch_group = ours["param_groups"][0], theirs["param_groups"][0]
    for key in ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "maximize"):
        assert mine[key] == torch_group[key], key


@pytest.mark.parametrize("name", ["Adadelta", "Adagrad"])
def test_state_dict_round_trip_continues_identically(name):
    arrays, grad_seq = _data(np.float32, 8)
    runs = []
    for reload in (False, True):
        params = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        opt = getattr(optim, name)(params, lr=0.1)
        for k, grads in enumerate(grad_seq):
            if reload and k == 4:
                saved = opt.state_dict()
                opt = getattr(optim, name)(params, lr=0.7)
                opt.load_state_dict(saved)
                assert opt.param_groups[0]["lr"] == 0.1
            for p, g in zip(params, grads):
                p.grad = Tensor(g.copy())
            opt.step()
        runs.append([p.data.copy() for p in params])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_adadelta_by_hand_without_torch():
    """Two steps of the update on one number, in float64: lr=1, rho=0.9, eps=1e-6."""
    p = Tensor(np.array([1.0]), requires_grad=True)
    opt = optim.Adadelta([p])
    x, sq, acc = 1.0, 0.0, 0.0
    for g in (0.5, -0.25):
        p.grad = Tensor(np.array([g]))
        opt.step()
        sq = 0.9 * sq + 0.1 * g * g
        delta = np.sqrt(acc + 1e-6) / np.sqrt(sq + 1e-6) * g
        acc = 0.9 * acc + 0.1 * delta * delta
        x -= delta
    np.testing.assert_allclose(p.data, [x], rtol=1e-14)
    assert opt.state[p]["step"] == 2


def test_adagrad_decays_its_lr_by_step_without_torch():
    p = Tensor(np.array([0.0, 0.0]), requires_grad=True)
    opt = optim.Adagrad([p], lr=1.0, lr_decay=0.5, eps=0.0)
    p.grad = Tensor(np.array([2.0, -3.0]))
    opt.step()
    np.testing.assert_allclose(p.data, [-1.0, 1.0])  # -lr * g / |g|
    opt.step()  # step 2: clr = 1 / 1.5, sum = 2 g^2
    np.testing.assert_allclose(p.data, [-1.0 - 1 / 1.5 / np.sqrt(2), 1.0 + 1 / 1.5 / np.sqrt(2)])


def _one():
    return [Tensor(np.zeros(3, np.float32), requires_grad=True)]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: optim.Adadelta(p, lr=-1), "Invalid learning rate: -1"),
        (lambda p: optim.Adadelta(p, rho=1.5), "Invalid rho value: 1.5"),
        (lambda p: optim.Adadelta(p, eps=-1), "Invalid epsilon value: -1"),
        (lambda p: optim.Adadelta(p, weight_decay=-1), "Invalid weight_decay value: -1"),
        (lambda p: optim.Adagrad(p, lr=-1), "Invalid learning rate: -1"),
        (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value: -1"),
        (lambda p: optim.Adagrad(p, weight_decay=-1), "Invalid weight_decay value: -1"),
        (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
        (lambda p: optim.Adagrad(p, eps=-1), "Invalid epsilon value: -1"),
    ],
)
def test_invalid_hyperparameters_raise_with_torch_wording(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make(_one())
