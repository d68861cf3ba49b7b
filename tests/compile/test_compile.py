"""fastgrad.compile: replayed plans give bit for bit what the eager model gives (values,
gradients, running statistics, dropout masks), across thread counts; every guard is
seen (train/eval, attributes, a forward replaced on an instance, requires_grad, shapes,
replaced arrays, hooks); what cannot be captured runs eagerly and is counted, or raises
under fullgraph=True naming the module and the operation; the plan cache is bounded."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn.functional as F
from fastgrad import kernels, nn
from fastgrad.compile import CaptureError


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus a 1x1 shortcut, ReLU after the add."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block(3, 8, 2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        h = F.max_pool2d(self.block(x), 2)
        return F.log_softmax(self.fc(self.drop(fastgrad.flatten(h, 1))), dim=1)


def batches(dtype, n=3, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 3, 8, 8)).astype(dtype), rng.integers(0, 5, batch)) for _ in range(n)]


def train(call, model, data, steps, input_grad=False):
    """``steps`` SGD steps through ``call``; everything a step produces, copied."""
    opt = fastgrad.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    record = []
    for i in range(steps):
        x, y = data[i % len(data)]
        x = fastgrad.tensor(x, requires_grad=input_grad)
        opt.zero_grad()
        out = call(x)
        loss = F.nll_loss(out, fastgrad.from_numpy(y))
        loss.backward()
        record.append(out.data.copy())
        record.extend(p.grad.data.copy() for p in model.parameters())
        if input_grad:
            record.append(x.grad.data.copy())
        opt.step()
    record.extend(b.data.copy() for b in model.buffers())
    return record


def twins(dtype=np.float32):
    fastgrad.manual_seed(3)
    a = Net().to(dtype)
    b = Net().to(dtype)
    b.load_state_dict(a.state_dict())
    return a, b


def assert_all_equal(one, two):
    assert len(one) == len(two)
    for i, (u, v) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(u, v, err_msg=f"item {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_grad", [False, True])
def test_replay_is_bit_identical_to_eager(dtype, input_grad):
    eager_model, model = twins(dtype)
    data = batches(dtype)
    fastgrad.manual_seed(7)
    eager = train(eager_model, eager_model, data, 5, input_grad)
    compiled = fastgrad.compile(model)
    fastgrad.manual_seed(7)
    replayed = train(compiled, model, data, 5, input_grad)
    assert compiled.compile_stats["replays"] >= 3
    assert_all_equal(eager, replayed)


@pytest.mark.skipif(kernels.backend != "compiled", reason="the reference kernels ignore n_threads")
def test_replay_is_bit_identical_across_thread_counts():
    before = fastgrad.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            fastgrad.set_num_threads(threads)
            _, model = twins()
            fastgrad.manual_seed(7)
            runs.append(train(fastgrad.compile(model), model, batches(np.float32, batch=32), 4))
    finally:
        fastgrad.set_num_threads(before)
    assert_all_equal(*runs)


def test_no_grad_inference_and_eval_mode_match_eager():
    eager_model, model = twins()
    compiled = fastgrad.compile(model)
    x = fastgrad.from_numpy(batches(np.float32)[0][0])
    for mode in ("eval", "train", "eval"):
        getattr(eager_model, mode)()
        getattr(compiled, mode)()
        assert model.training == (mode == "train")
        for _ in range(3):
            with fastgrad.no_grad():
                fastgrad.manual_seed(1)
                want = eager_model(x)
                fastgrad.manual_seed(1)
                got = compiled(x)
            assert got.grad_fn is None
            np.testing.assert_array_equal(got.data, want.data)
    assert compiled.compile_stats["replays"] > 0
    captures = compiled.compile_stats["captures"]
    for mode in ("train", "eval") * 3:  # each mode's plan is kept: no capture anew
        getattr(compiled, mode)()
        with fastgrad.no_grad():
            compiled(x)
    assert compiled.compile_stats["captures"] == captures


def step_output(call, x):
    fastgrad.manual_seed(5)
    return call(x).data.copy()


def test_changed_attributes_replaced_forward_and_new_shapes_are_seen():
    eager_model, model = twins()
    compiled = fastgrad.compile(model)
    x = fastgrad.from_numpy(batches(np.float32)[0][0])
    for _ in range(3):
        step_output(compiled, x)
    # an attribute of a layer
    model.block.bn1.eps = eager_model.block.bn1.eps = 0.5
    np.testing.assert_array_equal(step_output(compiled, x), step_output(eager_model, x))
    # a forward replaced on one instance, seen on every call
    calls = []

    def doubled(inp, orig=model.block.forward):
        calls.append(1)
        return orig(inp) * 2.0

    model.block.forward = doubled
    outs = [step_output(compiled, x) for _ in range(4)]
    eager_model.block.forward = lambda inp, orig=eager_model.block.forward: orig(inp) * 2.0
    want = step_output(eager_model, x)
    for out in outs:
        np.testing.assert_array_equal(out, want)
    assert len(calls) >= 1
    # another input shape
    x2 = fastgrad.from_numpy(np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32))
    model.fc = eager_model.fc = None  # shapes change the classifier: use a fresh one in both
    fastgrad.manual_seed(2)
    model.fc = nn.Linear(8 * 3 * 3, 5)
    eager_model.fc = nn.Linear(8 * 3 * 3, 5)
    eager_model.fc.load_state_dict(model.fc.state_dict())
    np.testing.assert_array_equal(step_output(compiled, x2), step_output(eager_model, x2))
    np.testing.assert_array_equal(step_output(compiled, x2), step_output(eager_model, x2))


def test_requires_grad_changes_and_replaced_arrays_are_seen():
    eager_model, model = twins()
    compiled = fastgrad.compile(model)
    data = batches(np.float32)
    fastgrad.manual_seed(7)
    train(compiled, model, data, 3)
    fastgrad.manual_seed(7)
    train(eager_model, eager_model, data, 3)
    for m in (model, eager_model):
        m.block.conv1.weight.requires_grad_(False)
        m.fc.weight.data = m.fc.weight.data * 0.5  # a new array
    x, y = data[0]
    for call, m in ((compiled, model), (eager_model, eager_model)):
        m.zero_grad()
        fastgrad.manual_seed(11)  # the same dropout mask
        F.nll_loss(call(fastgrad.from_numpy(x)), fastgrad.from_numpy(y)).backward()
    assert model.block.conv1.weight.grad is None
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        if q.grad is None:
            assert p.grad is None, name
        else:
            np.testing.assert_array_equal(p.grad.data, q.grad.data, err_msg=name)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if h.sum().item() > 0:  # a branch on a value: cannot be captured
            return F.relu(h)
        return -h


def test_a_branch_on_a_value_runs_eagerly_and_is_counted():
    model = Branchy()
    compiled = fastgrad.compile(model)
    rng = np.random.default_rng(0)
    for _ in range(6):
        x = fastgrad.from_numpy(rng.standard_normal((2, 4)).astype(np.float32) * 3)
        np.testing.assert_array_equal(compiled(x).data, model(x).data)
    stats = compiled.compile_stats
    assert stats["replays"] == 0 and stats["eager_calls"] == 6
    assert any("Tensor.item" in b for b in stats["graph_breaks"])


def test_fullgraph_raises_naming_the_module_and_the_operation():
    compiled = fastgrad.compile(Branchy(), fullgraph=True)
    with pytest.raises(CaptureError, match=r"Branchy: Tensor\.item at .*test_compile\.py"):
        compiled(fastgrad.randn(2, 4))


def test_hooks_keep_a_module_eager():
    model = Net()
    compiled = fastgrad.compile(model)
    x = fastgrad.randn(2, 3, 8, 8)
    while compiled.compile_stats["replays"] == 0:
        compiled(x)
    seen = []
    model.block.__dict__["_forward_hooks"] = {0: lambda *a: seen.append(1)}  # as a hook registry holds them
    compiled(x)
    compiled(x)
    assert compiled.compile_stats["replays"] == 1  # nothing replayed while a hook is there
    assert any("hooks" in b for b in compiled.compile_stats["graph_breaks"])


def test_an_error_in_a_replay_names_the_users_line(monkeypatch):
    model = Net()
    compiled = fastgrad.compile(model)
    x = fastgrad.randn(2, 3, 8, 8)
    while compiled.compile_stats["captures"] == 0:
        compiled(x)

    def broken(*args):
        raise ValueError("max_pool2d_forward: refused")

    monkeypatch.setattr(kernels, "max_pool2d_forward", broken)
    with pytest.raises(ValueError, match="refused") as info:
        compiled(x)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "MaxPool2d" in notes and "test_compile.py" in notes


def test_the_plan_cache_is_bounded():
    model = Net()
    model.fc = nn.Identity()
    compiled = fastgrad.compile(model, cache_size_limit=2)
    for size in (8, 12, 16, 8):
        x = fastgrad.randn(2, 3, size, size)
        compiled(x)
        compiled(x)
    assert sum(len(v) for v in compiled._plans.values()) <= 2
    assert compiled.compile_stats["captures"] == 4  # 8 was dropped and captured again


def test_the_compiled_module_behaves_as_the_original():
    model = Net()
    compiled = fastgrad.compile(model)
    assert list(compiled.parameters()) == list(model.parameters())
    assert compiled.block is model.block
    assert set(compiled.state_dict()) == {"_orig_mod." + k for k in model.state_dict()}
    assert fastgrad.compile(model, disable=True) is model
    with pytest.raises(TypeError, match="Module"):
        fastgrad.compile(lambda x: x)


def test_the_default_cache_size_is_settable(monkeypatch):
    monkeypatch.setattr(fastgrad.compile, "cache_size_limit", 3)
    assert fastgrad.compile(Net()).cache_size_limit == 3
    assert fastgrad.compile(Net(), cache_size_limit=5).cache_size_limit == 5


class ConvLinearRelu(nn.Module):
    def __init__(self, reuse):
        super().__init__()
        self.reuse = reuse
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        h = self.conv(x)
        r = F.relu(h)
        if self.reuse:  # the convolution's output is read twice: no fusion
            r = r + h
        return F.relu(self.fc(fastgrad.flatten(r, 1)))


def _plan_of(compiled):
    (entries,) = compiled._plans.values()
    return entries[0][1]


def fused_against_eager(make, x_shape, training=True):
    """Train copies of ``make()`` eagerly and compiled for three steps on the same inputs
    (a weighted sum as the loss, so every output element matters); assert the outputs,
    input and parameter gradients and buffers equal bit for bit; return the compiled
    module's plan."""
    fastgrad.manual_seed(0)
    eager, model = make(), make()
    model.load_state_dict(eager.state_dict())
    eager.train(training)
    model.train(training)
    compiled = fastgrad.compile(model)
    runs = []
    for call, m in ((eager, eager), (compiled, model)):
        rng = np.random.default_rng(0)
        out = []
        for step in range(3):
            x = fastgrad.tensor(rng.standard_normal(x_shape).astype(np.float32), requires_grad=True)
            m.zero_grad()
            y = call(x)
            (y * fastgrad.tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape).astype(np.float32))).sum().backward()
            out += [y.data.copy(), x.grad.data.copy()] + [p.grad.data.copy() for p in m.parameters()]
            out += [b.data.copy() for b in m.buffers()]
        runs.append(out)
    assert_all_equal(*runs)
    return _plan_of(compiled)


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("batch", [2, 9])  # the linear backward's one-pass and blocked paths
def test_a_relu_after_a_conv_or_linear_is_fused_bit_for_bit(reuse, batch):
    plan = fused_against_eager(lambda: ConvLinearRelu(reuse), (batch, 3, 8, 8))
    names = [(e.cls.__name__, e.params.get("relu")) for e in plan.entries]
    assert ("Linear", True) in names
    if reuse:
        assert ("Conv2d", False) in names and ("ReLU", None) in names
    else:
        assert ("Conv2d", True) in names and all(n != "ReLU" for n, _ in names)


