"""The layers PyTorch scripts use beyond the basics: construction defaults, parameter names
and shapes, state_dict keys, and outputs and parameter gradients against PyTorch (weights
copied over); containers and shape layers without torch."""

from collections import OrderedDict

import numpy as np
import pytest

import fastgrad
from fastgrad import nn

# (constructor arguments, input shape) per layer name; every layer exists in torch.nn
LAYERS = [
    ("GELU", (), (3, 5)),
    ("GELU", ("tanh",), (3, 5)),
    ("SiLU", (), (2, 3, 4)),
    ("ELU", (0.5,), (4, 3)),
    ("Hardswish", (), (2, 7)),
    ("PReLU", (), (2, 3, 4)),
    ("PReLU", (3, 0.1), (2, 3, 4)),
    ("LayerNorm", ((4, 5),), (2, 3, 4, 5)),
    ("LayerNorm", (6, 1e-3, False), (2, 6)),
    ("LayerNorm", (6,), (3, 6)),
    ("GroupNorm", (2, 6), (2, 6, 3, 3)),
    ("GroupNorm", (3, 6, 1e-5, False), (2, 6, 5)),
    ("Conv1d", (3, 4, 3), (2, 3, 10)),
    ("Conv1d", (4, 6, 2, 2, 1, 1, 2, False), (1, 4, 9)),
    ("Conv1d", (3, 2, 3), (3, 8)),
    ("ConvTranspose2d", (3, 4, 3), (2, 3, 5, 4)),
    ("ConvTranspose2d", (4, 2, (2, 3), 2, 1, 1, 2), (1, 4, 3, 3)),
    ("ConvTranspose2d", (2, 3, 3, 1, 0, 0, 1, False), (2, 4, 4)),
    ("MaxPool1d", (3,), (2, 3, 10)),
    ("MaxPool1d", (3, 2, 1), (2, 9)),
    ("AvgPool1d", (2,), (2, 3, 7)),
    ("AvgPool1d", (3, 1, 1, False, False), (1, 2, 6)),
    ("Unflatten", (1, (2, 3)), (4, 6, 2)),
    ("Unflatten", (-1, (2, -1)), (3, 8)),
    ("Dropout2d", (0.5,), (2, 3, 4, 4)),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(LAYERS)]


def _copy_to_torch(ours, theirs, torch):
    ours_sd = ours.state_dict()
    theirs_sd = theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    with torch.no_grad():
        for key, value in ours_sd.items():
            assert tuple(value.shape) == tuple(theirs_sd[key].shape), key
            theirs_sd[key].copy_(torch.from_numpy(np.array(value.data if hasattr(value, "data") else value)))


