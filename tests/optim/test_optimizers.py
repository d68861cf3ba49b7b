"""fastgrad.optim against torch.optim, against its own reference kernels, and its interface:
construction checks with PyTorch's messages, zero_grad, closures, param groups, state dicts."""

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels, optim
from fastgrad.tensor import Tensor

SHAPES = [(6, 1, 5, 5), (6,), (16, 6), (3, 7, 2), ()]

CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=1e-2, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.3, 0.9), eps=1e-6, maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9)),
    ("RMSprop", dict(lr=1e-2, centered=True)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=1e-2, alpha=0.9)),
    ("RMSprop", dict(lr=1e-2, alpha=0.3, maximize=True)),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]

# PyTorch forms fused multiply-adds in some vectorized loops and fastgrad never does, so
# single elements may differ by an ulp or two of the tensor's scale after 20 steps (more,
# relative to themselves, where an update cancels most of a value).
RTOL = {np.float32: 1e-6, np.float64: 1e-12}


def assert_close(actual, desired, err_msg=""):
    """Elementwise rtol, plus the same tolerance relative to the largest value of the tensor."""
    desired = np.asarray(desired)
    rtol = RTOL[desired.dtype.type]
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def _params(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes]


def _grad_sequence(arrays, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[np.asarray(rng.standard_normal(a.shape)).astype(a.dtype) for a in arrays] for _ in range(steps)]


def _skip(step, i):
    """Parameter 1 has no gradient on steps 3 and 4: it is skipped, its step count lags."""
    return i == 1 and step in (3, 4)


def _run_fastgrad(name, kw, arrays, grad_seq):
    params = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = getattr(optim, name)(params, **kw)
    for step, grads in enumerate(grad_seq):
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if _skip(step, i) else Tensor(g.copy())
        opt.step()
    return params, opt


# --------------------------------------------------------------------------- vs PyTorch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_for_20_steps(name, kw, dtype):
    torch = pytest.importorskip("torch")
    arrays = _params(dtype)
    grad_seq = _grad_sequence(arrays, 20)
    ours, opt = _run_fastgrad(name, kw, arrays, grad_seq)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for step, grads in enumerate(grad_seq):
        for i, (t, g) in enumerate(zip(theirs, grads)):
            t.grad = None if _skip(step, i) else torch.from_numpy(g.copy())
        topt.step()
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert_close(p.data, t.detach().numpy(), err_msg=f"param {i}")
        for key, value in topt.state[t].items():
            mine = opt.state[p][key]
            if key == "step":
                assert mine == int(value.item())
            else:
                assert_close(mine, value.numpy(), err_msg=f"param {i} state {key}")
        assert set(opt.state[p]) == set(topt.state[t])


def test_mixed_dtypes_and_groups_match_torch():
    """A float64 parameter among float32 ones, and two groups with their own lr."""
    torch = pytest.importorskip("torch")
    arrays = _params(np.float32)
    arrays[2] = arrays[2].astype(np.float64)
    grad_seq = _grad_sequence(arrays, 10)
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = optim.Adam([{"params": ours[:3]}, {"params": ours[3:], "lr": 0.1}], lr=0.01, amsgrad=True)
    topt = torch.optim.Adam(
        [{"params": theirs[:3]}, {"params": theirs[3:], "lr": 0.1}], lr=0.01, amsgrad=True, foreach=False
    )
    for grads in grad_seq:
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = Tensor(g.copy()), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        assert p.data.dtype == t.detach().numpy().dtype
        assert_close(p.data, t.detach().numpy())


