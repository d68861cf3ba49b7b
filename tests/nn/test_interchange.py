"""Weights interchange with PyTorch: the same network built with fastgrad.nn and
torch.nn loads the other's state_dict (as numpy arrays) and computes the same outputs
(to 1e-5) and gradients."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
from fastgrad import models

torch = pytest.importorskip("torch")


def lenet5(lib):
    """fastgrad.models.lenet5, or the same network written with torch.nn."""
    if lib is nn:
        return models.lenet5()
    return lib.Sequential(
        lib.Conv2d(1, 6, 5, padding=2),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Conv2d(6, 16, 5),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Flatten(),
        lib.Linear(400, 120),
        lib.ReLU(),
        lib.Linear(120, 84),
        lib.ReLU(),
        lib.Linear(84, 10),
    )


def bn_cnn(lib):
    return lib.Sequential(
        lib.Conv2d(3, 8, 3, padding=1),
        lib.BatchNorm2d(8),
        lib.LeakyReLU(0.1),
        lib.AvgPool2d(2),
        lib.Conv2d(8, 8, 3, stride=2, bias=False),
        lib.BatchNorm2d(8, momentum=None),
        lib.Tanh(),
        lib.AdaptiveAvgPool2d(1),
        lib.Flatten(),
        lib.Linear(8, 16),
        lib.BatchNorm1d(16),
        lib.Sigmoid(),
        lib.Dropout(0.3),
        lib.Linear(16, 5),
        lib.LogSoftmax(dim=1),
    )


def images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_pytorch_lenet_weights_load_and_predict_the_same():
    torch.manual_seed(0)
    theirs, ours = lenet5(torch.nn), lenet5(nn)
    result = ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = images((6, 1, 28, 28))
    out = ours(fastgrad.tensor(x)).data
    np.testing.assert_allclose(out, torch_out(theirs, x), rtol=1e-5, atol=1e-5)
    assert np.array_equal(out.argmax(1), torch_out(theirs, x).argmax(1))


def test_fastgrad_lenet_weights_load_into_pytorch():
    fastgrad.manual_seed(1)
    ours, theirs = lenet5(nn), lenet5(torch.nn)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = images((4, 1, 28, 28), seed=1)
    np.testing.assert_allclose(ours(fastgrad.tensor(x)).data, torch_out(theirs, x), rtol=1e-5, atol=1e-5)
    # and back: a round trip through torch changes nothing
    again = lenet5(nn)
    again.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value)


def test_lenet_gradients_match_pytorch():
    torch.manual_seed(2)
    theirs, ours = lenet5(torch.nn), lenet5(nn)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x, labels = images((6, 1, 28, 28), seed=2), np.arange(6) % 10
    loss = nn.CrossEntropyLoss()(ours(fastgrad.tensor(x)), fastgrad.tensor(labels))
    loss.backward()
    tloss = torch.nn.CrossEntropyLoss()(theirs(torch.from_numpy(x)), torch.from_numpy(labels))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, tparams[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_batchnorm_cnn_interchange_with_running_statistics():
    torch.manual_seed(3)
    theirs, ours = bn_cnn(torch.nn), bn_cnn(nn)
    theirs.train()
    with torch.no_grad():
        for seed in range(3):  # move the running statistics away from their initial values
            theirs(torch.from_numpy(images((6, 3, 8, 8), seed=seed)))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert int(ours[1].num_batches_tracked.item()) == 3
    theirs.eval()
    ours.eval()
    x = images((5, 3, 8, 8), seed=9)
    np.testing.assert_allclose(ours(fastgrad.tensor(x)).data, torch_out(theirs, x), rtol=1e-5, atol=1e-5)
    # one more training step on both (dropout off: p=0) keeps the statistics in step
    ours[12].p = theirs[12].p = 0.0
    ours.train()
    theirs.train()
    x = images((6, 3, 8, 8), seed=10)
    np.testing.assert_allclose(ours(fastgrad.tensor(x)).data, torch_out(theirs, x), rtol=1e-4, atol=1e-5)
    back = bn_cnn(torch.nn)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(back.state_dict()[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
