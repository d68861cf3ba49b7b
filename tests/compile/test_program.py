"""Traced programs (fastgrad/compile/program.py): after a capture and one traced replay,
a plan runs the kernel calls its ops made, as data. Checked: which entries a trace
follows and which run as their ops (an array numpy made, a non-replayable op, a
gradient that escapes), values bit for bit against eager over many steps in float32
and float64, a replaced parameter array, no-grad plans, and the engine loops
(run_instructions, guard_holds) compiled against their pure-Python twins."""

import importlib

import numpy as np
import pytest

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import kernels, nn
from fastgrad.compile import program
from fastgrad.compile.guards import ModuleGuard
from fastgrad.reference import engine as reference_engine


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut, ReLU after the add; pooled, flattened, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.short = nn.Conv2d(3, 8, 1, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)) + self.short(x))
        h = F.max_pool2d(h, 2)
        return F.log_softmax(self.fc(fastgrad.flatten(h, 1)), dim=1)


class Sliced(nn.Module):
    """A slice (numpy's copy feeds the first Linear: it runs as its op), dropout (never
    traced: random numbers), then a Linear whose input is traced again."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 7)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        h = F.relu(self.fc1(fastgrad.flatten(x, 1)[:, :6]))
        return self.fc2(self.drop(h))


def _plan(compiled):
    (entries,) = compiled._plans.values()
    return entries[-1][1]


def _train(call, model, xs, ys, steps, input_grad):
    opt = fastgrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    out = []
    for i in range(steps):
        x = fastgrad.tensor(xs[i % len(xs)], requires_grad=input_grad)
        opt.zero_grad()
        y = call(x)
        F.nll_loss(y, fastgrad.from_numpy(ys[i % len(ys)])).backward()
        out += [y.data.copy()] + [p.grad.data.copy() for p in model.parameters()]
        if input_grad:
            out.append(x.grad.data.copy())
        opt.step()
    return out + [b.data.copy() for b in model.buffers()]


def _eager_and_compiled(make, x_shape, dtype, steps=6, input_grad=True, classes=5):
    fastgrad.manual_seed(0)
    eager, model = make().to(dtype), make().to(dtype)
    model.load_state_dict(eager.state_dict())
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(x_shape).astype(dtype) for _ in range(3)]
    ys = [rng.integers(0, classes, x_shape[0]) for _ in range(3)]
    compiled = fastgrad.compile(model)
    runs = []
    for call, m in ((eager, eager), (compiled, model)):
        fastgrad.manual_seed(5)
        runs.append(_train(call, m, xs, ys, steps, input_grad))
    for i, (u, v) in enumerate(zip(*runs)):
        np.testing.assert_array_equal(u, v, err_msg=f"item {i}")
    return compiled


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_grad", [False, True])
def test_a_residual_net_replays_its_kernel_calls_bit_for_bit(dtype, input_grad):
    compiled = _eager_and_compiled(Residual, (4, 3, 8, 8), dtype, input_grad=input_grad)
    plan = _plan(compiled)
    assert plan.program is not None
    names = [e.cls.__name__ for e in plan.entries]
    traced = {n for n, code in zip(names, plan.program.forward) if code is not None}
    # every op of this net writes through kernels and pooled arrays: all traced
    assert {"Conv2d", "BatchNorm", "AddReLU", "MaxPool2d", "Reshape", "Linear", "LogSoftmax"} <= traced
    assert all(plan.program.backward[i] is not None for i in plan.back)
    assert compiled.compile_stats["replays"] >= 4  # replays after the traced one ran the program


def test_what_a_trace_cannot_follow_runs_as_its_op():
    compiled = _eager_and_compiled(Sliced, (4, 2, 2, 2), np.float32, steps=6, classes=3)
    plan = _plan(compiled)
    codes = dict(zip([(e.cls.__name__, e.site) for e in plan.entries], plan.program.forward))
    by_name = {}
    for (name, _), code in codes.items():
        by_name.setdefault(name, []).append(code is not None)
    assert by_name["Dropout"] == [False]  # not replays_kernels: random numbers
    assert by_name["Index"] == [False]
    # fc1 reads numpy's copy of the slice (an array a trace cannot place); fc2 is traced
    assert by_name["Linear"] == [False, True]


def test_a_replaced_parameter_array_after_the_program_is_seen():
    fastgrad.manual_seed(0)
    eager, model = Residual(), Residual()
    model.load_state_dict(eager.state_dict())
    compiled = fastgrad.compile(model)
    x = fastgrad.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32))
    for _ in range(4):
        compiled(x).sum().backward()
    assert _plan(compiled).program is not None
    new = np.random.default_rng(3).standard_normal(model.fc.weight.shape).astype(np.float32)
    model.fc.weight.data = fastgrad.from_numpy(new.copy())
    eager.fc.weight.data = fastgrad.from_numpy(new.copy())
    for m in (eager, model):
        m.zero_grad()
    for _ in range(3):
        want, got = eager(x), compiled(x)
        np.testing.assert_array_equal(want.data, got.data)
    want.sum().backward()
    got.sum().backward()
    for p, q in zip(eager.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.grad.data, q.grad.data)


def test_no_grad_plans_are_traced_and_match_eager():
    fastgrad.manual_seed(0)
    eager, model = Residual().eval(), Residual().eval()
    model.load_state_dict(eager.state_dict())
    compiled = fastgrad.compile(model)
    x = fastgrad.from_numpy(np.random.default_rng(4).standard_normal((3, 3, 8, 8)).astype(np.float32))
    with fastgrad.no_grad():
        for _ in range(4):
            np.testing.assert_array_equal(eager(x).data, compiled(x).data)
    assert _plan(compiled).program is not None


def test_tracing_leaves_the_kernels_and_the_pool_as_they_were():
    before = {name: getattr(kernels, name) for name in program._kernel_names()}
    empty, copy = fastgrad.ops.buffer_pool.empty, fastgrad.ops.buffer_pool.copy
    _eager_and_compiled(Residual, (2, 3, 8, 8), np.float32, steps=3)
    assert all(getattr(kernels, name) is f for name, f in before.items())
    assert fastgrad.ops.buffer_pool.empty is empty and fastgrad.ops.buffer_pool.copy is copy


# --------------------------------------------------------------------------- engine twins


def _engines():
    homes = [reference_engine]
    try:
        homes.append(importlib.import_module(f"fastgrad._ext.{kernels.simd_variant or 'v3'}._engine"))
    except ImportError:
        pass
    return homes


@pytest.mark.parametrize("engine", _engines(), ids=lambda m: m.__name__)
def test_run_instructions_fills_calls_and_stores(engine):
    calls = []

    def record(*args):
        calls.append(args)
        return len(calls)

    vals = ["a", "b", None, None]
    instrs = (
        (record, [None, 7, None], ((0, 1), (2, 0)), 2, (0,), None),  # record("b", 7, "a") -> vals[2]
        (record, ["k"], (), -1, (), None),  # no fills, result dropped
        (record, [None], ((0, 2),), 3, (), None),  # reads what the first call stored
    )
    engine.run_instructions(instrs, vals)
    assert calls == [("b", 7, "a"), ("k",), (1,)]
    assert vals == [None, "b", 1, 3]  # slot 0 cleared after the first call
    assert instrs[0][1] == [None, 7, None]  # the argument template is not written

    def refuse(*args):
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused") as info:
        engine.run_instructions(((refuse, [], (), -1, (), "raised by X replayed from here"),), vals)
    assert "raised by X replayed from here" in info.value.__notes__


def test_the_pure_python_engine_replays_bit_for_bit():
    """The reference kernels and engine loops (replay_backward, run_instructions,
    guard_holds) through the same compiled-module machinery."""
    previous = kernels.backend
    kernels.use_backend("reference")
    try:
        compiled = _eager_and_compiled(Residual, (2, 3, 8, 8), np.float64, steps=4)
    finally:
        kernels.use_backend(previous)
    assert _plan(compiled).program is not None


@pytest.mark.parametrize("engine", _engines(), ids=lambda m: m.__name__)
def test_guard_holds_sees_each_kind_of_change(engine):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    model[0].register_forward_hook(lambda *a: None).remove()  # its registry exists, empty
    guard = ModuleGuard(model)
    args = (guard.modules, guard.tensor_objects, guard.arrays, guard.flags, guard.hooks)
    assert engine.guard_holds(*args)
    conv = model[0]
    conv.stride = (2, 2)  # an attribute replaced
    assert not engine.guard_holds(*args)
    conv.__dict__["stride"] = guard.modules[1][3][list(guard.modules[1][2]).index("stride")]
    assert engine.guard_holds(*args)
    conv.extra = 1  # an attribute added
    assert not engine.guard_holds(*args)
    del conv.extra
    assert engine.guard_holds(*args)
    conv.weight.requires_grad_(False)
    assert not engine.guard_holds(*args)
    conv.weight.requires_grad_(True)
    old = conv.weight._data
    conv.weight._data = old.copy()
    assert not engine.guard_holds(*args)
    conv.weight._data = old
    handle = conv.register_forward_hook(lambda *a: None)
    assert not engine.guard_holds(*args)
    handle.remove()
    assert engine.guard_holds(*args)


def test_a_fixed_backward_walk_with_retain_graph_and_two_graphs_matches_eager():
    """Every op of Residual's backward is traced: its walk is one list of instructions.
    Backward twice through a retained graph, and two graphs alive at once."""
    fastgrad.manual_seed(0)
    eager, model = Residual(), Residual()
    model.load_state_dict(eager.state_dict())
    compiled = fastgrad.compile(model)
    rng = np.random.default_rng(6)
    x1, x2 = (fastgrad.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)) for _ in range(2))
    for _ in range(3):
        compiled(x1).sum().backward()
    assert _plan(compiled).program.backward_instrs is not None
    for m in (eager, model):
        m.zero_grad()
    got = {}
    for name, call in (("eager", eager), ("compiled", compiled)):
        y = call(x1).sum()
        y.backward(retain_graph=True)
        y.backward()
        a, b = call(x1), call(x2)
        (b * 2.0).sum().backward()
        a.sum().backward()
        got[name] = [a.data.copy(), b.data.copy()]
    for u, v in zip(got["eager"], got["compiled"]):
        np.testing.assert_array_equal(u, v)
    for p, q in zip(eager.parameters(), model.parameters()):
        np.testing.assert_array_equal(p.grad.data, q.grad.data)


class Deep(nn.Module):
    """Ten convolutions whose outputs nothing keeps after the next one ran (no gradient):
    a run holds two of them at a time."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(10)])

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def test_a_traced_replay_lets_go_of_arrays_as_the_run_does():
    """A trace knows arrays by identity without holding them: a traced run's peak memory
    is the eager run's, not the sum of every array the run made."""
    import tracemalloc

    compiled = fastgrad.compile(Deep())
    x = fastgrad.randn(4, 8, 32, 32)  # 128 KiB per activation
    peaks = []
    with fastgrad.no_grad(), fastgrad.ops.buffer_pool.disabled():
        tracemalloc.start()
        try:
            for _ in range(3):  # the capture (eager), then two traced replays
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                compiled(x)
                peaks.append(tracemalloc.get_traced_memory()[1] - base)
        finally:
            tracemalloc.stop()
    plan = next(iter(compiled._plans.values()))[0][1]
    assert plan.traces_left < 3  # the replays were traced
    activation = 4 * 8 * 32 * 32 * 4
    assert peaks[0] < 4 * activation
    assert max(peaks[1:]) < 4 * activation, (peaks, activation)
