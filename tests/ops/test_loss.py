"""Loss ops: gradients against finite differences (float64) for every reduction, values
and gradients against PyTorch (float32, including logits of +-1e4), and clear errors."""

import math

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels
from fastgrad.autograd import gradcheck
from fastgrad.ops import loss as L

REDUCTIONS = ("mean", "sum", "none")


def leaf(array, requires_grad=True):
    return fastgrad.tensor(array, requires_grad=requires_grad)


def class_problem(shape=(5, 4), seed=0, dtype=np.float64, ignore=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype) * 2
    target_shape = (shape[0],) + tuple(shape[2:])
    t = rng.integers(0, shape[1], target_shape)
    if ignore:
        t.reshape(-1)[1] = -100
    w = (rng.random(shape[1]) + 0.5).astype(dtype)
    return x, t, w


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_gradcheck(reduction, weighted, smoothing):
    x, t, w = class_problem()
    weight = fastgrad.tensor(w) if weighted else None
    target = fastgrad.tensor(t)
    assert gradcheck(
        lambda z: L.cross_entropy(z, target, weight, reduction=reduction, label_smoothing=smoothing), (leaf(x),)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_spatial_gradcheck(reduction):
    x, t, w = class_problem((2, 3, 2, 2))
    target = fastgrad.tensor(t)
    assert gradcheck(
        lambda z: L.cross_entropy(z, target, fastgrad.tensor(w), reduction=reduction, label_smoothing=0.1), (leaf(x),)
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_gradcheck(reduction, weighted):
    x, t, w = class_problem((4, 3))
    weight = fastgrad.tensor(w) if weighted else None
    target = fastgrad.tensor(t)
    assert gradcheck(lambda z: L.nll_loss(z, target, weight, reduction=reduction), (leaf(x),))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 2)])
