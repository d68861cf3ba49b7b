"""Tensor and Module hooks: PyTorch's order and semantics (checked against torch where it is
installed, and against hand-computed gradients where it is not), handles, every call."""

import numpy as np
import pytest

import fastgrad
from fastgrad import nn

torch_or_skip = lambda: pytest.importorskip("torch")  # noqa: E731


def _t(values, grad=True):
    return fastgrad.tensor(np.array(values, np.float64), requires_grad=grad)


# --------------------------------------------------------------------------- tensor hooks


def test_non_leaf_hook_sees_and_replaces_the_gradient():
    x = _t([1.0, 2.0, 3.0])
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    y.register_hook(lambda g: g * 10)
    (y * y).sum().backward()
    np.testing.assert_allclose(seen[0], 2 * np.array([2.0, 4.0, 6.0]))  # d(sum y^2)/dy = 2y
    np.testing.assert_allclose(x.grad.numpy(), 10 * 2 * 2 * np.array([2.0, 4.0, 6.0]))


def test_leaf_hook_runs_once_on_the_summed_gradient():
    w = _t([1.0, -2.0])
    calls = []

    def hook(g):
        calls.append(g.numpy().copy())
        return g * 3

    handle = w.register_hook(hook)
    (w * w + w * 5).sum().backward()  # w reaches the loss three ways
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 * np.array([1.0, -2.0]) + 5)
    np.testing.assert_allclose(w.grad.numpy(), 3 * calls[0])
    handle.remove()
    handle.remove()  # a second remove does nothing
    w.grad = None
    (w * 5).sum().backward()
    assert len(calls) == 1
    np.testing.assert_allclose(w.grad.numpy(), [5.0, 5.0])


def test_leaf_hook_on_the_root_itself_and_accumulation():
    w = _t([2.0])
    w.register_hook(lambda g: g * 4)
    w.backward(fastgrad.tensor(np.array([1.0])))
    w.backward(fastgrad.tensor(np.array([1.0])))
    np.testing.assert_allclose(w.grad.numpy(), [8.0])


def test_retain_grad_runs_after_the_hooks_and_accumulates():
    x = _t([1.0, 2.0])
    y = x * 3
    assert not y.is_leaf and x.is_leaf and not y.retains_grad
    y.retain_grad()
    assert y.retains_grad
    y.register_hook(lambda g: g + 1)  # registered after retain_grad, still runs before it
    z = (y * y).sum()
    z.retain_grad()
    z.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad.numpy(), 2 * np.array([3.0, 6.0]) + 1)
    np.testing.assert_allclose(z.grad.numpy(), 1.0)
    z.backward()
    np.testing.assert_allclose(y.grad.numpy(), 2 * (2 * np.array([3.0, 6.0]) + 1))
    x.retain_grad()  # a leaf: nothing to do


def test_hook_errors():
    x = fastgrad.tensor(np.ones(2, np.float32))
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
        x.register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="can't retain_grad on Tensor that has requires_grad=False"):
        x.retain_grad()
    w = fastgrad.tensor(np.ones(2, np.float32), requires_grad=True)
    w.register_hook(lambda g: fastgrad.tensor(np.ones(3, np.float32)))
    with pytest.raises(RuntimeError, match="has changed the size of value"):
        (w * 2).sum().backward()
    v = fastgrad.tensor(np.ones(2, np.float32), requires_grad=True)
    y = v * 2
    y.register_hook(lambda g: g.double())
    with pytest.raises(RuntimeError, match="has changed the type of value"):
        y.sum().backward()


def test_tensor_hooks_match_torch():
    torch = torch_or_skip()
    data = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    records = {}
    for lib in (fastgrad, torch):
        w = lib.tensor(data.copy(), requires_grad=True)
        log = []
        h = w * w
        h.retain_grad()
        h.register_hook(lambda g: log.append(("h", g.detach().numpy().copy())) or g * 2)
        w.register_hook(lambda g: log.append(("w", g.detach().numpy().copy())))
        out = (h.sum(1) * lib.tensor(np.array([1.0, -3.0]))).sum() + (w * 4).sum()
        out.backward()
        records[lib] = (log, w.grad.numpy().copy(), h.grad.numpy().copy())
    (log_f, wg_f, hg_f), (log_t, wg_t, hg_t) = records[fastgrad], records[torch]
    assert [k for k, _ in log_f] == [k for k, _ in log_t] == ["h", "w"]
    for (_, a), (_, b) in zip(log_f, log_t):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(wg_f, wg_t)
    np.testing.assert_allclose(hg_f, hg_t)


# --------------------------------------------------------------------------- module hooks


def _net(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(
        lib.nn.Conv2d(1, 3, 3), lib.nn.ReLU(), lib.nn.MaxPool2d(2), lib.nn.Flatten(), lib.nn.Linear(12, 4)
    )


def _copy_weights(src, dst):
    import torch

    with torch.no_grad():
        for (_, p), (_, q) in zip(src.named_parameters(), dst.named_parameters()):
            q.copy_(torch.from_numpy(p.data.astype(np.float32)))


def _watch(lib, net, log):
    handles = []
    for name, m in net.named_children():
        handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: log.append(("pre", n, args[0].shape))))
        handles.append(m.register_forward_hook(lambda mod, args, out, n=name: log.append(("fwd", n, out.shape))))
        handles.append(
            m.register_full_backward_hook(
                lambda mod, gin, gout, n=name: log.append(
                    ("bwd", n, None if gin[0] is None else gin[0].shape, gout[0].detach().numpy().copy())
                )
            )
        )
    return handles


