"""Shared by the nn tests: a finite-difference check of a module's gradients with
respect to its inputs AND its parameters (fastgrad.autograd.gradcheck sees only the
tensors passed to it, not the ones a module holds)."""

import numpy as np
import pytest

import fastgrad


def check_module_grads(fn, inputs, params=(), eps=1e-6, atol=1e-6, rtol=1e-4, seed=0):
    """Compare the gradients of ``fn(*inputs)`` (contracted with a fixed random tensor)
    for every float input and every parameter in ``params`` with central differences.
    Everything must be float64."""
    params = list(params)
    tensors = [x for x in inputs if isinstance(x, fastgrad.Tensor) and x.requires_grad] + params
    assert tensors, "nothing to check"
    for t in tensors:
        assert t.dtype == np.float64, "check_module_grads runs in float64"
        t.grad = None
    out = fn(*inputs)
    v = np.random.default_rng(seed).standard_normal(out.shape)
    (out * fastgrad.tensor(v, dtype=fastgrad.float64)).sum().backward()

    def objective():
        with fastgrad.no_grad():
            return float(np.sum(fn(*inputs).data * v))

    for k, t in enumerate(tensors):
        analytic = t.grad.data if t.grad is not None else np.zeros_like(t.data)
        numeric = np.zeros_like(t.data)
        flat, num = t.data.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            plus = objective()
            flat[j] = orig - eps
            minus = objective()
            flat[j] = orig
            num[j] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(
            analytic, numeric, rtol=rtol, atol=atol, err_msg=f"gradient of tensor {k} (shape {tuple(t.shape)})"
        )


@pytest.fixture
def module_gradcheck():
    return check_module_grads