class BatchNormRelu(nn.Module):
    def __init__(self, reuse, affine):
        super().__init__()
        self.reuse = reuse
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4, affine=affine)

    def forward(self, x):
        h = self.bn(self.conv(x))
        r = F.relu(h)
        if self.reuse:  # the normalization's output is read twice: no fusion
            r = r * h
        return r


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_a_relu_after_a_batch_norm_is_fused_bit_for_bit(reuse, affine, training):
    plan = fused_against_eager(lambda: BatchNormRelu(reuse, affine), (5, 3, 8, 8), training)
    names = [(e.cls.__name__, e.params.get("relu")) for e in plan.entries]
    if reuse:
        assert ("BatchNorm", None) in names and ("ReLU", None) in names
    else:
        assert ("BatchNorm", True) in names and all(n != "ReLU" for n, _ in names)


class ResidualJoin(nn.Module):
    def __init__(self, broadcast):
        super().__init__()
        self.broadcast = broadcast
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if self.broadcast:  # a sum that broadcasts stays an Add and a ReLU
            return F.relu(h + x[:, :1])
        return F.relu(h + x)


@pytest.mark.parametrize("broadcast", [False, True])
def test_a_relu_after_a_residual_add_is_fused_bit_for_bit(broadcast):
    plan = fused_against_eager(lambda: ResidualJoin(broadcast), (4, 3, 6, 6))
    names = [e.cls.__name__ for e in plan.entries]
    if broadcast:
        assert "Add" in names and "ReLU" in names and "AddReLU" not in names
    else:
        assert "AddReLU" in names and "Add" not in names and "ReLU" not in names


