"""Devices: fastgrad.device, Tensor.device / .to / .cpu / .cuda, Module.to / .cuda,
fastgrad.cuda, fastgrad.backends and fastgrad.accelerator, against PyTorch's behaviour
(compared with torch itself where it is installed)."""

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn


@pytest.mark.parametrize("args", [("cpu",), ("cuda",), ("cuda:1",), ("cuda", 0), ("mps",), ("cpu", 0)])
def test_device_parses_and_prints_as_torch(args):
    d = fastgrad.device(*args)
    torch = pytest.importorskip("torch")
    t = torch.device(*args)
    assert (d.type, d.index, str(d), repr(d)) == (t.type, t.index, str(t), repr(t))


def test_device_equality_and_errors():
    assert fastgrad.device("cpu") == fastgrad.device("cpu")
    assert fastgrad.device("cuda:0") == fastgrad.device("cuda", 0)
    assert fastgrad.device("cuda:0") != fastgrad.device("cuda")
    assert fastgrad.device("cpu") != "cpu"  # as in PyTorch: a device is not a string
    assert fastgrad.device(fastgrad.device("cuda:2")).index == 2
    assert len({fastgrad.device("cpu"), fastgrad.device("cpu")}) == 1
    for bad in ("gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(RuntimeError):
            fastgrad.device(bad)
    with pytest.raises(RuntimeError):
        fastgrad.device("cuda:0", 1)
    with pytest.raises(TypeError):
        fastgrad.device(1.5)


def test_tensor_device_and_to():
    x = fastgrad.randn(2, 3, requires_grad=True)
    assert x.device == fastgrad.device("cpu") and x.device.type == "cpu" and not x.is_cuda
    assert x.to("cpu") is x and x.to(fastgrad.device("cpu")) is x and x.cpu() is x
    assert x.to(device="cpu", non_blocking=True) is x and x.to(fastgrad.float32) is x
    y = x.to("cpu", fastgrad.float64)
    assert y.dtype == np.float64 and y is not x
    y.sum().backward()  # the cast is differentiable
    np.testing.assert_array_equal(x.grad.data, np.ones((2, 3), np.float32))
    other = fastgrad.zeros(1, dtype=fastgrad.float64)
    assert x.to(other).dtype == np.float64
    assert x.to(dtype=fastgrad.float64).dtype == np.float64
    c = x.to("cpu", copy=True)
    assert c is not x and c.data is not x.data
    np.testing.assert_array_equal(c.data, x.data)
    labels = fastgrad.tensor([1, 2])
    assert labels.to("cpu") is labels and labels.long() is labels


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.to("cuda"),
        lambda t: t.to("cuda:0"),
        lambda t: t.to(fastgrad.device("mps")),
        lambda t: t.to(device="cuda"),
        lambda t: t.cuda(),
        lambda t: t.to("cuda", fastgrad.float64),
    ],
)
def test_tensor_to_an_accelerator_says_cpu_only(call):
    with pytest.raises(RuntimeError, match="runs on the CPU only"):
        call(fastgrad.ones(2))


def test_tensor_to_rejects_nonsense():
    with pytest.raises(TypeError):
        fastgrad.ones(2).to("cpu", fastgrad.float32, 3)
    with pytest.raises(TypeError):
        fastgrad.ones(2).to(colour="red")


def test_module_to_cpu_dtype_and_cuda():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    weight = net[0].weight
    assert net.to(fastgrad.device("cpu")) is net and net.cpu() is net
    assert net.to("cpu", fastgrad.float64) is net
    assert net[0].weight is weight and weight.dtype == np.float64  # converted in place
    assert net.to(fastgrad.zeros(1)) is net and weight.dtype == np.float32
    assert net.to(device="cpu", dtype=fastgrad.float64) is net and net[1].running_mean.dtype == np.float64
    for call in (
        lambda: net.to("cuda"),
        lambda: net.cuda(),
        lambda: net.to(fastgrad.device("mps")),
        lambda: net.to(device="cuda:0"),
    ):
        with pytest.raises(RuntimeError, match="runs on the CPU only"):
            call()


def test_cuda_backends_accelerator():
    assert fastgrad.cuda.is_available() is False and fastgrad.cuda.device_count() == 0
    assert fastgrad.cuda.manual_seed(1) is None and fastgrad.cuda.manual_seed_all(1) is None
    with pytest.raises(RuntimeError, match="CPU only"):
        fastgrad.cuda.current_device()
    assert fastgrad.backends.mps.is_available() is False and fastgrad.backends.mps.is_built() is False
    cudnn = fastgrad.backends.cudnn
    assert (cudnn.deterministic, cudnn.benchmark, cudnn.enabled) == (False, False, True)
    try:
        cudnn.deterministic, cudnn.benchmark = True, True
        assert fastgrad.backends.cudnn.deterministic and fastgrad.backends.cudnn.benchmark
    finally:
        cudnn.deterministic, cudnn.benchmark = False, False
    assert fastgrad.accelerator.is_available() is False and fastgrad.accelerator.current_accelerator() is None


def test_defaults_match_torch_on_a_cpu_machine():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    b = torch.backends.cudnn
    assert (fastgrad.backends.cudnn.deterministic, fastgrad.backends.cudnn.benchmark) == (b.deterministic, b.benchmark)
    assert fastgrad.cuda.device_count() == torch.cuda.device_count()
    assert fastgrad.backends.mps.is_available() == torch.backends.mps.is_available()


def test_the_porting_idioms_run_with_import_fastgrad_as_torch():
    import fastgrad as torch

    use_cuda = torch.cuda.is_available()
    use_mps = torch.backends.mps.is_available()
    device = torch.device("cuda" if use_cuda else "mps" if use_mps else "cpu")
    torch.backends.cudnn.benchmark = False
    model = torch.nn.Linear(4, 2).to(device)
    x = torch.randn(3, 4).to(device)
    assert model(x).device == device
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(np.zeros((4, 4), np.float32)), batch_size=2)
    assert [b[0].shape for b in loader] == [(2, 4), (2, 4)]