def test_mse_gradcheck(reduction, shape):
    rng = np.random.default_rng(1)
    x, y = leaf(rng.standard_normal(shape)), leaf(rng.standard_normal(shape))
    assert gradcheck(lambda a, b: L.mse_loss(a, b, reduction=reduction), (x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_with_logits_gradcheck(reduction, weighted, pos_weighted):
    rng = np.random.default_rng(2)
    x, y = leaf(rng.standard_normal((3, 4)) * 3), leaf(rng.random((3, 4)))
    weight = fastgrad.tensor(rng.random((1, 4)) + 0.5) if weighted else None
    pos_weight = fastgrad.tensor(rng.random(4) * 2 + 0.1) if pos_weighted else None
    assert gradcheck(
        lambda a, b: L.binary_cross_entropy_with_logits(a, b, weight, reduction=reduction, pos_weight=pos_weight),
        (x, y),
    )


# --------------------------------------------------------------------------- PyTorch parity


def check_against_torch(ours, theirs, inputs, grad_of=(0,), seed=3):
    """Compare forward values and the gradients of the inputs listed in ``grad_of``."""
    torch = pytest.importorskip("torch")
    ours_in = [leaf(a, i in grad_of) if a.dtype.kind == "f" else fastgrad.tensor(a) for i, a in enumerate(inputs)]
    theirs_in = [torch.tensor(a, requires_grad=(i in grad_of)) for i, a in enumerate(inputs)]
    out, out_t = ours(*ours_in), theirs(torch, *theirs_in)
    assert out.shape == tuple(out_t.shape) and out.dtype == np.float32
    g = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    out.backward(fastgrad.tensor(g))
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-6)
    for i in grad_of:
        np.testing.assert_allclose(ours_in[i].grad.data, theirs_in[i].grad.numpy(), rtol=1e-4, atol=1e-6)
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_matches_torch(reduction, weighted, smoothing, ignore_index):
    x, t, w = class_problem((8, 5), dtype=np.float32)
    t[t == -100] = ignore_index
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    inputs = [x, t] + ([w] if weighted else [])
    check_against_torch(
        lambda z, tt, *ww: L.cross_entropy(z, tt, *ww, **kw),
        lambda torch, z, tt, *ww: torch.nn.functional.cross_entropy(z, tt, *ww, **kw),
        inputs,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_huge_logits_match_torch(reduction, smoothing):
    x = np.array(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, -1e4, -1e4]], np.float32
    )
    t = np.array([1, 0, 2, 1, 0])
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    out = check_against_torch(
        lambda z, tt: L.cross_entropy(z, tt, **kw),
        lambda torch, z, tt: torch.nn.functional.cross_entropy(z, tt, **kw),
        [x, t],
    )
    assert np.isfinite(out.data).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_spatial_and_unbatched_match_torch(reduction):
    x, t, w = class_problem((2, 4, 3, 5), dtype=np.float32)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    check_against_torch(
        lambda z, tt, ww: L.cross_entropy(z, tt, ww, **kw),
        lambda torch, z, tt, ww: torch.nn.functional.cross_entropy(z, tt, ww, **kw),
        [x, t, w],
    )
    x1 = np.random.default_rng(4).standard_normal(6).astype(np.float32)
    check_against_torch(
        lambda z, tt: L.cross_entropy(z, tt, reduction=reduction),
        lambda torch, z, tt: torch.nn.functional.cross_entropy(z, tt, reduction=reduction),
        [x1, np.array(4)],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_matches_torch(reduction, weighted):
    x, t, w = class_problem((7, 4), dtype=np.float32)
    x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    inputs = [x, t] + ([w] if weighted else [])
    check_against_torch(
        lambda z, tt, *ww: L.nll_loss(z, tt, *ww, reduction=reduction),
        lambda torch, z, tt, *ww: torch.nn.functional.nll_loss(z, tt, *ww, reduction=reduction),
        inputs,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction):
    rng = np.random.default_rng(5)
    x, y = (rng.standard_normal((4, 3, 2)).astype(np.float32) for _ in range(2))
    check_against_torch(
        lambda a, b: L.mse_loss(a, b, reduction=reduction),
        lambda torch, a, b: torch.nn.functional.mse_loss(a, b, reduction=reduction),
        [x, y],
        grad_of=(0, 1),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_with_logits_matches_torch(reduction, weighted, pos_weighted):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((5, 4)) * 4).astype(np.float32)
    x[0] = [1e4, -1e4, 0.0, -40.0]
    y = rng.random((5, 4)).astype(np.float32)
    y[0] = [0.0, 1.0, 0.5, 1.0]
    w = (rng.random((5, 1)) + 0.5).astype(np.float32)
    pw = (rng.random(4) * 3).astype(np.float32)

    def ours(a, b):
        return L.binary_cross_entropy_with_logits(
            a,
            b,
            fastgrad.tensor(w) if weighted else None,
            reduction=reduction,
            pos_weight=fastgrad.tensor(pw) if pos_weighted else None,
        )

    def theirs(torch, a, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            a,
            b,
            torch.tensor(w) if weighted else None,
            reduction=reduction,
            pos_weight=torch.tensor(pw) if pos_weighted else None,
        )

    out = check_against_torch(ours, theirs, [x, y], grad_of=(0, 1))
    assert np.isfinite(out.data).all()


def test_mean_over_all_ignored_is_nan_like_torch():
    x = leaf(np.ones((3, 4)))
    loss = L.cross_entropy(x, fastgrad.tensor([-100, -100, -100]))
    assert math.isnan(loss.item())
    loss.backward()
    assert not x.grad.data.any()
    assert math.isnan(L.nll_loss(leaf(np.ones((2, 3))), fastgrad.tensor([-100, -100])).item())


def test_eval_without_grad_skips_gradient_work():
    x, t, _ = class_problem(dtype=np.float32)
    with fastgrad.no_grad():
        loss = L.cross_entropy(leaf(x), fastgrad.tensor(t))
    assert loss.grad_fn is None
    assert loss.item() == pytest.approx(L.cross_entropy(fastgrad.tensor(x), fastgrad.tensor(t)).item())


def test_same_results_on_both_backends():
    x_np, t, w = class_problem((4, 5))
    results = {}
    previous = kernels.backend
    try:
        for backend in ("reference", "compiled"):
            try:
                kernels.use_backend(backend)
            except ImportError:
                pytest.skip("compiled kernels are not built")
            x = leaf(x_np)
            y = fastgrad.tensor(np.random.default_rng(0).random((4, 5)))
            total = (
                L.cross_entropy(x, fastgrad.tensor(t), fastgrad.tensor(w), label_smoothing=0.1)
                + L.nll_loss(x, fastgrad.tensor(t), reduction="sum")
                + L.mse_loss(x, y)
                + L.binary_cross_entropy_with_logits(x, y)
            )
            total.backward()
            results[backend] = (total.item(), x.grad.data)
    finally:
        kernels.use_backend(previous)
    assert results["compiled"][0] == pytest.approx(results["reference"][0], rel=1e-12)
    np.testing.assert_allclose(results["compiled"][1], results["reference"][1], rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- bad input


def test_out_of_range_target_raises_before_the_kernel(monkeypatch):
    def kernel_must_not_run(*args):
        raise AssertionError("the kernel ran")

    monkeypatch.setattr(kernels, "cross_entropy_forward", kernel_must_not_run)
    x = leaf(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy: target 3 at index \(2,\) is out of range for 3 classes"):
        L.cross_entropy(x, fastgrad.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: target -5 at index \(0,\) is out of range"):
        L.cross_entropy(x, fastgrad.tensor([-5, 1, 2, 2]))
    with pytest.raises(ValueError, match=r"nll_loss: target 9 at index \(1, 0\)"):
        L.nll_loss(leaf(np.zeros((2, 3, 1))), fastgrad.tensor([[0], [9]]))


def test_class_target_errors():
    x = leaf(np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="cross_entropy: expected integer class indices as target"):
        L.cross_entropy(x, fastgrad.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: target shape \(3,\) does not match input shape \(4, 3\)"):
        L.cross_entropy(x, fastgrad.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"nll_loss: weight must have shape \(3,\)"):
        L.nll_loss(x, fastgrad.tensor([0, 1, 2, 1]), fastgrad.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="cross_entropy: expected a float32 or float64 input, got dtype int64"):
        L.cross_entropy(fastgrad.tensor([[1, 2]]), fastgrad.tensor([0]))
    with pytest.raises(ValueError, match="cross_entropy: expected input of shape"):
        L.cross_entropy(leaf(np.float32(1.0)), fastgrad.tensor(0))
    with pytest.raises(TypeError, match="cross_entropy: ignore_index must be an integer"):
        L.cross_entropy(x, fastgrad.tensor([0, 1, 2, 1]), ignore_index=None)
    with pytest.raises(TypeError, match="expected target to be a Tensor, got list"):
        L.cross_entropy(x, [0, 1, 2, 1])


@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_label_smoothing_range(smoothing):
    x = leaf(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be between 0.0 and 1.0"):
        L.cross_entropy(x, fastgrad.tensor([0, 1]), label_smoothing=smoothing)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, t, r: L.cross_entropy(x, t, reduction=r),
        lambda x, t, r: L.nll_loss(x, t, reduction=r),
        lambda x, t, r: L.mse_loss(x, x, reduction=r),
        lambda x, t, r: L.binary_cross_entropy_with_logits(x, x, reduction=r),
    ],
)
def test_bad_reduction(call):
    x = leaf(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        call(x, fastgrad.tensor([0, 1]), "avg")


def test_float_target_errors():
    x = leaf(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(3,\) differs from input shape \(2, 3\)"):
        L.mse_loss(x, fastgrad.tensor(np.zeros(3, np.float32)))
    with pytest.raises(TypeError, match="mse_loss: input has dtype float32 but target has float64"):
        L.mse_loss(x, fastgrad.tensor(np.zeros((2, 3))))
    with pytest.raises(TypeError, match="binary_cross_entropy_with_logits: expected a float target"):
        L.binary_cross_entropy_with_logits(x, fastgrad.tensor(np.zeros((2, 3), np.int64)))
    with pytest.raises(TypeError, match="mse_loss: expected a float32 or float64 input"):
        L.mse_loss(fastgrad.tensor([1, 2]), fastgrad.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) must broadcast along the last dimension"):
        L.binary_cross_entropy_with_logits(x, x.detach(), pos_weight=fastgrad.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) does not broadcast to the input shape"):
        L.binary_cross_entropy_with_logits(x, x.detach(), weight=fastgrad.tensor([1.0, 2.0]))


def test_functional_names():
    F = pytest.importorskip("fastgrad.nn.functional")
    for name in ("cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"):
        assert getattr(F, name) is getattr(L, name)


def test_enormous_input_refused_before_allocating():
    def view(shape, dtype=np.float32):
        return fastgrad.from_numpy(np.broadcast_to(np.ones((), dtype), shape))

    big = 10**6
    target = fastgrad.from_numpy(np.broadcast_to(np.zeros((), np.int64), (big,)))
    for name, args in [
        ("cross_entropy", (view((big, big)), target)),
        ("nll_loss", (view((big, big)), target)),
        ("mse_loss", (view((big, big)), view((big, big)))),
        ("binary_cross_entropy_with_logits", (view((big, big)), view((big, big)))),
    ]:
        with pytest.raises(ValueError, match=rf"^{name}: input of shape \(1000000, 1000000\) has "):
            getattr(L, name)(*args)
