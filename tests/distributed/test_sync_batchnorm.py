"""SyncBatchNorm under mpiexec -n 2 (ranks of 5 and 7 samples): outputs, input gradients,
summed parameter gradients and running statistics equal BatchNorm on the whole batch of 12
in one process (the oracle, run here)."""

import numpy as np
import pytest

import fastgrad
from fastgrad import nn


def test_sync_batchnorm_is_batchnorm_of_the_global_batch(mpirun, workers):
    proc = mpirun("syncbn")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = np.load(mpirun.out / "syncbn.npz")
    assert str(d["kind"]) == "SyncBatchNorm"
    net, x, c = workers.syncbn_case(None)
    xt = fastgrad.tensor(x, requires_grad=True)
    y = net(xt)
    (y * fastgrad.tensor(c)).sum().backward()
    rows = [slice(0, 5), slice(5, 12)]
    for r in range(2):
        n = rows[r].stop - rows[r].start
        np.testing.assert_allclose(d[f"y{r}"][: n * 5], y.data[rows[r]].reshape(-1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d[f"dx{r}"][: n * 72], xt.grad.data[rows[r]].reshape(-1), rtol=1e-4, atol=1e-5)
        stats = np.concatenate([net[1].running_mean.data, net[1].running_var.data, net[5].running_mean.data])
        np.testing.assert_allclose(d[f"stats{r}"], stats, rtol=1e-5, atol=1e-6)
    grads = np.concatenate([p.grad.data.reshape(-1) for p in net.parameters()])
    np.testing.assert_allclose(d["grads0"] + d["grads1"], grads, rtol=1e-4, atol=1e-5)


def test_without_a_group_it_is_batchnorm():
    fastgrad.manual_seed(2)
    bn, sync = nn.BatchNorm2d(3), nn.SyncBatchNorm(3)
    x = fastgrad.randn(4, 3, 5, 5)
    np.testing.assert_array_equal(bn(x).data, sync(x).data)
    np.testing.assert_array_equal(bn.running_var.data, sync.running_var.data)
    with pytest.raises(ValueError, match="expected"):
        sync(fastgrad.randn(4, 2, 5))


def test_convert_keeps_the_arrays():
    fastgrad.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, bias=False), nn.Sequential(nn.BatchNorm2d(2)))
    weight, mean = model[1].weight, model[2][0].running_mean
    keys = list(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[2][0], nn.SyncBatchNorm)
    assert converted[1].weight is weight and converted[1].bias is None and converted[2][0].running_mean is mean
    assert list(converted.state_dict()) == keys  # checkpoints load either way
