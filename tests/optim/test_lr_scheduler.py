"""Learning-rate schedulers: the lr sequences of PyTorch's schedulers, state dicts, and errors."""

import math
import warnings

import numpy as np
import pytest

from fastgrad import optim
from fastgrad.optim import lr_scheduler
from fastgrad.tensor import Tensor


class Scale:
    """A picklable lr_lambda object with state, as LambdaLR saves the attributes of such objects."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, epoch):
        return self.factor**epoch


SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=4)),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 1.0 / (1 + epoch))),
    ("LambdaLR", dict(lr_lambda=[lambda epoch: 0.95**epoch, Scale(0.5)])),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(SCHEDULERS)]


def _groups(module, params):
    return [{"params": params[:1]}, {"params": params[1:], "lr": 0.3}]


def _fastgrad_optimizer():
    params = [Tensor(np.zeros(2, np.float32), requires_grad=True) for _ in range(2)]
    return optim.SGD(_groups(None, params), lr=0.1, momentum=0.9)


def _lr_sequence(sched, opt, steps, metric=None):
    lrs = [list(sched.get_last_lr())]
    for k in range(steps):
        opt.step()
        if metric is None:
            sched.step()
        else:
            sched.step(metric(k))
        lrs.append(list(sched.get_last_lr()))
        assert lrs[-1] == [g["lr"] for g in opt.param_groups]
    return lrs


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=IDS)
def test_lr_sequence_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    opt = _fastgrad_optimizer()
    ours = _lr_sequence(getattr(lr_scheduler, name)(opt, **kw), opt, 25)
    tparams = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    topt = torch.optim.SGD(_groups(None, tparams), lr=0.1, momentum=0.9)
    theirs = _lr_sequence(getattr(torch.optim.lr_scheduler, name)(topt, **kw), topt, 25)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)


METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.89, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85]


@pytest.mark.parametrize(
    "kw",
    [
        dict(patience=2),
        dict(mode="max", factor=0.5, patience=1, threshold=0.01, cooldown=2),
        dict(patience=0, threshold_mode="abs", threshold=0.05, min_lr=[0.01, 0.05]),
        dict(patience=1, factor=0.5, eps=0.02),
    ],
)
def test_reduce_lr_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    metric = lambda k: METRICS[k % len(METRICS)]  # noqa: E731
    opt = _fastgrad_optimizer()
    ours = _lr_sequence(lr_scheduler.ReduceLROnPlateau(opt, **kw), opt, 30, metric)
    tparams = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    topt = torch.optim.SGD(_groups(None, tparams), lr=0.1, momentum=0.9)
    theirs = _lr_sequence(torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw), topt, 30, metric)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name,kw", SCHEDULERS[:4], ids=IDS[:4])
def test_step_with_an_epoch_uses_the_closed_form_as_torch(name, kw):
    torch = pytest.importorskip("torch")
    opt = _fastgrad_optimizer()
    tparams = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    topt = torch.optim.SGD(_groups(None, tparams), lr=0.1)
    ours, theirs = getattr(lr_scheduler, name)(opt, **kw), getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in (4, 1, 11, 6):
            opt.step()
            topt.step()
            ours.step(epoch)
            theirs.step(epoch)
            np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-15)


def test_step_lr_by_hand():
    opt = _fastgrad_optimizer()
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    lrs = [lr[0] for lr in _lr_sequence(sched, opt, 5)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert sched.last_epoch == 5 and opt.param_groups[0]["initial_lr"] == 0.1


def test_cosine_by_hand():
    opt = _fastgrad_optimizer()
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.0)
    lrs = [lr[0] for lr in _lr_sequence(sched, opt, 10)]
    expected = [0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(11)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "name,kw", SCHEDULERS + [("ReduceLROnPlateau", dict(patience=1))], ids=IDS + ["ReduceLROnPlateau"]
)
def test_state_dict_round_trip(name, kw):
    def run(sched, opt, steps, start=0):
        out = []
        for k in range(start, start + steps):
            opt.step()
            sched.step(METRICS[k]) if name == "ReduceLROnPlateau" else sched.step()
            out.append(sched.get_last_lr())
        return out

    opt = _fastgrad_optimizer()
    straight = run(getattr(lr_scheduler, name)(opt, **kw), opt, 12)
    opt1 = _fastgrad_optimizer()
    first = getattr(lr_scheduler, name)(opt1, **kw)
    run(first, opt1, 6)
    saved_opt, saved_sched = opt1.state_dict(), first.state_dict()
    assert "optimizer" not in saved_sched
    opt2 = _fastgrad_optimizer()
    second = getattr(lr_scheduler, name)(opt2, **kw)
    opt2.load_state_dict(saved_opt)
    second.load_state_dict(saved_sched)
    assert run(second, opt2, 6, start=6) == straight[6:]


def test_lambda_lr_saves_callable_objects_but_not_functions():
    opt = _fastgrad_optimizer()
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, Scale(0.5)])
    saved = sched.state_dict()
    assert saved["lr_lambdas"] == [None, {"factor": 0.5}]
    other = lr_scheduler.LambdaLR(_fastgrad_optimizer(), [lambda e: 1.0, Scale(0.9)])
    other.load_state_dict(saved)
    assert other.lr_lambdas[1].factor == 0.5


def test_errors():
    opt = _fastgrad_optimizer()
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        lr_scheduler.StepLR([], step_size=1)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=1, last_epoch=3)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode middle is unknown!"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="middle")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 3"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0, 0, 0])


def test_warns_when_stepped_before_the_optimizer():
    opt = _fastgrad_optimizer()
    sched = lr_scheduler.StepLR(opt, step_size=1)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt2 = _fastgrad_optimizer()
    sched2 = lr_scheduler.StepLR(opt2, step_size=1)
    opt2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched2.step()
