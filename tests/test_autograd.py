"""The autograd engine: every Tensor op's gradient against finite differences and
PyTorch, graph shapes (shared subexpressions, diamonds, deep chains), accumulation,
freeing, and the compiled engine against the reference engine."""

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels
from fastgrad.autograd import GradcheckError, gradcheck


def t64(*shape, positive=False, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return fastgrad.tensor(a, dtype=fastgrad.float64, requires_grad=True)


# (name, function of tensors, input shapes, positive inputs?)
UNARY = [
    ("neg", lambda x: -x),
    ("exp", lambda x: x.exp()),
    ("abs", lambda x: x.abs()),
    ("relu", lambda x: x.relu()),
    ("sigmoid", lambda x: x.sigmoid()),
    ("tanh", lambda x: x.tanh()),
    ("clamp", lambda x: x.clamp(-0.5, 0.5)),
    ("clamp_min", lambda x: x.clamp(min=0.1)),
    ("pow_scalar", lambda x: x**3),
    ("rpow", lambda x: 2.0**x),
    ("scalar_ops", lambda x: (3 - x) / 2 + 1 * x),
    ("rdiv", lambda x: 1.0 / (x.abs() + 1)),
    ("sum_all", lambda x: x.sum()),
    ("sum_dim", lambda x: x.sum(1)),
    ("sum_keep", lambda x: x.sum((0, 2), keepdim=True)),
    ("mean", lambda x: x.mean(dim=-1)),
    ("max_dim", lambda x: x.max(dim=1)[0]),
    ("min_dim", lambda x: x.min(dim=2, keepdim=True)[0]),
    ("max_all", lambda x: x.max()),
    ("reshape", lambda x: x.reshape(6, -1) * 2),
    ("flatten", lambda x: x.flatten(1)),
    ("transpose", lambda x: x.transpose(0, 2) * fastgrad.arange(2.0, dtype=fastgrad.float64)),
    ("permute", lambda x: x.permute(1, 2, 0)),
    ("T", lambda x: x.T),
    ("squeeze_unsqueeze", lambda x: x.unsqueeze(1).squeeze(1)),
    ("index_basic", lambda x: x[1, :, 1:3]),
    ("index_int_repeats", lambda x: x[np.array([0, 1, 0])]),
    ("index_tensor", lambda x: x[:, fastgrad.tensor([2, 2, 0])]),
    ("index_mask", lambda x: x[x > 0]),
    ("softmax", lambda x: x.softmax(1)),
    ("log_softmax", lambda x: x.log_softmax(-1)),
    ("expand", lambda x: x[:, :1, :].expand(2, 3, 3)),
]
POSITIVE = [("log", lambda x: x.log()), ("sqrt", lambda x: x.sqrt()), ("pow_tensor_base", lambda x: x**x)]


@pytest.mark.parametrize("name,fn", UNARY, ids=[u[0] for u in UNARY])
def test_unary_gradcheck(name, fn):
    assert gradcheck(fn, [t64(2, 3, 3)])


@pytest.mark.parametrize("name,fn", POSITIVE, ids=[u[0] for u in POSITIVE])
def test_positive_gradcheck(name, fn):
    assert gradcheck(fn, [t64(2, 3, positive=True)])


BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (b.abs() + 1)),
    ("pow", lambda a, b: a.abs() ** b),
]


@pytest.mark.parametrize("name,fn", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3))])
def test_binary_broadcast_gradcheck(name, fn, shapes):
    assert gradcheck(fn, [t64(*shapes[0], seed=1), t64(*shapes[1], seed=2)])


@pytest.mark.parametrize(
    "sa,sb",
    [((3, 4), (4, 5)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (1, 4, 2))],
)
def test_matmul_gradcheck(sa, sb):
    assert gradcheck(lambda a, b: a @ b, [t64(*sa, seed=1), t64(*sb, seed=2)])


def test_cat_stack_gradcheck():
    assert gradcheck(lambda a, b: fastgrad.cat([a, b, a], dim=1), [t64(2, 3), t64(2, 1)])
    assert gradcheck(lambda a, b: fastgrad.stack([a, b], dim=1) * 3, [t64(2, 3), t64(2, 3)])


def test_gradcheck_catches_a_wrong_gradient():
    from fastgrad.autograd import Function

    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, grad):
            return (grad * 3 * self.x,)  # should be 2 * x

    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3,\)\): gradient mismatch at index"):
        gradcheck(lambda x: WrongSquare.apply(x), [t64(3)])


# ------------------------------------------------------------------ graph structure


def test_shared_subexpression_and_node_used_twice():
    x = fastgrad.tensor([3.0], requires_grad=True)
    y = x * x  # used twice below
    z = y * y + y  # x^4 + x^2
    z.backward()
    assert x.grad.item() == pytest.approx(4 * 27 + 2 * 3)


def test_diamond():
    x = fastgrad.tensor([2.0], requires_grad=True, dtype=fastgrad.float64)
    a = x * 3
    b = x.exp()
    c = a * b  # both branches meet
    c.backward()
    assert x.grad.item() == pytest.approx(3 * np.exp(2) + 6 * np.exp(2))


