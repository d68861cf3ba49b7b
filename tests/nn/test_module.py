"""Module and Parameter: registration by assignment, names and traversal order, modes,
gradients, dtype conversion, apply, and the errors for misuse. Uses only layers that
need no kernel family (Identity, Flatten, BatchNorm's buffers) and a toy Module."""

import copy
import pickle

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
from fastgrad.nn import Module, Parameter


class Affine(Module):
    """y = x * scale + shift, elementwise over the last dimension."""

    def __init__(self, n):
        super().__init__()
        self.scale = Parameter(np.ones(n, dtype=np.float32))
        self.shift = Parameter(np.zeros(n, dtype=np.float32))
        self.register_buffer("calls", fastgrad.zeros(1))
        self.note = "not registered"

    def forward(self, x):
        return x * self.scale + self.shift


class Net(Module):
    def __init__(self):
        super().__init__()
        self.first = Affine(3)
        self.body = nn.Sequential(Affine(3), nn.Identity(), Affine(3))
        self.norm = nn.BatchNorm1d(3)
        self.gain = Parameter(fastgrad.ones(1))

    def forward(self, x):
        return self.body(self.first(x)) * self.gain


def test_parameter_is_a_tensor_that_requires_grad():
    p = Parameter(fastgrad.zeros(2, 3))
    assert isinstance(p, fastgrad.Tensor) and p.requires_grad and p.is_leaf
    assert p.shape == (2, 3) and p.dtype == np.float32
    assert Parameter(np.zeros(2), requires_grad=False).requires_grad is False
    assert repr(p).startswith("Parameter containing:\ntensor(")
    # an op on a Parameter gives a plain Tensor, and the gradient lands on the Parameter
    y = (p * 2).sum()
    assert type(y) is fastgrad.Tensor
    y.backward()
    np.testing.assert_array_equal(p.grad.data, np.full((2, 3), 2, dtype=np.float32))


def test_parameter_shares_the_tensors_array():
    t = fastgrad.zeros(3)
    p = Parameter(t)
    t.data[0] = 5
    assert p.data[0] == 5
    with pytest.raises(RuntimeError):
        Parameter(np.arange(3))  # integers cannot require grad


def test_registration_order_and_dotted_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "gain",
        "first.scale",
        "first.shift",
        "body.0.scale",
        "body.0.shift",
        "body.2.scale",
        "body.2.shift",
        "norm.weight",
        "norm.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "first.calls",
        "body.0.calls",
        "body.2.calls",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_children()] == ["first", "body", "norm"]
    assert [n for n, _ in net.named_modules()] == ["", "first", "body", "body.0", "body.1", "body.2", "norm"]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["gain"]
    assert len(list(net.parameters())) == 9 and len(list(net.buffers())) == 6
    assert list(net.children())[1] is net.body
    assert net.first.note == "not registered" and "note" not in net.first._parameters
    assert net.get_submodule("body.2") is net.body[2]
    assert net.get_parameter("body.2.shift") is net.body[2].shift
    assert net.get_buffer("norm.running_var") is net.norm.running_var
    with pytest.raises(AttributeError, match="no submodule"):
        net.get_submodule("body.7")


def test_shared_parameters_and_modules_are_listed_once():
    shared = Affine(2)
    seq = nn.Sequential(shared, shared)
    assert len(list(seq.parameters())) == 2
    assert len(list(seq.modules())) == 2
    # state_dict keeps both names, as PyTorch does
    assert list(seq.state_dict()) == ["0.scale", "0.shift", "0.calls", "1.scale", "1.shift", "1.calls"]


def test_reassignment_moves_between_registries():
    m = Affine(2)
    m.scale = None  # a declared but absent parameter
    assert m.scale is None and "scale" in m._parameters
    assert [n for n, _ in m.named_parameters()] == ["shift"]
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'shift'"):
        m.shift = fastgrad.zeros(2)
    m.calls = fastgrad.ones(1)  # a buffer takes a new Tensor
    assert m._buffers["calls"] is m.calls
    with pytest.raises(TypeError, match="as buffer 'calls'"):
        m.calls = 3
    with pytest.raises(TypeError, match="as parameter 'shift'"):
        m.shift = nn.Identity()  # as in PyTorch: a registered parameter name takes Parameters only
    del m.shift
    m.shift = nn.Identity()
    assert "shift" in m._modules and "shift" not in m._parameters
    del m.shift
    assert not hasattr(m, "shift") and "shift" not in m._modules
    del m.note
    assert not hasattr(m, "note")


def test_register_methods_check_their_arguments():
    m = Affine(2)
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("note", None)
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("scale", fastgrad.zeros(1))
    with pytest.raises(TypeError, match="fastgrad.nn.Parameter or None required"):
        m.register_parameter("w", fastgrad.zeros(2))
    with pytest.raises(TypeError, match="not a Module subclass"):
        m.add_module("sub", 3)
    m.register_buffer("scratch", np.zeros(2), persistent=False)
    assert isinstance(m.scratch, fastgrad.Tensor)
    assert "scratch" not in m.state_dict() and "scratch" in dict(m.named_buffers())


def test_assigning_before_init_raises():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(fastgrad.zeros(1))
            super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Broken()


def test_call_runs_forward_and_base_forward_raises():
    m = Affine(3)
    out = m(fastgrad.ones(2, 3))
    assert out.shape == (2, 3)
    with pytest.raises(NotImplementedError, match="forward"):
        Module()(1)


def test_train_eval_reach_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="boolean"):
        net.train("no")


def test_zero_grad_and_requires_grad():
    m = Affine(3)
    m(fastgrad.ones(2, 3)).sum().backward()
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(m.scale.grad.data, 0)
    m.zero_grad()
    assert m.scale.grad is None and m.shift.grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_apply_visits_children_first():
    net = Net()
    seen = []
    assert net.apply(lambda mod: seen.append(type(mod).__name__)) is net
    assert seen == ["Affine", "Affine", "Identity", "Affine", "Sequential", "BatchNorm1d", "Net"]


def test_to_double_converts_in_place():
    net = Net()
    params = list(net.parameters())
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]  # same objects
    assert net.norm.running_mean.dtype == np.float64
    assert net.norm.num_batches_tracked.dtype == np.int64  # integers are left alone
    net.to(fastgrad.float32)
    assert net.gain.dtype == np.float32
    assert net.to("cpu") is net
    with pytest.raises(TypeError):
        net.to(np.int32)


def test_copy_and_pickle_keep_registries_consistent():
    net = Net()
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert [n for n, _ in clone.named_parameters()] == [n for n, _ in net.named_parameters()]
        assert clone.first.scale is clone._modules["first"]._parameters["scale"]
        assert clone.first.scale is not net.first.scale
        np.testing.assert_array_equal(clone.first.scale.data, net.first.scale.data)


def test_repr_nests_like_pytorch():
    net = Net()
    assert repr(net) == (
        "Net(\n"
        "  (first): Affine()\n"
        "  (body): Sequential(\n"
        "    (0): Affine()\n"
        "    (1): Identity()\n"
        "    (2): Affine()\n"
        "  )\n"
        "  (norm): BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)\n"
        ")"
    )
