"""Sequential's plans (nn/layers/container.py, compile/cache.py): a Sequential of fastgrad's
layers replays a captured plan of its ops. Once planned, its values and gradients are
bit-identical to calling the layers one by one; every change to the layers, weights,
input shape, thread count or backend is seen by a guard; bad input still gets the layers'
errors; a Sequential holding any other module, or a forward set on an instance, runs its
modules one by one on every call. After a traced replay the plan runs as a program of
kernel calls: every replay must pick up replaced weights, hand out new arrays and keep
none of a step's arrays alive."""

import copy
import gc
import pickle
import threading
import weakref

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
import fastgrad.optim as optim
from fastgrad import kernels
from fastgrad.models import lenet5 as lenet
from fastgrad.ops import buffer_pool


def mixed():
    """Strides, padding, no bias, a lone ReLU, and layers of other kinds between."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),
        nn.MaxPool2d(2, stride=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, (2, 3), padding="same", dilation=(1, 2), groups=2),
        nn.Tanh(),
        nn.Conv2d(4, 5, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 7),
        nn.Sigmoid(),
        nn.Linear(7, 3, bias=False),
        nn.ReLU(),
    )


NETS = {"lenet": (lenet, (1, 28, 28)), "mixed": (mixed, (3, 7, 7))}


def node_names(out):
    names, stack, seen = [], [out._ctx], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        names.append(type(fn).__name__)
        stack.extend(p._ctx for p in fn.parents)
    return names


def one_by_one(model, x):
    for layer in model:
        x = layer(x)
    return x


def run(model, x, forward):
    model.zero_grad()
    x.grad = None
    out = forward(x)
    (out * fastgrad.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape).astype(out.data.dtype))).sum().backward()
    return (
        out.data.copy(),
        x.grad.data.copy() if x.grad is not None else None,
        [None if p.grad is None else p.grad.data.copy() for p in model.parameters()],
    )


def assert_same(a, b):
    out_a, gx_a, grads_a = a
    out_b, gx_b, grads_b = b
    np.testing.assert_array_equal(out_a, out_b)
    if gx_a is None or gx_b is None:
        assert gx_a is None and gx_b is None
    else:
        np.testing.assert_array_equal(gx_a, gx_b)
    for ga, gb in zip(grads_a, grads_b):
        if ga is None or gb is None:
            assert ga is None and gb is None
        else:
            np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("input_grad", [False, True])
def test_planned_equals_one_by_one_bit_for_bit(net, dtype, batch, input_grad):
    make, shape = NETS[net]
    model = make().to(dtype)
    data = np.random.default_rng(1).standard_normal((batch,) + shape).astype(dtype)
    x = fastgrad.tensor(data, requires_grad=input_grad)
    first = run(model, x, model)  # captures
    traced = [run(model, x, model) for _ in range(3)]  # replays the ops, tracing their kernel calls
    replayed = [run(model, x, model) for _ in range(2)]  # runs the traced program
    assert plans(model) and all(p.program is not None for p in plans(model))
    assert node_names(model(x)) == ["Replay"]
    reference = run(model, x, lambda v: one_by_one(model, v))
    assert "Replay" not in node_names(one_by_one(model, x))
    assert_same(first, reference)
    for chained in traced + replayed:
        assert_same(chained, reference)


def plans(model):
    """The Plans a Sequential holds (eager entries left out)."""
    return [plan for entries in model._plan_cache.plans.values() for _, plan in entries if plan is not None]


def test_lenet_replay_is_one_node():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    assert node_names(model(x)) == ["Replay"]


def test_frozen_layers_get_no_gradient_and_others_match():
    model = lenet()
    for p in list(model.parameters())[:4]:  # both convolutions frozen
        p.requires_grad_(False)
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    chained = run(model, x, model)
    assert all(g is None for g in chained[2][:4])
    assert_same(chained, run(model, x, lambda v: one_by_one(model, v)))


def test_no_grad_forward_matches_and_records_nothing():
    model = lenet()
    x = fastgrad.randn(4, 1, 28, 28)
    model(x)
    with fastgrad.no_grad():
        out = model(x)
    assert out._ctx is None and not out.requires_grad
    np.testing.assert_array_equal(out.data, one_by_one(model, x).data)


def test_two_forwards_before_one_backward():
    model = lenet()
    x1, x2 = fastgrad.randn(2, 1, 28, 28), fastgrad.randn(2, 1, 28, 28)
    model(x1)
    model.zero_grad()
    (model(x1).sum() + (model(x2) * 2).sum()).backward()
    chained = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    (one_by_one(model, x1).sum() + (one_by_one(model, x2) * 2).sum()).backward()
    for got, want in zip(chained, [p.grad.data for p in model.parameters()]):
        np.testing.assert_array_equal(got, want)


def test_retain_graph_backward_twice_accumulates():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    loss = model(x).sum()
    loss.backward(retain_graph=True)
    once = [p.grad.data.copy() for p in model.parameters()]
    loss.backward()
    for g1, p in zip(once, model.parameters()):
        np.testing.assert_array_equal(p.grad.data, g1 + g1)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_changed_layer_settings_and_weights_are_seen():
    model = mixed()
    x = fastgrad.randn(2, 3, 7, 7)
    model(x)
    model(x)
    model[0].stride = (1, 1)  # the output grows: Linear would now refuse it
    with pytest.raises(ValueError, match="Linear"):
        model(x)
    model[0].stride = (2, 2)
    model[5].weight = nn.Parameter(fastgrad.randn(5, 4, 1, 1))
    model(x)
    assert_same(run(model, x, model), run(model, x, lambda v: one_by_one(model, v)))
    model[5].weight.data = np.zeros((5, 4, 1, 1), np.float32)  # new array, same shape
    assert_same(run(model, x, model), run(model, x, lambda v: one_by_one(model, v)))


def test_weight_of_another_shape_gets_the_layer_error():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    model(x)
    model[3].weight.data = np.zeros((16, 5, 5, 5), np.float32)
    with pytest.raises(ValueError, match="conv2d"):
        model(x)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda: fastgrad.randn(2, 3, 28, 28), ValueError, "Conv2d"),
        (lambda: fastgrad.randn(2, 1, 3, 3), ValueError, "conv2d"),
        (lambda: fastgrad.randn(2, 1, 28, 28, dtype=fastgrad.float64), TypeError, "dtype"),
        (lambda: np.zeros((2, 1, 28, 28), np.float32), TypeError, "Tensor"),
    ],
)
def test_bad_input_after_planning_gets_the_layer_errors(bad, error, match):
    model = lenet()
    model(fastgrad.randn(2, 1, 28, 28))
    model(fastgrad.randn(2, 1, 28, 28))
    with pytest.raises(error, match=match):
        model(bad())


def test_new_batch_size_thread_count_and_backend_each_get_their_plan():
    model = lenet()
    rng = np.random.default_rng(3)
    for batch, threads in [(2, 1), (5, 1), (2, 2), (1, 2)]:
        fastgrad.set_num_threads(threads)
        x = fastgrad.tensor(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
        model(x)
        assert_same(run(model, x, model), run(model, x, lambda v: one_by_one(model, v)))
    fastgrad.set_num_threads(1)
    x = fastgrad.randn(1, 1, 28, 28)
    compiled = run(model, x, model)
    previous = kernels.backend
    try:
        kernels.use_backend("reference")
        reference = run(model, x, model)
    finally:
        kernels.use_backend(previous)
    np.testing.assert_allclose(compiled[0], reference[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled[2], reference[2]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_unbatched_input_runs_layer_by_layer():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2))
    x = fastgrad.randn(1, 8, 8)
    model(x)
    out = model(x)
    assert out.shape == (3, 3, 3)
    np.testing.assert_array_equal(out.data, one_by_one(model, x).data)


def test_anomaly_mode_names_the_layer_op():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    model[7].weight.data[0, 0] = np.inf
    with fastgrad.autograd.detect_anomaly():
        with pytest.raises(fastgrad.autograd.AnomalyError, match="Linear"):
            model(x)


def test_return_indices_pooling_is_not_chained():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True))
    out, indices = model(fastgrad.randn(1, 1, 6, 6))
    assert indices.dtype == np.int64 and out.shape == (1, 2, 2, 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),  # ends in a view
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)),  # starts with one
        lambda: nn.Sequential(nn.Flatten(), nn.ReLU()),
    ],
)
def test_outputs_and_gradients_handed_out_survive_later_steps(make):
    """Arena arrays are reused by the next call: nothing handed to the user may be one."""
    model = make()
    rng = np.random.default_rng(5)
    kept = []
    for _ in range(4):
        x = fastgrad.tensor(rng.standard_normal((2, 1, 4, 4)).astype(np.float32), requires_grad=True)
        out = model(x)
        out.sum().backward()
        kept.append((x, out, out.data.copy(), x.grad.data.copy()))
    for x, out, out_then, grad_then in kept:
        np.testing.assert_array_equal(out.data, out_then)
        np.testing.assert_array_equal(x.grad.data, grad_then)
        model.zero_grad()
        x.grad = None
        again = one_by_one(model, x)
        again.sum().backward()
        np.testing.assert_array_equal(again.data, out_then)
        np.testing.assert_array_equal(x.grad.data, grad_then)


def test_a_graph_dropped_without_backward_leaves_later_steps_correct():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    dropped = [model(x) for _ in range(3)]  # arenas held, then freed with their graphs
    del dropped
    assert_same(run(model, x, model), run(model, x, lambda v: one_by_one(model, v)))


def test_weight_data_of_another_dtype_gets_the_layer_error():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    model(x)
    model[7].weight.data = model[7].weight.data.astype(np.float64)
    with pytest.raises(TypeError, match="linear: input has dtype float32 but weight has float64"):
        model(x)
    model.double()
    assert_same(run(model, x.double(), model), run(model, x.double(), lambda v: one_by_one(model, v)))


def test_one_model_shared_by_threads_gives_each_its_own_arena():
    import threading

    model = lenet()
    rng = np.random.default_rng(9)
    xs = [fastgrad.tensor(rng.standard_normal((3, 1, 28, 28)).astype(np.float32)) for _ in range(4)]
    with fastgrad.no_grad():
        want = [one_by_one(model, x).data.copy() for x in xs]
    got = {}
    errors = []

    def work(i):
        try:
            with fastgrad.no_grad():
                for _ in range(30):
                    out = model(xs[i]).data.copy()
                    if not np.array_equal(out, want[i]):
                        errors.append(i)
            got[i] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_array_equal(got[i], want[i])


def test_making_other_modules_keeps_the_plans():
    """A loss module made inside a training loop must not send every step back to the
    layer-by-layer path: only a change to the Sequential's own layers is a new capture."""
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    before = plans(model)
    nn.CrossEntropyLoss()
    nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model(x)
    stats = model._plan_cache.stats
    assert plans(model) == before and stats["captures"] == 1 and stats["replays"] == 1
    model[3].padding = (1, 1)  # a layer's setting: its guard fails, captured anew
    with pytest.raises(ValueError):  # 16x16 after padding no longer fits Linear(400, ...)
        model(x)
    model[3].padding = (0, 0)
    model(x)
    assert stats["captures"] == 2 and len(plans(model)) == 2