def test_same_tensor_both_operands():
    x = fastgrad.tensor([1.5, -2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [3.0, -4.0]
    y = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    (y + y).sum().backward()
    assert y.grad.tolist() == [2.0, 2.0]


def test_deep_chain_no_recursion_limit():
    x = fastgrad.tensor([1.0], requires_grad=True, dtype=fastgrad.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**10_000)


def test_gradients_accumulate_until_zeroed():
    w = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        (w * 2).sum().backward()
    assert w.grad.tolist() == [6.0, 6.0]
    w.grad = None
    (w * 2).sum().backward()
    assert w.grad.tolist() == [2.0, 2.0]


def test_grad_is_owned_not_aliased():
    w = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    up = fastgrad.tensor([5.0, 5.0])
    w.backward(up)
    up.data[0] = 100
    assert w.grad.tolist() == [5.0, 5.0]


def test_graph_freed_after_backward():
    x = fastgrad.tensor([2.0], requires_grad=True)
    y = (x * x).exp()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = fastgrad.tensor([2.0], requires_grad=True)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0


def test_backward_errors():
    with pytest.raises(RuntimeError, match=r"scalar outputs; got a tensor of shape \(2,\)"):
        (fastgrad.tensor([1.0, 2.0], requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match="int64"):
        fastgrad.tensor([1, 2]).sum().backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        fastgrad.tensor([1.0]).backward()
    x = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\)"):
        (x * 2).backward(fastgrad.ones(3))


def test_no_input_gradient_when_not_required():
    a = fastgrad.tensor([1.0, 2.0], requires_grad=True)
    b = fastgrad.tensor([3.0, 4.0])
    (a * b).sum().backward()
    assert b.grad is None and a.grad.tolist() == [3.0, 4.0]


def test_detach_cuts_the_graph():
    a = fastgrad.tensor([1.0], requires_grad=True)
    b = (a * 2).detach()
    assert not b.requires_grad and b.grad_fn is None


# ------------------------------------------------------------------ engines agree


def _grads_of_mixed_graph():
    fastgrad.manual_seed(1)
    x = fastgrad.randn(4, 5, requires_grad=True)
    w = fastgrad.randn(5, 3, requires_grad=True)
    h = (x @ w).relu()
    loss = (h * h).sum() + (h.exp().mean(0) * x[:3, :3].sum(0)).sum() + x.max(dim=1)[0].sum()
    loss.backward()
    return x.grad.data.copy(), w.grad.data.copy()


def test_compiled_and_reference_engines_agree():
    if kernels.backend != "compiled":
        pytest.skip("compiled kernels not in use")
    compiled = _grads_of_mixed_graph()
    kernels.use_backend("reference")
    try:
        reference = _grads_of_mixed_graph()
    finally:
        kernels.use_backend("compiled")
    for c, r in zip(compiled, reference):
        np.testing.assert_array_equal(c, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulate_kernel_twins(dtype):
    from fastgrad.reference import engine as ref

    rng = np.random.default_rng(0)
    for shape in [(1,), (7,), (3, 5, 2), (1000,)]:
        a = rng.standard_normal(shape).astype(dtype)
        b = rng.standard_normal(shape).astype(dtype)
        c1, c2 = a.copy(), a.copy()
        kernels.accumulate(c1, b)
        ref.accumulate(c2, b)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(c1, a + b)


@pytest.mark.parametrize("impl", ["kernels", "reference"])
def test_accumulate_rejects_bad_arrays(impl):
    from fastgrad.reference import engine as ref

    acc = kernels.accumulate if impl == "kernels" else ref.accumulate
    a32 = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"accumulate: src has shape \(5,\), but dst has \(4,\)"):
        acc(a32, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="accumulate: src has dtype float64, expected float32"):
        acc(a32, np.zeros(4, np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        acc(np.zeros(4, np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        acc(np.zeros(8, np.float32)[::2], np.zeros(4, np.float32))
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        acc(ro, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        acc([0.0], np.zeros(1, np.float32))


# ------------------------------------------------------------------ PyTorch parity

TORCH_CASES = [
    ("mixed", lambda m, a, b: ((a * b + a / (b.abs() + 1)) ** 2).sum()),
    ("matmul_relu", lambda m, a, b: (a @ b.T).relu().mean()),
    ("softmax_log", lambda m, a, b: (a.softmax(1) * b.log_softmax(1)).sum()),
    ("reductions", lambda m, a, b: a.max(dim=1)[0].sum() + b.mean() + (a - b).abs().sum()),
    ("shape", lambda m, a, b: (a.reshape(-1)[2:9] * b.T.flatten()[:7]).sum()),
    ("sigmoid_tanh_exp", lambda m, a, b: (a.sigmoid() * b.tanh() + a.exp()).sum()),
]


@pytest.mark.parametrize("name,fn", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_against_pytorch(name, fn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    fa, fb = fastgrad.tensor(a, requires_grad=True), fastgrad.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out_f = fn(fastgrad, fa, fb)
    out_t = fn(torch, ta, tb)
    out_f.backward()
    out_t.backward()
    np.testing.assert_allclose(out_f.item(), out_t.item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fa.grad.data, ta.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fb.grad.data, tb.grad.numpy(), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ anomaly mode


def test_detect_anomaly_forward_names_op_shapes_and_line():
    from fastgrad.autograd import AnomalyError, detect_anomaly

    x = fastgrad.tensor([1.0, -1.0], requires_grad=True)
    with detect_anomaly():
        with pytest.raises(
            AnomalyError, match=r"Log produced a non-finite value.*\(2,\) float32.*test_autograd.py:\d+: y = x.log\(\)"
        ):
            y = x.log()  # noqa: F841 (the message quotes this line)


def test_detect_anomaly_backward():
    from fastgrad.autograd import AnomalyError, detect_anomaly

    x = fastgrad.tensor([0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt()  # finite forward, infinite gradient at 0
        with pytest.raises(AnomalyError, match=r"Sqrt produced a non-finite gradient.*y = x.sqrt\(\)"):
            y.sum().backward()
    z = x.sqrt().sum()  # outside the mode: no check
    z.backward()
    assert np.isinf(x.grad.data[0])
