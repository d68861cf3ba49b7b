"""Tensor.register_post_accumulate_grad_hook: called once per backward, after the leaf's
.grad holds every contribution of that pass; oracle: the gradient backward leaves behind,
and the order in which the backward walk finishes leaves."""

import numpy as np
import pytest

import fastgrad
from fastgrad import nn


def test_hook_sees_the_complete_gradient_of_a_leaf_used_twice():
    w = fastgrad.tensor([1.0, 2.0, 3.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    x = fastgrad.tensor([2.0, 5.0, 7.0])
    ((w * x).sum() + (w * w).sum() * 3.0).backward()  # two paths into w: the hook runs once, after both
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], w.grad.data)
    np.testing.assert_allclose(seen[0], x.data + 6.0 * w.data)


def test_hook_runs_once_per_backward_and_sees_the_accumulated_sum():
    w = fastgrad.tensor([1.0, -1.0], requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    (w * 2.0).sum().backward()
    (w * 3.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 2.0])
    np.testing.assert_array_equal(seen[1], [5.0, 5.0])


def test_hooks_fire_from_the_output_back_while_backward_runs():
    fastgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    events = []
    names = {id(p): n for n, p in model.named_parameters()}
    handles = [
        p.register_post_accumulate_grad_hook(
            lambda t: events.append((names[id(t)], [q.grad is None for q in model.parameters()]))
        )
        for p in model.parameters()
    ]
    model(fastgrad.randn(6, 4)).sum().backward()
    fired = [n for n, _ in events]
    # the last layer's parameters are finished first; the first layer's last
    assert set(fired[:2]) == {"4.weight", "4.bias"} and set(fired[-2:]) == {"0.weight", "0.bias"}
    # when the last layer's hooks ran, the first layer's gradient did not exist yet: the hooks
    # run during backward, not after it
    first_event_grads_missing = events[0][1]
    assert first_event_grads_missing[0] and first_event_grads_missing[1]
    for h in handles:
        h.remove()


def test_remove_unregisters_and_gradients_are_unchanged():
    fastgrad.manual_seed(1)
    lin = nn.Linear(3, 2)
    x = fastgrad.randn(4, 3)
    lin(x).sum().backward()
    plain = [p.grad.data.copy() for p in lin.parameters()]
    lin.zero_grad()
    calls = []
    handle = lin.weight.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    lin(x).sum().backward()
    np.testing.assert_array_equal(lin.weight.grad.data, plain[0])
    np.testing.assert_array_equal(lin.bias.grad.data, plain[1])
    assert calls == [1]
    handle.remove()
    handle.remove()  # a second remove does nothing
    lin(x).sum().backward()
    assert calls == [1]


def test_hook_on_a_leaf_that_is_the_output():
    w = fastgrad.tensor(2.0, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(float(t.grad.item())))
    w.backward()
    assert seen == [1.0]


def test_no_call_for_a_leaf_no_gradient_reached():
    a = fastgrad.tensor([1.0], requires_grad=True)
    b = fastgrad.tensor([1.0], requires_grad=True)
    calls = []
    b.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    (a * 2.0).sum().backward()
    assert calls == [] and b.grad is None


def test_bad_registrations_raise():
    w = fastgrad.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        fastgrad.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="callable"):
        w.register_post_accumulate_grad_hook(3)


def test_matches_pytorch_calls_and_values():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w1, w2, x = rng.standard_normal((3, 4)), rng.standard_normal((2, 3)), rng.standard_normal((5, 4))
    results = {}
    for lib in ("torch", "fastgrad"):
        mod = torch if lib == "torch" else fastgrad
        a = mod.tensor(w1, requires_grad=True)
        b = mod.tensor(w2, requires_grad=True)
        order = []
        a.register_post_accumulate_grad_hook(lambda t, order=order: order.append(("a", t.grad.detach().numpy().copy())))
        b.register_post_accumulate_grad_hook(lambda t, order=order: order.append(("b", t.grad.detach().numpy().copy())))
        h = (mod.tensor(x) @ a.T).relu()
        ((h @ b.T) ** 2).sum().backward()
        results[lib] = order
    # one call per leaf, each seeing the final gradient (the order of independent branches
    # follows each engine's walk and may differ)
    assert sorted(n for n, _ in results["torch"]) == sorted(n for n, _ in results["fastgrad"]) == ["a", "b"]
    want = dict(results["torch"])
    for name, got in results["fastgrad"]:
        np.testing.assert_allclose(got, want[name], rtol=1e-5)


def test_gradient_hooks_of_a_leaf_run_before_its_post_accumulate_hook():
    # PyTorch's order on a leaf: register_hook hooks change the gradient, it is accumulated,
    # then the post-accumulate-grad hook sees the final .grad (once, after both paths).
    w = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    w.register_hook(lambda g: g * 10.0)
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    ((w * 3.0).sum() + (w * w).sum()).backward()
    expected = 10.0 * (3.0 + 2.0 * np.array([1.0, 2.0], dtype=np.float32))
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected)
    np.testing.assert_allclose(w.grad.data, expected)


def test_removing_the_last_post_accumulate_hook_leaves_plain_backward():
    from fastgrad import hooks

    live = hooks.live_post_accumulate.n  # hooks other tests left on tensors still count
    w = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(1))
    assert hooks.live_post_accumulate.n == live + 1
    handle.remove()
    handle.remove()  # a second remove does nothing
    assert hooks.live_post_accumulate.n == live
    (w * 2.0).sum().backward()
    assert seen == []
    np.testing.assert_array_equal(w.grad.data, [2.0, 2.0])