def test_a_forward_set_on_an_instance_runs_on_every_call():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(4):
        model(x)
    calls = []

    def forward(input):
        calls.append(1)
        return nn.functional.relu(input) * 0.5

    model[4].forward = forward
    outs = [model(x) for _ in range(4)]
    assert len(calls) == 4
    for out in outs:
        np.testing.assert_array_equal(out.data, one_by_one(model, x).data)
    assert any("forward set on the instance" in b for b in model._plan_cache.stats["graph_breaks"])
    del model[4].forward
    model(x)
    model(x)
    assert model._plan_cache.stats["replays"] > 4 and len(calls) == 8  # 4 calls and 4 one by one


class Halve(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 0.5 if float(x.sum()) > 0 else x


def test_a_sequential_holding_a_user_module_runs_it_on_every_call():
    halve = Halve()
    model = nn.Sequential(nn.Linear(4, 4), halve, nn.ReLU())
    xs = [fastgrad.randn(3, 4) for _ in range(5)]
    for x in xs:
        np.testing.assert_array_equal(model(x).data, one_by_one(model, x).data)
    assert halve.calls == 10 and not plans(model)
    assert any("Halve" in b for b in model._plan_cache.stats["graph_breaks"])


def vgg_block():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_and_dropout_train_bit_for_bit_as_one_by_one(dtype):
    planned, layers = vgg_block().to(dtype), vgg_block().to(dtype)
    layers.load_state_dict(planned.state_dict())
    rng = np.random.default_rng(2)
    data = [
        (fastgrad.tensor(rng.standard_normal((4, 3, 8, 8)).astype(dtype)), fastgrad.tensor(rng.integers(0, 5, 4)))
        for _ in range(6)
    ]
    fastgrad.manual_seed(7)
    got = train(planned, planned, data)
    fastgrad.manual_seed(7)
    want = train(layers, layer_by_layer(layers), data)
    assert got == want and plans(planned)
    for (ka, a), (kb, b) in zip(planned.state_dict().items(), layers.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(a.data, b.data)
    planned.eval()
    layers.eval()
    x = data[0][0]
    for _ in range(3):
        np.testing.assert_array_equal(planned(x).data, one_by_one(layers, x).data)


def test_a_copy_runs_its_own_weights():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(4):
        model(x).sum().backward()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not plans(clone)
        for p in clone.parameters():
            p.data = p.data * 2
        for _ in range(4):
            np.testing.assert_array_equal(clone(x).data, one_by_one(clone, x).data)
        np.testing.assert_array_equal(model(x).data, one_by_one(model, x).data)


def test_nested_sequentials_and_a_compiled_one_match():
    inner = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
    model = nn.Sequential(nn.Linear(4, 6), inner, nn.Linear(6, 2))
    compiled = fastgrad.compile(model)
    x = fastgrad.randn(3, 4)
    for _ in range(5):
        want = model[2](inner[1](inner[0](model[0](x)))).data
        np.testing.assert_array_equal(model(x).data, want)
        np.testing.assert_array_equal(compiled(x).data, want)
    assert plans(model) and not plans(inner)  # the inner one ran inside the outer's capture


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


def test_training_on_replayed_chains_matches_the_layers_bit_for_bit():
    chained, layers = lenet(), lenet()
    layers.load_state_dict(chained.state_dict())
    data = batches(8)
    got = train(chained, chained, data)
    want = train(layers, layer_by_layer(layers), data)
    assert got == want
    for a, b in zip(chained.parameters(), layers.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    traced = [p.program for p in plans(chained)]
    assert traced and all(p is not None and p.backward_instrs is not None for p in traced)


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
    # the buffer pool keeps the large arrays it made, to hand them out again: off here,
    # so that a live array is one something else holds
    with buffer_pool.disabled():
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
        assert [r() is None for r in refs] == [True] * len(refs)


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


def test_tied_weights_stay_correct():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model[2].weight = model[0].weight  # one parameter used twice: one boundary slot
    x = fastgrad.randn(4, 8)
    for _ in range(3):
        model.zero_grad()
        out = model(x)
        out.sum().backward()
    assert plans(model)
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
    (plan,) = plans(model)
    program = plan.program
    for _ in range(3):
        model(x1)  # dropped: its arena goes with it
    model.zero_grad()
    outs = [model(x1), model(x2), model(x1)]  # three arenas in use at once
    (outs[0].sum() + 2 * outs[1].sum() + 3 * outs[2].sum()).backward()
    got = [o.data.copy() for o in outs] + [p.grad.data.copy() for p in model.parameters()]
    assert plans(model) == [plan] and plan.program is program
    model.zero_grad()
    forward = layer_by_layer(model)
    want_outs = [forward(x1), forward(x2), forward(x1)]
    (want_outs[0].sum() + 2 * want_outs[1].sum() + 3 * want_outs[2].sum()).backward()
    want = [o.data for o in want_outs] + [p.grad.data for p in model.parameters()]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_a_dropped_graph_gives_its_arena_back():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    for _ in range(3):
        model(x).sum().backward()
    (plan,) = plans(model)
    arenas = list(plan.program.spare)
    out = model(x)  # takes an arena; dropping the graph (no backward) gives it back
    assert len(plan.program.spare) == len(arenas) - 1
    kept = out.data.copy()
    del out
    assert sorted(map(id, plan.program.spare)) == sorted(map(id, arenas))
    np.testing.assert_array_equal(model(x).data, kept)


def test_hooks_on_the_sequential_itself_run_every_call_while_its_plan_replays():
    # Module.__call__ runs the Sequential's own hooks around its forward, so they neither
    # keep it eager nor miss a call; hooks on a module inside it must see every call of
    # that module, so those keep it eager while registered
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28, requires_grad=True)
    seen = []
    pre = model.register_forward_pre_hook(lambda m, args: seen.append("pre"))
    post = model.register_forward_hook(lambda m, args, out: out * 2)
    grads = []
    back = model.register_full_backward_hook(lambda m, gin, gout: grads.append(gout[0].data.copy()))
    expected = one_by_one(model, x).data * 2
    for _ in range(4):
        out = model(x)
        np.testing.assert_array_equal(out.data, expected)
        out.sum().backward()
    assert seen == ["pre"] * 4 and len(grads) == 4
    assert model._plan_cache.stats["replays"] == 3 and len(plans(model)) == 1
    for h in (pre, post, back):
        h.remove()
    np.testing.assert_array_equal(model(x).data, expected / 2)
    inner = []
    h = model[0].register_forward_hook(lambda m, args, out: inner.append(1))
    replays = model._plan_cache.stats["replays"]
    for _ in range(3):
        model(x)
    assert len(inner) == 3 and model._plan_cache.stats["replays"] == replays
    h.remove()  # planned again (the hook registry it made is new module state), then replayed
    model(x)
    model(x)
    assert model._plan_cache.stats["replays"] == replays + 1
