"""fastgrad.nn.utils: clip_grad_norm_ and clip_grad_value_ against PyTorch's, in place,
skipping parameters without gradients."""

import math

import numpy as np
import pytest

import fastgrad
from fastgrad.nn import Parameter
from fastgrad.nn.utils import clip_grad_norm_, clip_grad_value_


def params_with_grads(seed, scale):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    params = [Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    for p in params:
        p.grad = fastgrad.tensor(rng.standard_normal(p.shape).astype(np.float32) * scale)
    return params + [Parameter(np.zeros(2, dtype=np.float32))]  # one without a gradient


@pytest.mark.parametrize("max_norm,norm_type", [(1.0, 2.0), (100.0, 2.0), (0.5, 1), (0.3, math.inf), (2.0, 3.0)])
def test_clip_grad_norm_matches_pytorch(max_norm, norm_type):
    torch = pytest.importorskip("torch")
    ours = params_with_grads(0, 3.0)
    theirs = [torch.nn.Parameter(torch.tensor(p.data)) for p in ours]
    for p, t in zip(ours, theirs):
        t.grad = None if p.grad is None else torch.tensor(p.grad.data)
    arrays = [p.grad.data for p in ours if p.grad is not None]
    total = clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, fastgrad.Tensor) and total.shape == ()
    assert float(total.item()) == pytest.approx(float(want), rel=1e-5)
    assert all(p.grad.data is a for p, a in zip(ours, arrays))  # scaled in place
    for p, t in zip(ours, theirs):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad.data, t.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert ours[-1].grad is None


def test_clip_grad_norm_scales_in_place_and_accepts_one_tensor():
    p = Parameter(np.zeros(4, dtype=np.float32))
    p.grad = fastgrad.tensor([3.0, 4.0, 0.0, 0.0])
    array = p.grad.data
    total = clip_grad_norm_(p, 1.0)
    assert float(total.item()) == pytest.approx(5.0)
    assert p.grad.data is array
    np.testing.assert_allclose(array, [0.6, 0.8, 0, 0], rtol=1e-5)
    assert float(clip_grad_norm_([], 1.0).item()) == 0.0


def test_nonfinite_norm_can_raise():
    p = Parameter(np.zeros(2, dtype=np.float32))
    p.grad = fastgrad.tensor([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    params = params_with_grads(1, 2.0)
    expected = [np.clip(p.grad.data, -0.5, 0.5) for p in params if p.grad is not None]
    clip_grad_value_(params, 0.5)
    for p, e in zip([p for p in params if p.grad is not None], expected):
        np.testing.assert_array_equal(p.grad.data, e)
