"""The nets of bench/bench_nets.py: each, written once against a library, computes in
fastgrad what it computes in PyTorch from the same weights (so the benchmark races like
against like), and its compiled replay gives bit for bit what its eager run gives, in
training (BatchNorm statistics, dropout with the same seed) and in eval mode."""

import importlib.util
import os

import numpy as np
import pytest

import fastgrad

if fastgrad.kernels.backend != "compiled":
    pytest.skip("the benchmark's nets on the pure-Python reference kernels take far too long", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_nets", os.path.join(HERE, "..", "..", "bench", "bench_nets.py"))
bench_nets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_nets)

NETS = ["resnet8", "mnist", "cifar_tutorial", "vgg_bn", "lenet5"]


def batch(net, n=2, seed=0):
    shape = bench_nets.NETS[net][1]
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


@pytest.mark.parametrize("net", NETS)
def test_net_matches_pytorch(net):
    torch = pytest.importorskip("torch")
    fastgrad.manual_seed(0)
    fg = bench_nets.NETS[net][0](fastgrad).eval()
    tm = bench_nets.NETS[net][0](torch).eval()
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fg.state_dict().items()})
    x = batch(net)
    with fastgrad.no_grad(), torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
        got = fg(fastgrad.from_numpy(x)).data
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("net", NETS)
def test_compiled_net_trains_bit_for_bit_as_eager(net):
    runs = []
    for compiled in (False, True):
        fastgrad.manual_seed(0)
        model = bench_nets.NETS[net][0](fastgrad)
        call = fastgrad.compile(model) if compiled else model
        opt = fastgrad.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        fastgrad.manual_seed(1)
        out = []
        for step in range(4):
            opt.zero_grad()
            loss = fastgrad.nn.functional.cross_entropy(
                call(fastgrad.from_numpy(batch(net, seed=step % 2))), fastgrad.tensor([1, 3])
            )
            loss.backward()
            opt.step()
            out.append(loss.item())
        model.eval()
        with fastgrad.no_grad():
            out.append(call(fastgrad.from_numpy(batch(net, seed=5))).data.copy())
            out.append(call(fastgrad.from_numpy(batch(net, seed=5))).data.copy())
        out.extend(v.copy() for v in model.state_dict().values())
        if compiled:
            assert call.compile_stats["replays"] >= 2, call.compile_stats
        runs.append(out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
