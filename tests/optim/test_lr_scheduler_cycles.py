"""OneCycleLR and CosineAnnealingWarmRestarts: lr (and momentum) sequences against PyTorch,
values by hand without it, fractional epochs, state dicts and errors."""

import math

import numpy as np
import pytest

from fastgrad import optim
from fastgrad.optim import lr_scheduler
from fastgrad.tensor import Tensor


def _params():
    return [Tensor(np.zeros(2, np.float32), requires_grad=True) for _ in range(2)]


def _groups(params):
    return [{"params": params[:1]}, {"params": params[1:], "lr": 0.3}]


ONE_CYCLE = [
    dict(max_lr=1.0, total_steps=20),
    dict(max_lr=[0.5, 2.0], epochs=3, steps_per_epoch=7, pct_start=0.4, anneal_strategy="linear"),
    dict(max_lr=0.1, total_steps=30, three_phase=True, div_factor=10.0, final_div_factor=100.0),
    dict(max_lr=0.1, total_steps=12, cycle_momentum=False),
    dict(max_lr=0.1, total_steps=15, base_momentum=[0.8, 0.7], max_momentum=0.9),
]


def _sequence(sched, opt, steps, key):
    out = [[g[key] for g in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append([g[key] for g in opt.param_groups])
    return out


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("kw", ONE_CYCLE)
def test_one_cycle_matches_torch(kw, opt_name):
    torch = pytest.importorskip("torch")
    extra = {"momentum": 0.9} if opt_name == "SGD" else {}
    opt = getattr(optim, opt_name)(_groups(_params()), lr=0.1, **extra)
    topt = getattr(torch.optim, opt_name)(
        _groups([torch.zeros(2, requires_grad=True) for _ in range(2)]), lr=0.1, **extra
    )
    steps = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    ours = lr_scheduler.OneCycleLR(opt, **kw)
    theirs = torch.optim.lr_scheduler.OneCycleLR(topt, **kw)
    key = "momentum" if opt_name == "SGD" else "betas"
    seq = [[(g["lr"], g[key]) for g in opt.param_groups]]
    tseq = [[(g["lr"], g[key]) for g in topt.param_groups]]
    for _ in range(steps - 1):
        opt.step()
        topt.step()
        ours.step()
        theirs.step()
        seq.append([(g["lr"], g[key]) for g in opt.param_groups])
        tseq.append([(g["lr"], g[key]) for g in topt.param_groups])
    assert seq == tseq
    assert ours.get_last_lr() == theirs.get_last_lr()
    for mine, other in zip(opt.param_groups, topt.param_groups):
        for name in ("initial_lr", "max_lr", "min_lr"):
            assert mine[name] == other[name]


def test_one_cycle_by_hand_and_past_the_end():
    opt = optim.SGD(_params(), lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.2, anneal_strategy="linear")
    lrs = [x[0] for x in _sequence(sched, opt, 9, "lr")]
    # warm-up: 0.04 -> 1.0 over steps 0..1, then linear down to 0.04 / 1e4 at step 9
    assert lrs[0] == pytest.approx(0.04) and lrs[1] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.04 / 1e4)
    assert lrs[5] == pytest.approx(1.0 + (4e-6 - 1.0) * 4 / 8)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95)
    opt.step()
    sched.step()  # step 10 == total_steps: still allowed (PyTorch checks step_num > total_steps)
    with pytest.raises(ValueError, match="Tried to step 11 times. The specified number of total steps is 10"):
        sched.step()


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(max_lr=0.1), r"You must define either total_steps OR \(epochs AND steps_per_epoch\)"),
        (dict(max_lr=0.1, total_steps=0), "Expected positive integer total_steps, but got 0"),
        (dict(max_lr=0.1, epochs=2.0, steps_per_epoch=3), "Expected positive integer epochs, but got 2.0"),
        (dict(max_lr=0.1, total_steps=5, pct_start=1), "Expected float between 0 and 1 pct_start, but got 1"),
        (
            dict(max_lr=0.1, total_steps=5, anneal_strategy="exp"),
            "anneal_strategy must be one of 'cos' or 'linear', instead got exp",
        ),
        (dict(max_lr=[0.1], total_steps=5), "max_lr must have the same length as optimizer.param_groups"),
    ],
)
def test_one_cycle_errors(kw, message):
    opt = optim.SGD(_groups(_params()), lr=0.1)
    with pytest.raises(ValueError, match=message):
        lr_scheduler.OneCycleLR(opt, **kw)


def test_one_cycle_needs_a_momentum():
    opt = optim.Adagrad(_params())
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5)
    lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=5, cycle_momentum=False)


WARM_RESTARTS = [dict(T_0=5), dict(T_0=3, T_mult=2, eta_min=0.01), dict(T_0=1, T_mult=3)]


@pytest.mark.parametrize("kw", WARM_RESTARTS)
def test_warm_restarts_match_torch(kw):
    torch = pytest.importorskip("torch")
    opt = optim.SGD(_groups(_params()), lr=0.1)
    topt = torch.optim.SGD(_groups([torch.zeros(2, requires_grad=True) for _ in range(2)]), lr=0.1)
    ours = lr_scheduler.CosineAnnealingWarmRestarts(opt, **kw)
    theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, **kw)
    assert _sequence(ours, opt, 30, "lr") == _sequence(theirs, topt, 30, "lr")
    # fractional and jumping epochs, as within an epoch loop, then plain steps again
    for epoch in (2.5, 3.0, 7.25, 26, 0.5):
        ours.step(epoch)
        theirs.step(epoch)
        assert ours.get_last_lr() == theirs.get_last_lr()
        assert (ours.T_i, ours.T_cur, ours.last_epoch) == (theirs.T_i, theirs.T_cur, theirs.last_epoch)
    ours.step()
    theirs.step()
    assert ours.get_last_lr() == theirs.get_last_lr()


def test_warm_restarts_by_hand():
    opt = optim.SGD(_params(), lr=1.0)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2)
    lrs = [x[0] for x in _sequence(sched, opt, 7, "lr")]
    cycle = lambda t, T: (1 + math.cos(math.pi * t / T)) / 2  # noqa: E731
    assert lrs == pytest.approx(
        [cycle(0, 2), cycle(1, 2), cycle(0, 4), cycle(1, 4), cycle(2, 4), cycle(3, 4), cycle(0, 8), cycle(1, 8)]
    )
    sched.step(1.5)
    assert sched.get_last_lr()[0] == pytest.approx(cycle(1.5, 2))
    state = sched.state_dict()
    other = lr_scheduler.CosineAnnealingWarmRestarts(optim.SGD(_params(), lr=1.0), T_0=9)
    other.load_state_dict(state)
    assert (other.T_0, other.T_i, other.T_cur) == (2, 2, 1.5)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(T_0=0), "Expected positive integer T_0, but got 0"),
        (dict(T_0=2.0), "Expected positive integer T_0, but got 2.0"),
        (dict(T_0=2, T_mult=0), "Expected integer T_mult >= 1, but got 0"),
        (dict(T_0=2, eta_min="0"), "Expected float or int eta_min"),
    ],
)
def test_warm_restarts_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        lr_scheduler.CosineAnnealingWarmRestarts(optim.SGD(_params(), lr=0.1), **kw)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(optim.SGD(_params(), lr=0.1), T_0=2)
    with pytest.raises(ValueError, match="Expected non-negative epoch, but got -1"):
        sched.step(-1)