def test_a_hook_on_a_tensor_made_inside_the_forward_fires_on_every_call():
    class Hooked(fastgrad.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = fastgrad.nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            h.register_hook(lambda g: calls.append(g.shape))
            return (h * 2).sum()

    calls = []
    compiled = fastgrad.compile(Hooked())
    x = fastgrad.randn(2, 3)
    for _ in range(4):
        compiled(x).backward()
    assert calls == [(2, 3)] * 4
    assert compiled.compile_stats["replays"] == 0
    assert any("hook" in b for b in compiled.compile_stats["graph_breaks"])


class _ConvBN(fastgrad.nn.Module):
    """conv-BN-ReLU, conv (no bias)-BN (affine off) + a shortcut read twice, and a
    convolution whose output a BatchNorm and the join both read (not foldable)."""

    def __init__(self):
        super().__init__()
        nn = fastgrad.nn
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=False)
        self.c3, self.b3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x):
        F = fastgrad.nn.functional
        h = F.relu(self.b1(self.c1(x)))
        h = self.b2(self.c2(h)) + h
        k = self.c3(h)
        return self.b3(k) + k


def _conv_bn_model():
    fastgrad.manual_seed(3)
    model = _ConvBN()
    x = fastgrad.randn(6, 3, 8, 8)
    for _ in range(3):  # running statistics away from 0 and 1
        model(x * 2 + 1)
    for bn in (model.b1, model.b3):
        bn.weight.data = np.linspace(0.5, 2, 8).astype(np.float32)
        bn.bias.data = np.linspace(-1, 1, 8).astype(np.float32)
    return model.eval(), x