def test_loads_a_torch_state_dict_and_continues_like_torch():
    torch = pytest.importorskip("torch")
    arrays = _params(np.float32)
    grad_seq = _grad_sequence(arrays, 10)
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    topt = torch.optim.RMSprop(theirs, lr=1e-2, momentum=0.9, centered=True, foreach=False)
    for grads in grad_seq[:5]:
        for t, g in zip(theirs, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    saved = topt.state_dict()
    as_numpy = {
        "state": {i: {k: v.numpy() for k, v in s.items()} for i, s in saved["state"].items()},
        "param_groups": saved["param_groups"],
    }
    ours = [Tensor(t.detach().numpy().copy(), requires_grad=True) for t in theirs]
    opt = optim.RMSprop(ours)
    opt.load_state_dict(as_numpy)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["centered"] is True
    for grads in grad_seq[5:]:
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = Tensor(g.copy()), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        assert_close(p.data, t.detach().numpy())


# --------------------------------------------------------------------------- compiled == reference


@pytest.mark.parametrize("name,kw", CONFIGS, ids=CONFIG_IDS)
def test_compiled_and_reference_optimizers_agree_bitwise(name, kw):
    if kernels.backend != "compiled":
        pytest.skip("the compiled kernels are not the active backend")
    arrays = _params(np.float32, shapes=[(3, 4), (5,), (2, 2, 3), ()])
    grad_seq = _grad_sequence(arrays, 5)
    compiled_params, compiled_opt = _run_fastgrad(name, kw, arrays, grad_seq)
    try:
        kernels.use_backend("reference")
        reference_params, reference_opt = _run_fastgrad(name, kw, arrays, grad_seq)
    finally:
        kernels.use_backend("compiled")
    for p, q in zip(compiled_params, reference_params):
        np.testing.assert_array_equal(p.data, q.data)
        for key, value in compiled_opt.state[p].items():
            np.testing.assert_array_equal(value, reference_opt.state[q][key])


# --------------------------------------------------------------------------- construction


def _one_param():
    return [Tensor(np.zeros(3, np.float32), requires_grad=True)]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: optim.SGD(p, lr=-1), "Invalid learning rate: -1"),
        (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (
            lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        (lambda p: optim.Adam(p, lr=-0.01), "Invalid learning rate: -0.01"),
        (lambda p: optim.Adam(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.999)), r"Invalid beta parameter at index 0: 1.0"),
        (lambda p: optim.Adam(p, betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
        (lambda p: optim.AdamW(p, weight_decay=-1), "Invalid weight_decay value: -1"),
        (lambda p: optim.RMSprop(p, alpha=-0.1), "Invalid alpha value: -0.1"),
        (lambda p: optim.RMSprop(p, momentum=-1), "Invalid momentum value: -1"),
        (lambda p: optim.RMSprop(p, lr=float("nan")), "Invalid learning rate: nan"),
        (lambda p: optim.SGD([{"params": p, "lr": -2}], lr=0.1), "Invalid learning rate: -2"),
        # stricter than PyTorch: non-finite values would turn every updated parameter to inf or NaN
        (lambda p: optim.SGD(p, lr=float("inf")), "Invalid learning rate: inf"),
        (lambda p: optim.SGD(p, lr=0.1, dampening=float("nan")), "Invalid dampening value: nan"),
        (lambda p: optim.Adam(p, eps=float("inf")), "Invalid epsilon value: inf"),
        (lambda p: optim.RMSprop(p, alpha=float("inf")), "Invalid alpha value: inf"),
    ],
)
def test_invalid_hyperparameters_raise_with_torch_wording(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make(_one_param())


def test_bad_parameter_lists_raise():
    p = _one_param()[0]
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="duplicate parameters"):
        optim.Adam([p, p])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors, but one of the params is numpy.ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.SGD([Tensor(np.zeros(3, np.int64))], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})


def test_add_param_group_fills_defaults_and_steps_it():
    a, b = _one_param()[0], _one_param()[0]
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    a.grad = Tensor(np.ones(3, np.float32))
    b.grad = Tensor(np.ones(3, np.float32))
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)
    np.testing.assert_allclose(b.data, -0.5)


# --------------------------------------------------------------------------- stepping


