"""Sequential's chained runs (fastgrad.ops.chain): once planned, a run of Conv2d, Linear,
ReLU, MaxPool2d and Flatten layers is one graph node whose values and gradients are
bit-identical to calling the layers one by one; every change to the layers, weights,
input shape, thread count or backend is seen; bad input still gets the layers' errors."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
from fastgrad import kernels
from fastgrad.models import lenet5 as lenet


def mixed():
    """Chainable runs cut by other layers; strides, padding, no bias, a lone ReLU."""
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
def test_chained_equals_one_by_one_bit_for_bit(net, dtype, batch, input_grad):
    make, shape = NETS[net]
    model = make().to(dtype)
    data = np.random.default_rng(1).standard_normal((batch,) + shape).astype(dtype)
    x = fastgrad.tensor(data, requires_grad=input_grad)
    first = run(model, x, model)  # plans
    traced = run(model, x, model)  # runs the steps, tracing their kernel calls
    replayed = [run(model, x, model) for _ in range(2)]  # replays them
    assert "Chain" in node_names(model(x))
    reference = run(model, x, lambda v: one_by_one(model, v))
    assert "Chain" not in node_names(one_by_one(model, x))
    assert_same(first, reference)
    assert_same(traced, reference)
    for chained in replayed:
        assert_same(chained, reference)


def test_lenet_chain_is_one_node():
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    assert node_names(model(x)) == ["Chain"]


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
    with pytest.raises(TypeError, match="linear_relu: input has dtype float32 but weight has float64"):
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
    layer-by-layer path: only assignments to chained layers drop plans."""
    model = lenet()
    x = fastgrad.randn(2, 1, 28, 28)
    model(x)
    run_ = model._calls()[0]
    plans = dict(run_.plans)
    nn.CrossEntropyLoss()
    nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model(x)
    assert run_.plans == plans and all(run_.plans[k] is plans[k] for k in plans)
    model[3].padding = (1, 1)  # a chained layer's setting: re-planned
    with pytest.raises(ValueError):  # 16x16 after padding no longer fits Linear(400, ...)
        model(x)
    model[3].padding = (0, 0)
    model(x)
    assert all(run_.plans.get(k) is not plans[k] for k in plans)
