"""Replayed chains (fastgrad/ops/replay.py): after one traced run, a chain's kernel calls
are replayed with new inputs, weights, gradients and workspaces filled in. Every replay
must compute what the layers compute, pick up replaced weights, hand out new arrays and
keep none of a step's arrays alive; a chain whose calls cannot be replayed runs its steps."""

import gc
import threading
import weakref

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
import fastgrad.optim as optim
from fastgrad.models import lenet5 as lenet


def layer_by_layer(model):
    def forward(x):
        for layer in model:
            x = layer(x)
        return x

    return forward


def batches(n, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            fastgrad.tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)),
            fastgrad.tensor(rng.integers(0, 10, batch)),
        )
        for _ in range(n)
    ]


def train(model, forward, data):
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def programs(model):
    """The (needs -> Traced or False) tables of the model's chain plans."""
    return [plan.programs for call in model._calls() for plan, _ in getattr(call, "plans", {}).values()]


def test_training_on_replayed_chains_matches_the_layers_bit_for_bit():
    chained, layers = lenet(), lenet()
    layers.load_state_dict(chained.state_dict())
    data = batches(8)
    got = train(chained, chained, data)
    want = train(layers, layer_by_layer(layers), data)
    assert got == want
    for a, b in zip(chained.parameters(), layers.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    replayed = [t for table in programs(chained) for t in table.values()]
    assert replayed and all(t and t.backward is not None for t in replayed)


def test_replaced_weight_data_is_used_by_the_replay():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(3):
        model(x).sum().backward()
    rng = np.random.default_rng(3)
    for layer in (model[0], model[9]):
        layer.weight.data = rng.standard_normal(layer.weight.shape).astype(np.float32)
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    grads = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    want = layer_by_layer(model)(x)
    want.sum().backward()
    np.testing.assert_array_equal(out.data, want.data)
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad.data)