def test_step_updates_in_place_and_skips_parameters_without_grad():
    a, b = _one_param()[0], _one_param()[0]
    data_a, data_b = a.data, b.data
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = Tensor(np.ones(3, np.float32))
    opt.step()
    assert a.data is data_a and b.data is data_b
    np.testing.assert_allclose(a.data, -0.1, rtol=1e-6)
    np.testing.assert_array_equal(b.data, 0.0)
    assert b not in opt.state and opt.state[a]["step"] == 1


def test_zero_grad():
    p = _one_param()[0]
    opt = optim.SGD([p], lr=0.1)
    p.grad = Tensor(np.ones(3, np.float32))
    grad_array = p.grad.data
    opt.zero_grad(set_to_none=False)
    assert p.grad.data is grad_array and not grad_array.any()
    opt.zero_grad()
    assert p.grad is None
    opt.zero_grad()  # no gradient at all: nothing to do


def test_closure_runs_with_grad_enabled_and_returns_its_loss():
    p = Tensor(np.array([2.0], np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.25)
    seen = []

    def closure():
        seen.append(fastgrad.is_grad_enabled())
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with fastgrad.no_grad():
        loss = opt.step(closure)
    assert seen == [True]
    assert loss.item() == pytest.approx(4.0)
    np.testing.assert_allclose(p.data, [1.0])  # 2 - 0.25 * 2 * 2
    assert opt.step() is None


def test_lr_changes_take_effect_on_the_next_step():
    p = _one_param()[0]
    opt = optim.SGD([p], lr=0.1)
    p.grad = Tensor(np.ones(3, np.float32))
    opt.param_groups[0]["lr"] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, -1.0)


def test_repr_lists_the_groups():
    text = repr(optim.SGD(_one_param(), lr=0.1, momentum=0.9))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    momentum: 0.9\n" in text


# --------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize(
    "name,kw",
    [CONFIGS[3], CONFIGS[7], CONFIGS[10], CONFIGS[14]],
    ids=[CONFIG_IDS[3], CONFIG_IDS[7], CONFIG_IDS[10], CONFIG_IDS[14]],
)
def test_state_dict_round_trip_continues_identically(name, kw):
    arrays = _params(np.float32)
    grad_seq = _grad_sequence(arrays, 10)
    straight, _ = _run_fastgrad(name, kw, arrays, grad_seq)
    first, opt = _run_fastgrad(name, kw, arrays, grad_seq[:5])
    saved = opt.state_dict()
    assert sorted(saved["state"]) == list(range(len(arrays)))
    assert saved["param_groups"][0]["params"] == list(range(len(arrays)))
    snapshot = {i: {k: np.array(v, copy=True) for k, v in s.items()} for i, s in saved["state"].items()}
    for p, g in zip(first, grad_seq[5]):  # stepping the old optimizer must not change the saved dict
        p.grad = Tensor(g.copy())
    opt.step()
    for i, s in saved["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(v, snapshot[i][k])
    resumed = [Tensor(q.data.copy(), requires_grad=True) for q in _run_fastgrad(name, kw, arrays, grad_seq[:5])[0]]
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    for step, grads in enumerate(grad_seq[5:], start=5):
        for i, (p, g) in enumerate(zip(resumed, grads)):
            p.grad = None if _skip(step, i) else Tensor(g.copy())
        opt2.step()
    for p, q in zip(resumed, straight):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_rejects_mismatches():
    params = [Tensor(np.zeros(s, np.float32), requires_grad=True) for s in [(3,), (2, 2)]]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = Tensor(np.ones(p.shape, np.float32))
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.SGD(params[:1], lr=0.1).load_state_dict(saved)
    other = [Tensor(np.zeros(s, np.float32), requires_grad=True) for s in [(3,), (4,)]]
    with pytest.raises(
        ValueError,
        match=r"state\[1\]\['momentum_buffer'\] has shape \(2, 2\), but its parameter "
        r"has shape \(4,\)",
    ):
        optim.SGD(other, lr=0.1).load_state_dict(saved)
