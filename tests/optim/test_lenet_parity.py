"""LeNet-5 trained 20 steps in fastgrad and in PyTorch, from the same initial weights on the
same batches, with each optimizer configuration, ends with the same weights (1e-4 relative).

The two libraries compute the forward and backward passes in float32 with different
summation orders, so gradients differ by about 1e-7 relative. Two things can blow such
differences up, and the configurations avoid them:
- adaptive optimizers divide by sqrt(v) + eps: with eps=1e-8, an element whose gradient
  is about 1e-8 (a barely active ReLU) moves by ~lr whatever the gradient's low digits
  say, so Adam, AdamW and RMSprop use eps=1e-6; RMSprop's first steps are 10x lr per
  element, so it uses lr=1e-4 to stay out of the chaotic regime;
- a pre-activation within rounding of zero makes the two ReLUs disagree, and the
  gradient through that element then differs outright. On a failure, compare against
  FASTGRAD_BACKEND=reference first: if the reference kernels also disagree with torch
  on the same step, look for such an element before suspecting the optimizer (its own
  parity with torch.optim, on identical gradients, is tests/optim/test_optimizers.py).
"""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# The layers and the ops under them must all exist; skip (saying which is missing) only
# when one cannot be imported.
_NEEDED = ["fastgrad.nn", "fastgrad.ops.conv", "fastgrad.ops.pool", "fastgrad.ops.loss"]
for _name in _NEEDED:
    try:
        importlib.import_module(_name)
    except ImportError as exc:
        pytest.skip(f"LeNet-5 parity needs {_name}, which cannot be imported yet ({exc})", allow_module_level=True)

import fastgrad  # noqa: E402
from fastgrad import kernels, nn, optim  # noqa: E402

if kernels.backend != "compiled":
    pytest.skip("LeNet-5 training on the pure-Python reference kernels takes far too long",
                allow_module_level=True)

STEPS = 20
BATCH = 16

CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    ("Adam", dict(lr=1e-3, eps=1e-6)),
    ("AdamW", dict(lr=1e-3, eps=1e-6, weight_decay=1e-2)),
    ("RMSprop", dict(lr=1e-4, eps=1e-6)),
]
IDS = ["sgd", "sgd-momentum", "sgd-nesterov-wd", "adam", "adamw", "rmsprop"]


def _lenet(lib):
    return lib.nn.Sequential(
        lib.nn.Conv2d(1, 6, 5, padding=2), lib.nn.ReLU(), lib.nn.MaxPool2d(2),
        lib.nn.Conv2d(6, 16, 5), lib.nn.ReLU(), lib.nn.MaxPool2d(2),
        lib.nn.Flatten(),
        lib.nn.Linear(400, 120), lib.nn.ReLU(),
        lib.nn.Linear(120, 84), lib.nn.ReLU(),
        lib.nn.Linear(84, 10))


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread: the comparison needs no speed, and two-thread torch crawls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        images = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, BATCH)
        yield images, labels


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_lenet5_trains_like_torch(name, kw):
    torch.manual_seed(0)
    theirs = _lenet(torch)
    ours = _lenet(fastgrad)
    our_params, their_params = list(ours.parameters()), list(theirs.parameters())
    assert [tuple(p.shape) for p in our_params] == [tuple(t.shape) for t in their_params]
    for p, t in zip(our_params, their_params):
        np.copyto(p.data, t.detach().numpy())
    opt = getattr(optim, name)(ours.parameters(), **kw)
    topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kw)
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    for images, labels in _batches():
        opt.zero_grad()
        loss = loss_fn(ours(fastgrad.tensor(images)), fastgrad.tensor(labels))
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = tloss_fn(theirs(torch.from_numpy(images)), torch.from_numpy(labels))
        tloss.backward()
        topt.step()
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-4)
    for i, (p, t) in enumerate(zip(our_params, their_params)):
        want = t.detach().numpy()
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(p.data, want, rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=f"{name}: parameter {i} (shape {tuple(want.shape)})")
