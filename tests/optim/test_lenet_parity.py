"""LeNet-5 trained 20 steps in fastgrad and in PyTorch, from the same initial weights on the
same batches, with each optimizer configuration, ends with the same weights (1e-4 relative).

The two libraries compute the forward and backward passes in float32 with different
summation orders, so gradients differ by about 1e-7 relative. Two things can blow such
differences up, and the configurations avoid them:
- adaptive optimizers divide by sqrt(v) + eps: with eps=1e-8, an element whose gradient
  is about 1e-8 (a barely active ReLU) moves by ~lr whatever the gradient's low digits
  say, so Adam, AdamW and RMSprop use eps=1e-6; RMSprop's first steps are 10x lr per
  element, so it uses lr=1e-4 to stay out of the chaotic regime;
- a ReLU pre-activation within rounding of zero, or a max-pooling window whose two largest
  values are within rounding of each other, makes the two libraries route the gradient
  differently (through the element or not; to one input of the window or the other),
  and the gradient then differs outright. Adam's normalized update turns one such event
  into a lasting difference: on a Zen 3 CPU (oneDNN's AVX2 kernels) one pooling window of
  the third AdamW batch, its top two values 3.6e-8 apart (float32's spacing there is
  6e-8), sent conv1.weight's gradient elsewhere and the loss 1.2e-4 apart by step 20,
  while fed identical gradients the two AdamW steps agree to the last bit. So each batch
  is drawn again until PyTorch in float64, on the current weights, finds no such
  near-tie (``_near_tie``): the batches are the same for both libraries and free of
  events whose outcome only rounding decides.
On a failure, compare against FASTGRAD_BACKEND=reference first; the optimizers' own
parity with torch.optim, on identical gradients, is tests/optim/test_optimizers.py.
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
from fastgrad import kernels, models, nn, optim  # noqa: E402

if kernels.backend != "compiled":
    pytest.skip("LeNet-5 training on the pure-Python reference kernels takes far too long", allow_module_level=True)

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


def _torch_lenet5():
    """fastgrad.models.lenet5 written with torch.nn: the same layers, shapes and keys."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(400, 120),
        torch.nn.ReLU(),
        torch.nn.Linear(120, 84),
        torch.nn.ReLU(),
        torch.nn.Linear(84, 10),
    )


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """One torch thread: the comparison needs no speed, and two-thread torch crawls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A near-tie: within this fraction of the layer's largest magnitude. float32 rounding of
# LeNet's sums (25 to 400 terms) moves values by about 1e-7 of that magnitude (the tie
# above was 2e-8 of it); 1e-6 leaves a tenfold margin and rejects about two batches in five.
TIE = 1e-6


def _near_tie(model, images):
    """Whether, in float64 with ``model``'s weights, a ReLU input is within TIE of zero or
    a max-pooling window's two largest values are within TIE of each other."""
    with torch.no_grad():
        h = torch.from_numpy(images).double()
        for layer in model:
            if isinstance(layer, torch.nn.ReLU):
                if float(h.abs().min()) < TIE * float(h.abs().max()):
                    return True
            elif isinstance(layer, torch.nn.MaxPool2d):
                windows = h.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
                top2 = windows.topk(2, dim=-1).values
                gap = top2[..., 0] - top2[..., 1]
                if float(gap[top2[..., 0] > 0].min()) < TIE * float(h.abs().max()):
                    return True
            elif isinstance(layer, torch.nn.Conv2d):
                h = torch.nn.functional.conv2d(
                    h, layer.weight.double(), layer.bias.double(), layer.stride, layer.padding
                )
                continue
            elif isinstance(layer, torch.nn.Linear):
                h = torch.nn.functional.linear(h, layer.weight.double(), layer.bias.double())
                continue
            h = layer(h)
    return False


def _batch(rng, model):
    """The next random batch (images, labels) free of near-ties for ``model``."""
    for _ in range(100):
        images = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, BATCH)
        if not _near_tie(model, images):
            return images, labels
    raise AssertionError("100 batches in a row had near-ties: TIE is too wide")


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_lenet5_trains_like_torch(name, kw):
    torch.manual_seed(0)
    theirs = _torch_lenet5()
    ours = models.lenet5()
    our_params, their_params = list(ours.parameters()), list(theirs.parameters())
    assert [tuple(p.shape) for p in our_params] == [tuple(t.shape) for t in their_params]
    for p, t in zip(our_params, their_params):
        np.copyto(p.data, t.detach().numpy())
    opt = getattr(optim, name)(ours.parameters(), **kw)
    topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kw)
    loss_fn, tloss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        images, labels = _batch(rng, theirs)
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
        np.testing.assert_allclose(
            p.data, want, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{name}: parameter {i} (shape {tuple(want.shape)})"
        )
