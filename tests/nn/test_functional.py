"""fastgrad.nn.functional: every PyTorch name it promises resolves to the op, and the
two it defines itself (dropout, batch_norm) behave as PyTorch's functions."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn.functional as F

NAMES = [
    "conv2d",
    "conv2d_relu",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "linear",
    "linear_relu",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "mse_loss",
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "batch_norm",
    "dropout",
]


@pytest.mark.parametrize("name", NAMES)
def test_name_is_exported(name):
    assert callable(getattr(F, name)) and name in F.__all__


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'conv3d'"):
        F.conv3d


def test_batch_norm_matches_pytorch_functional():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 5)).astype(np.float32)
    w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    ours_rm, ours_rv = fastgrad.tensor(rm), fastgrad.tensor(rv)
    theirs_rm, theirs_rv = torch.tensor(rm), torch.tensor(rv)
    for training in (True, False):
        got = F.batch_norm(
            fastgrad.tensor(x),
            ours_rm,
            ours_rv,
            fastgrad.tensor(w),
            fastgrad.tensor(b),
            training=training,
            momentum=0.2,
            eps=1e-4,
        )
        want = torch.nn.functional.batch_norm(
            torch.tensor(x),
            theirs_rm,
            theirs_rv,
            torch.tensor(w),
            torch.tensor(b),
            training=training,
            momentum=0.2,
            eps=1e-4,
        )
        np.testing.assert_allclose(got.data, want.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours_rm.data, theirs_rm.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours_rv.data, theirs_rv.numpy(), rtol=1e-5, atol=1e-7)
