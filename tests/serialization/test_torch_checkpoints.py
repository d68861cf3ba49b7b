"""fastgrad.load reads torch.save checkpoints: the committed fixtures (written by torch
2.13, see fixtures/make_fixtures.py) without PyTorch, and fresh files written in the test
where torch is installed. A state dict saved by PyTorch loads into the same fastgrad model
and predicts what PyTorch predicts."""

import importlib.util
import io
import os
from collections import OrderedDict

import numpy as np
import pytest

import fastgrad
from fastgrad.nn import Parameter

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
_spec = importlib.util.spec_from_file_location("torch_models", os.path.join(HERE, "torch_models.py"))
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)


def _fixture(name):
    return os.path.join(FIXTURES, name)


def test_fixture_tensors_of_every_dtype_and_layout():
    obj = fastgrad.load(_fixture("tensors.pt"))
    expected = models.expected_values()
    for key, want in expected.items():
        got = obj[key]
        assert type(got) is fastgrad.Tensor, key
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got.data, want, err_msg=key)
        assert got.data.flags.c_contiguous
    assert type(obj["parameter"]) is Parameter and obj["parameter"].requires_grad
    np.testing.assert_array_equal(obj["parameter"].data, np.ones(2, np.float32))
    assert obj["extras"] == {
        "epoch": 3,
        "name": "run-1",
        "betas": (0.9, 0.999),
        "none": None,
        "list": [1, 2.5, "x"],
        "flag": True,
    }


def test_fixture_state_dict_predicts_what_torch_predicted():
    state = fastgrad.load(_fixture("net_state_dict.pt"), map_location="cpu")
    assert isinstance(state, OrderedDict)
    assert list(state) == [
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "conv2.weight",
        "conv2.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert int(state["bn1.num_batches_tracked"].item()) == 2
    net = models.make_fastgrad_net()
    net.load_state_dict(state)
    net.eval()
    with fastgrad.no_grad():
        out = net(fastgrad.tensor(models.net_input())).data
    expected = fastgrad.load(_fixture("net_output.pt"))["output"].data
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero arrays


def test_fixture_optimizer_state_dict_loads_into_fastgrad_sgd():
    net = models.make_fastgrad_net()
    opt = fastgrad.optim.SGD(net.parameters(), lr=0.5, momentum=0.1)
    saved = fastgrad.load(_fixture("net_sgd_state.pt"))
    assert saved["param_groups"][0]["lr"] == 0.1 and saved["param_groups"][0]["momentum"] == 0.9
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.1
    first = next(iter(net.parameters()))
    np.testing.assert_array_equal(opt.state[first]["momentum_buffer"], saved["state"][0]["momentum_buffer"].data)


def test_file_objects_and_map_location_forms():
    with open(_fixture("tensors.pt"), "rb") as f:
        raw = f.read()
    for loc in (None, "cpu", fastgrad.device("cpu"), {"cpu": "cpu"}, lambda storage, loc: storage):
        obj = fastgrad.load(io.BytesIO(raw), map_location=loc)
        np.testing.assert_array_equal(obj["float32"].data, models.expected_values()["float32"])
    with pytest.raises(RuntimeError, match="CPU only"):
        fastgrad.load(io.BytesIO(raw), map_location="cuda:0")


# ----------------------------------------------------------------------------- with torch installed


def _torch():
    return pytest.importorskip("torch")


def test_state_dict_saved_by_torch_now_predicts_the_same(tmp_path):
    torch = _torch()
    net, _ = models.trained_torch_net()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    mine = models.make_fastgrad_net()
    mine.load_state_dict(fastgrad.load(path))
    mine.eval()
    x = models.net_input()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    with fastgrad.no_grad():
        got = mine(fastgrad.tensor(x)).data
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("protocol", [2, 4])
def test_torch_tensors_of_every_dtype(tmp_path, protocol):
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    values = {
        "f32": torch.randn(3, 5, generator=g),
        "f64": torch.randn(4, dtype=torch.float64, generator=g),
        "i64": torch.randint(-9, 9, (2, 3), generator=g),
        "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(-2, 2, dtype=torch.int16),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "strided": torch.randn(4, 6, generator=g)[::2, 1::3],
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),
        "scalar": torch.tensor(7.0),
        "empty": torch.empty(0, 2),
        "permuted": torch.randn(2, 3, 4, generator=g).permute(2, 0, 1),
    }
    path = tmp_path / "t.pt"
    torch.save(values, path, pickle_protocol=protocol)
    got = fastgrad.load(path)
    for key, t in values.items():
        want = t.numpy()
        assert got[key].dtype == want.dtype, key
        np.testing.assert_array_equal(got[key].data, want, err_msg=key)


def test_torch_shared_storage_and_optimizer_state(tmp_path):
    torch = _torch()
    net, opt = models.trained_torch_net()
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    loss = -net(torch.from_numpy(models.net_input()))[:, 1].mean()
    loss.backward()
    adam.step()
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "epoch": 5,
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": adam.state_dict(),
            "loss": loss.detach(),
        },
        path,
    )
    ckpt = fastgrad.load(path)
    assert ckpt["epoch"] == 5
    np.testing.assert_allclose(ckpt["loss"].item(), loss.item())
    mine = models.make_fastgrad_net()
    mine.load_state_dict(ckpt["model_state_dict"])
    my_adam = fastgrad.optim.Adam(mine.parameters(), lr=1e-3)
    my_adam.load_state_dict(ckpt["optimizer_state_dict"])
    first = next(iter(mine.parameters()))
    np.testing.assert_array_equal(
        my_adam.state[first]["exp_avg"], adam.state[next(iter(net.parameters()))]["exp_avg"].numpy()
    )


def test_what_fastgrad_saves_torch_reads_as_safetensors(tmp_path):
    _torch()
    from safetensors.torch import load_file

    net = models.make_fastgrad_net()
    fastgrad.save(net.state_dict(), tmp_path / "w.safetensors")
    loaded = load_file(str(tmp_path / "w.safetensors"))
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(loaded[key].numpy(), value)