def test_each_replay_hands_out_new_arrays_and_keeps_none_alive():
    model = lenet()
    opt = optim.SGD(model.parameters(), lr=0.01)
    for x, y in batches(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
    x, y = batches(1, seed=1)[0]
    opt.zero_grad()
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    first = [p.grad.data for p in model.parameters()]
    refs = [weakref.ref(a) for a in [x.data, out.data] + first]
    opt.zero_grad()
    x2, y2 = batches(1, seed=2)[0]
    out2 = model(x2)
    nn.functional.cross_entropy(out2, y2).backward()
    second = [p.grad.data for p in model.parameters()]
    assert out2.data is not out.data
    assert all(a is not b and not np.shares_memory(a, b) for a, b in zip(first, second))
    del x, out, first, y
    gc.collect()
    assert all(r() is None for r in refs)


def test_no_grad_replays_match_the_layers():
    model = lenet()
    data = batches(4, batch=2, seed=4)
    with fastgrad.no_grad():
        got = [model(x).data.copy() for x, _ in data + data]
        want = [layer_by_layer(model)(x).data for x, _ in data + data]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_backward_on_another_thread_matches():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(3):
        model.zero_grad()
        model(x).sum().backward()
    want = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    out = model(x).sum()
    thread = threading.Thread(target=out.backward)
    thread.start()
    thread.join()
    for w, p in zip(want, model.parameters()):
        np.testing.assert_array_equal(w, p.grad.data)


def test_tied_weights_are_not_replayed_and_stay_correct():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model[2].weight = model[0].weight  # one parameter used twice: two slots, one array
    x = fastgrad.randn(4, 8)
    for _ in range(3):
        model.zero_grad()
        out = model(x)
        out.sum().backward()
    tables = programs(model)
    assert tables and all(t is False for table in tables for t in table.values())
    got = [out.data.copy()] + [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    want = layer_by_layer(model)(x)
    want.sum().backward()
    for a, b in zip(got, [want.data] + [p.grad.data for p in model.parameters()]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_input_gradient_through_a_replay(needs_input_grad):
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28, requires_grad=needs_input_grad)
    for _ in range(4):
        x.grad = None
        model.zero_grad()
        model(x).sum().backward()
    got = None if x.grad is None else x.grad.data.copy()
    x.grad = None
    layer_by_layer(model)(x).sum().backward()
    if needs_input_grad:
        np.testing.assert_array_equal(got, x.grad.data)
    else:
        assert got is None and x.grad is None


def test_programs_are_traced_once_per_plan_and_serve_every_arena():
    """Graphs dropped without backward, and several graphs alive at once (each on its own
    arena), replay the plan's one traced program and stay correct."""
    model = lenet()
    x1, x2 = fastgrad.randn(2, 1, 28, 28), fastgrad.randn(2, 1, 28, 28)
    for _ in range(3):
        model.zero_grad()
        model(x1).sum().backward()
    (table,) = programs(model)
    traced = dict(table)
    for _ in range(3):
        model(x1)  # dropped: its arena goes with it
    model.zero_grad()
    outs = [model(x1), model(x2), model(x1)]  # three arenas in use at once
    (outs[0].sum() + 2 * outs[1].sum() + 3 * outs[2].sum()).backward()
    got = [o.data.copy() for o in outs] + [p.grad.data.copy() for p in model.parameters()]
    assert table == traced and all(table[k] is traced[k] for k in traced)
    model.zero_grad()
    forward = layer_by_layer(model)
    want_outs = [forward(x1), forward(x2), forward(x1)]
    (want_outs[0].sum() + 2 * want_outs[1].sum() + 3 * want_outs[2].sum()).backward()
    want = [o.data for o in want_outs] + [p.grad.data for p in model.parameters()]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_an_array_of_unknown_origin_is_never_replayed():
    """Only the given arrays, the arena's and those the run made through StepBuffers.new
    may appear in a program: anything else (an array a step keeps, say) stops the trace."""
    from fastgrad.ops.replay import Slots, Untraceable

    x, arena_array, made = np.ones(4), np.ones(6), np.ones(2)
    slots = Slots([x, None], [arena_array], [made])
    assert slots.place(x) == ("slot", 0, None)
    assert slots.place(x.reshape(2, 2)) == ("slot", 0, (2, 2))
    assert slots.place(made) == ("slot", 2, None)
    assert slots.place(arena_array.reshape(3, 2)) == ("arena", 0, (3, 2))
    assert slots.place(3) is None
    with pytest.raises(Untraceable):
        slots.place(np.ones(4))  # owns its memory, but nobody said it was made
    with pytest.raises(Untraceable):
        slots.place(arena_array[:3])  # part of an arena array
    with pytest.raises(Untraceable):
        Slots([x, x[1:]], [], [])  # given arrays sharing memory


def test_a_dropped_graph_gives_its_arena_back():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(3):
        model(x).sum().backward()
    ((plan, _),) = model._calls()[0].plans.values()
    arenas = list(plan.spare)
    out = model(x)  # takes an arena; dropping the graph (no backward) gives it back
    assert len(plan.spare) == len(arenas) - 1
    kept = out.data.copy()
    del out
    assert sorted(map(id, plan.spare)) == sorted(map(id, arenas))
    np.testing.assert_array_equal(model(x).data, kept)


def test_a_program_calls_the_kernels_it_traced_whatever_their_names():
    """Kernel names go into the program's text only when they cannot collide with the
    names the text itself uses (run, values, arena, empty, s0, a0, c0, ...)."""
    from fastgrad.ops.replay import Program, Slots

    seen = []

    def make(name):
        def kernel(*args):
            seen.append((name, args[1]))

        kernel.__name__ = name
        return kernel

    x, arena_array = np.ones(3), np.zeros(2)
    kernels_ = [make(n) for n in ("run", "values", "s0", "a0", "empty", "linear_forward")]
    calls = [(k, (x, i), None) for i, k in enumerate(kernels_)]
    slots = Slots([x], [arena_array], [])
    program = Program(calls, slots, [x])
    values = [np.full(3, 7.0)]
    (out,) = program.run(values, [arena_array])
    assert seen == [(k.__name__, i) for i, k in enumerate(kernels_)]
    assert out is values[0]
    assert "linear_forward(s0, 5)" in program.source and "run(s0" not in program.source