def _entry_names(compiled):
    """The ops of the plan captured last for the call signature used last."""
    entries = list(compiled._plans.values())[-1]
    return [e.cls.__name__ for e in entries[-1][1].entries]


def test_freezing_folds_eval_batchnorms_into_their_convolutions():
    model, x = _conv_bn_model()
    frozen = fastgrad.compile(model, options={"freezing": True})
    with fastgrad.no_grad():
        want = model(x).data
        got = [frozen(x).data for _ in range(5)]  # capture, traced replays, program
    names = _entry_names(frozen)
    assert names.count("BatchNorm") == 1  # b3: its convolution's output is read twice
    assert names.count("Conv2d") == 3 and frozen.compile_stats["replays"] == 4
    for out in got:
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(got[-1], want)  # folded: rounding differs
    plain = fastgrad.compile(model)
    with fastgrad.no_grad():
        for _ in range(4):
            np.testing.assert_array_equal(plain(x).data, want)  # no freezing: bit for bit
    assert _entry_names(plain).count("BatchNorm") == 3


def test_freezing_leaves_training_and_gradients_alone():
    model, x = _conv_bn_model()
    frozen = fastgrad.compile(model, options={"freezing": True})
    for _ in range(4):  # eval mode, but gradients wanted: nothing folds
        out = frozen(x)
        out.sum().backward()
    assert _entry_names(frozen).count("BatchNorm") == 3
    model.train()
    with fastgrad.no_grad():
        for _ in range(4):  # batch statistics: nothing folds
            frozen(x)
    assert _entry_names(frozen).count("BatchNorm") == 3


def test_freezing_sees_a_new_parameter_array():
    model, x = _conv_bn_model()
    frozen = fastgrad.compile(model, options={"freezing": True})
    with fastgrad.no_grad():
        for _ in range(3):
            frozen(x)
        model.c1.weight.data = model.c1.weight.data * 0.5  # a new array: the guard sees it
        np.testing.assert_allclose(frozen(x).data, model(x).data, rtol=1e-5, atol=1e-5)
