"""Replayed plans as graphs: two forwards before one backward, retain_graph, outputs and
gradients that outlive later steps, graphs dropped without backward, tied weights, a
backward on another thread, one compiled model shared by threads, anomaly mode, and bad
input after planning getting the eager errors. Each compared bit for bit with eager."""

import threading

import numpy as np
import pytest

import fastgrad
from fastgrad import nn
from fastgrad.nn import functional as F


class Tied(nn.Module):
    """Conv, BatchNorm, a residual add, and one Linear used twice (tied weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = h + self.conv(x)
        h = fastgrad.flatten(F.max_pool2d(h, 2), 1)[:, :6]
        return self.fc(F.relu(self.fc(h)))


def pair():
    fastgrad.manual_seed(0)
    a, b = Tied(), Tied()
    b.load_state_dict(a.state_dict())
    return a, fastgrad.compile(b), b


def data(seed, n=3):
    return fastgrad.from_numpy(np.random.default_rng(seed).standard_normal((n, 2, 6, 6)).astype(np.float32))


def warm(compiled, x):
    """Call until the plan replays its traced program (compile/program.py): a capture,
    then a traced replay with its backward."""
    while compiled.compile_stats["replays"] < 2:
        y = compiled(x)
        if y.requires_grad:
            y.sum().backward()
    assert all(p.program is not None for entries in compiled._plans.values() for _, p in entries)


def grads(model):
    return [p.grad.data.copy() for p in model.parameters()]


def assert_same(xs, ys):
    assert len(xs) == len(ys)
    for u, v in zip(xs, ys):
        np.testing.assert_array_equal(u, v)


def test_tied_weights_two_forwards_then_backwards_match_eager():
    eager, compiled, model = pair()
    x1, x2 = data(1), data(2)
    warm(compiled, x1)
    for m in (eager, model):
        m.zero_grad()
    outs = {}
    for name, call in (("eager", eager), ("compiled", compiled)):
        y1, y2 = call(x1), call(x2)  # two graphs alive at once
        (y2 * 2.0).sum().backward()
        y1.sum().backward()
        outs[name] = [y1.data.copy(), y2.data.copy()]
    assert_same(outs["eager"], outs["compiled"])
    assert_same(grads(eager), grads(model))


def test_retain_graph_backward_twice_accumulates_as_eager():
    eager, compiled, model = pair()
    x = data(3)
    warm(compiled, x)
    for call, m in ((eager, eager), (compiled, model)):
        m.zero_grad()
        y = call(x).sum()
        y.backward(retain_graph=True)
        y.backward()
    assert_same(grads(eager), grads(model))
    y = compiled(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


class Wide(nn.Module):
    """Outputs and input gradients of 128 and 64 KiB: arrays from the buffer pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def test_outputs_and_gradients_handed_out_survive_later_steps():
    compiled = fastgrad.compile(Wide())
    rng = np.random.default_rng(4)
    xs = [
        fastgrad.tensor(rng.standard_normal((16, 4, 16, 16)).astype(np.float32), requires_grad=True) for _ in range(4)
    ]
    warm(compiled, xs[0])
    kept = []
    for x in xs:
        y = compiled(x)
        y.sum().backward()
        kept.append((y, y.data.copy(), x.grad, x.grad.data.copy()))
        compiled(x)  # a graph dropped without backward
    for y, y_copy, g, g_copy in kept:
        np.testing.assert_array_equal(y.data, y_copy)
        np.testing.assert_array_equal(g.data, g_copy)
    arrays = [a for y, _, g, _ in kept for a in (y.data, g.data)]
    for i, a in enumerate(arrays):  # none handed out twice
        assert not any(np.shares_memory(a, b) for b in arrays[i + 1 :])


def test_backward_on_another_thread_matches():
    eager, compiled, model = pair()
    x = data(5)
    warm(compiled, x)
    eager.zero_grad()
    model.zero_grad()
    eager(x).sum().backward()
    y = compiled(x).sum()
    t = threading.Thread(target=y.backward)
    t.start()
    t.join()
    assert_same(grads(eager), grads(model))


def test_one_compiled_model_shared_by_threads():
    eager, compiled, _ = pair()
    eager.eval()
    compiled.eval()
    xs = [data(10 + i, n=2) for i in range(4)]
    with fastgrad.no_grad():
        want = [eager(x).data.copy() for x in xs]
    got, errors = [None] * len(xs), []

    def work(i):
        try:
            with fastgrad.no_grad():
                for _ in range(20):
                    got[i] = compiled(xs[i]).data.copy()
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_same(want, got)


def test_anomaly_mode_runs_eagerly_and_names_the_op():
    _, compiled, model = pair()
    x = data(6)
    warm(compiled, x)
    model.conv.weight.data[0, 0, 0, 0] = np.nan
    with fastgrad.autograd.detect_anomaly(), pytest.raises(fastgrad.autograd.AnomalyError, match="Conv2d"):
        compiled(x)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda: fastgrad.randn(3, 5, 6, 6), ValueError),
        (lambda: fastgrad.randn(3, 2, 6, 6).double(), TypeError),
    ],
)
def test_bad_input_after_planning_gets_the_eager_error(bad, error):
    eager, compiled, _ = pair()
    warm(compiled, data(7))
    with pytest.raises(error) as want:
        eager(bad())
    with pytest.raises(error) as got:
        compiled(bad())
    assert str(got.value) == str(want.value)