@pytest.mark.parametrize("name,args,shape", LAYERS, ids=IDS)
def test_layer_matches_torch(name, args, shape):
    torch = pytest.importorskip("torch")
    fastgrad.manual_seed(0)
    ours = getattr(nn, name)(*args)
    theirs = getattr(torch.nn, name)(*args).double()
    ours.double()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    _copy_to_torch(ours, theirs, torch)
    assert repr(ours).split("(")[0] == repr(theirs).split("(")[0]
    if name == "Dropout2d":
        ours.eval()
        theirs.eval()
    x = np.random.default_rng(1).standard_normal(shape)
    xo, xt = fastgrad.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = ours(xo), theirs(xt)
    assert tuple(out.shape) == tuple(tout.shape)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    v = np.random.default_rng(2).standard_normal(out.shape)
    (out * fastgrad.tensor(v)).sum().backward()
    (tout * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (key, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize(
    "name,args",
    [
        ("Conv1d", (3, 4, 3)),
        ("ConvTranspose2d", (3, 4, 3)),
        ("PReLU", ()),
        ("LayerNorm", ((2, 3),)),
        ("GroupNorm", (2, 4)),
        ("Embedding", (10, 3)),
    ],
)
def test_initial_parameters_follow_torch_defaults(name, args):
    """Initial values: the same distribution as PyTorch's (bounds and constants)."""
    torch = pytest.importorskip("torch")
    fastgrad.manual_seed(0)
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    for (key, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        a, b = p.detach().numpy(), q.detach().numpy()
        assert a.dtype == np.float32 and a.shape == b.shape
        if np.ptp(b) == 0:
            np.testing.assert_array_equal(a, b)  # constants: ones, zeros, 0.25
        elif name == "Embedding":
            assert abs(a.std() - 1) < 0.5
        else:  # kaiming_uniform_(a=sqrt(5)) and the bias: both uniform in +-1/sqrt(fan_in)
            w = theirs.weight
            bound = 1 / np.sqrt(w.shape[1] * np.prod(w.shape[2:]))
            assert np.abs(b).max() <= bound * 1.0001  # PyTorch's values obey the bound ...
            assert np.abs(a).max() <= bound * 1.0001 and a.std() > bound / 4  # ... and so do ours


def test_layer_norm_and_group_norm_by_hand():
    x = fastgrad.tensor([[1.0, 2.0, 3.0, 6.0]])
    out = nn.LayerNorm(4, eps=0.0)(x).detach().numpy()
    want = (x.numpy() - 3.0) / np.sqrt(np.mean((x.numpy() - 3.0) ** 2))
    np.testing.assert_allclose(out, want, rtol=1e-6)
    g = nn.GroupNorm(2, 4, affine=False)
    y = g(fastgrad.tensor([[[1.0], [3.0], [10.0], [30.0]]])).numpy()
    np.testing.assert_allclose(y.ravel(), [-1, 1, -1, 1], rtol=1e-4)
    assert list(nn.GroupNorm(2, 4).state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        nn.GroupNorm(3, 4)


def test_module_dict():
    d = nn.ModuleDict({"conv": nn.Conv2d(1, 2, 3), "act": nn.ReLU()})
    d["fc"] = nn.Linear(2, 3)
    d.update([("norm", nn.LayerNorm(3))])
    assert list(d.keys()) == ["conv", "act", "fc", "norm"] and len(d) == 4 and "fc" in d
    assert [k for k in d.state_dict()] == [
        "conv.weight",
        "conv.bias",
        "fc.weight",
        "fc.bias",
        "norm.weight",
        "norm.bias",
    ]
    assert isinstance(d.pop("act"), nn.ReLU) and "act" not in d
    del d["norm"]
    assert list(d) == ["conv", "fc"]
    holder = nn.Module()
    holder.blocks = d
    assert len(list(holder.parameters())) == 4
    with pytest.raises(ValueError, match="should be a \\(name, module\\) pair"):
        d.update([nn.ReLU()])
    d.clear()
    assert len(d) == 0


def test_module_dict_matches_torch_keys():
    torch = pytest.importorskip("torch")
    spec = OrderedDict([("a", (3, 2)), ("b", (2, 1))])
    ours = nn.ModuleDict({k: nn.Linear(*v) for k, v in spec.items()})
    theirs = torch.nn.ModuleDict({k: torch.nn.Linear(*v) for k, v in spec.items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_unflatten_and_embedding_layers():
    x = fastgrad.arange(24).reshape(2, 12)
    assert nn.Unflatten(1, (3, -1, 2))(x).shape == (2, 3, 2, 2)
    with pytest.raises(RuntimeError, match="don't multiply up"):
        nn.Unflatten(1, (5, 2))(x)
    emb = nn.Embedding(6, 2, padding_idx=-1)
    assert emb.padding_idx == 5 and np.all(emb.weight.data[5] == 0)
    out = emb(fastgrad.tensor([[5, 1]]))
    assert out.shape == (1, 2, 2)
    pre = nn.Embedding.from_pretrained(fastgrad.tensor(np.eye(3)))
    assert not pre.weight.requires_grad
    np.testing.assert_array_equal(pre(fastgrad.tensor([2])).numpy(), [[0.0, 0.0, 1.0]])


def test_sequential_with_new_layers_trains():
    """A small model of the new layers learns (loss falls), as a user would build it."""
    fastgrad.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.GELU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.LayerNorm(16),
        nn.SiLU(),
        nn.Linear(16, 2),
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int64)
    opt = fastgrad.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(fastgrad.tensor(x)), fastgrad.tensor(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