def test_module_hooks_fire_on_a_planned_sequential_every_call():
    net = _net(fastgrad)
    x = fastgrad.randn(2, 1, 6, 6)
    for _ in range(3):  # the second and later calls replay a plan, which calls no module
        net(x)
    log = []
    handles = _watch(fastgrad, net, log)
    for call in range(3):
        log.clear()
        with pytest.warns(
            UserWarning, match="Full backward hook is firing when gradients are computed with respect to module outputs"
        ):
            net(x).sum().backward()
        assert [e[:2] for e in log if e[0] != "bwd"] == [(k, n) for n in "01234" for k in ("pre", "fwd")]
        assert [e[1] for e in log if e[0] == "bwd"] == list("43210")
        first = [e for e in log if e[0] == "bwd" and e[1] == "0"][0]
        assert first[2] is None  # the input does not require grad
    for h in handles:
        h.remove()
    log.clear()
    net(x).sum().backward()
    assert log == []


def test_module_hooks_match_torch():
    torch = torch_or_skip()
    ours, theirs = _net(fastgrad), _net(torch)
    _copy_weights(ours, theirs)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    logs = {}
    for lib, net in ((fastgrad, ours), (torch, theirs)):
        log = []
        _watch(lib, net, log)
        inp = lib.tensor(x.copy(), requires_grad=True)
        net(inp).sum().backward()
        logs[lib] = log
    a, b = logs[fastgrad], logs[torch]
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert ea[:2] == eb[:2]
        assert tuple(ea[2]) == tuple(eb[2])
        if ea[0] == "bwd":
            np.testing.assert_allclose(ea[3], eb[3], rtol=1e-5, atol=1e-6)


def test_hooks_replace_inputs_outputs_and_grad_input():
    lin = nn.Linear(3, 2)
    x = fastgrad.tensor(np.ones((1, 3), np.float32), requires_grad=True)
    h1 = lin.register_forward_pre_hook(lambda m, args: args[0] * 2)  # a bare value becomes (value,)
    h2 = lin.register_forward_hook(lambda m, args, out: out + 1)
    h3 = lin.register_full_backward_hook(lambda m, gin, gout: (gin[0] * 0.5,))
    out = lin(x)
    w, b = lin.weight.data, lin.bias.data
    np.testing.assert_allclose(out.detach().numpy(), 2 * np.ones((1, 3)) @ w.T + b + 1, rtol=1e-6)
    out.sum().backward()
    # d out / d x = 2 * W^T 1 (the pre-hook doubles x), halved by the backward hook
    np.testing.assert_allclose(x.grad.numpy(), 0.5 * 2 * w.sum(0, keepdims=True), rtol=1e-6)
    for h in (h1, h2, h3):
        h.remove()
    np.testing.assert_allclose(lin(x).detach().numpy(), np.ones((1, 3)) @ w.T + b, rtol=1e-6)


def test_hook_options_kwargs_prepend_and_context_manager():
    lin = nn.Linear(2, 2)
    order = []
    lin.register_forward_hook(lambda m, a, o: order.append("second"))
    lin.register_forward_hook(lambda m, a, o: order.append("first"), prepend=True)
    lin.register_forward_pre_hook(lambda m, args, kwargs: ((args[0] * 0,), kwargs), with_kwargs=True)
    with lin.register_forward_hook(lambda m, a, kw, o: order.append(("kw", kw)), with_kwargs=True):
        out = lin(fastgrad.ones(1, 2))
    lin(fastgrad.ones(1, 2))
    assert order == ["first", "second", ("kw", {}), "first", "second"]
    np.testing.assert_allclose(out.detach().numpy(), lin.bias.data[None], rtol=1e-6)


def test_backward_hook_errors():
    lin = nn.Linear(2, 2)
    lin.register_full_backward_hook(lambda m, gin, gout: (gin[0], gin[0]))
    x = fastgrad.ones(1, 2, requires_grad=True)
    with pytest.raises(
        RuntimeError, match="Backward hook returned an invalid number of grad_input, got 2, but expected 1"
    ):
        lin(x).sum().backward()
    lin2 = nn.Linear(2, 2)
    lin2.register_full_backward_hook(lambda m, gin, gout: (fastgrad.ones(1, 2),))
    with pytest.raises(RuntimeError, match="no input requires gradient should always return None"):
        lin2(fastgrad.ones(1, 2)).sum().backward()
    with pytest.raises(TypeError, match="expected a callable"):
        lin2.register_forward_hook(3)


def test_a_hooked_layer_leaves_the_plan_and_returns_after_remove():
    net = _net(fastgrad)
    x = fastgrad.randn(2, 1, 6, 6)
    net(x)
    net(x)
    stats = net._plan_cache.stats
    assert stats["replays"] == 1
    seen = []
    handle = net[1].register_forward_hook(lambda m, a, o: seen.append(o.shape))
    net(x)
    net(x)
    assert seen == [(2, 3, 4, 4)] * 2 and stats["replays"] == 1
    assert any("hooks" in b for b in stats["graph_breaks"])
    handle.remove()
    net(x)  # the hook registry the module gained is new state: captured anew
    net(x)
    assert len(seen) == 2 and stats["replays"] == 2


def test_a_raising_leaf_hook_leaves_nothing_behind():
    a, b = _t([1.0]), _t([2.0])
    a.register_hook(lambda g: (_ for _ in ()).throw(ValueError("stop")))
    calls = []
    b.register_hook(lambda g: calls.append(1))
    with pytest.raises(ValueError, match="stop"):
        (a * b).sum().backward()
    c = _t([1.0])
    (c * b).sum().backward()  # b's gradient from this backward only
    np.testing.assert_allclose(b.grad.numpy(), [1.0])
