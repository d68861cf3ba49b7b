"""The scripts of examples/ run as they are, each on tiny data made here (or the bundled
MNIST sample), in a fresh interpreter; each differs from its PyTorch original in its
imports only, which the first test checks. A script that needs a layer or optimizer this
build lacks is skipped, naming it."""

import importlib.util
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
import fastgrad.optim as optim
from fastgrad.datasets import write_idx

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
SCRIPTS = ["mnist.py", "cifar10_tutorial.py", "resnet8_cifar.py", "fashion_mnist.py"]


def _needs(module, *names):
    missing = [f"{module.__name__}.{n}" for n in names if not hasattr(module, n)]
    if missing:
        pytest.skip("this build lacks " + ", ".join(missing))


def _run(script, cwd, *args, timeout=600):
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_open_with_how_they_differ_and_import_no_torch(script):
    with open(os.path.join(EXAMPLES, script)) as f:
        text = f.read()
    head = text.split("\n\n")[0]
    assert head.startswith("#") and "differs from" in head and "imports" in head
    assert not re.search(r"^\s*(import|from)\s+(torch|torchvision)\b", text, re.M)


def _cifar_python_batches(root, n_train=8, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = 10 if name == "test_batch" else n_train
        labels = rng.permutation(10) if name == "test_batch" else rng.integers(0, 10, n)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_mnist_example_dry_run_and_saved_model(tmp_path):
    _needs(optim, "Adadelta")
    out = _run("mnist.py", tmp_path, "--epochs", "1", "--dry-run", "--save-model")
    assert "Train Epoch: 1 [0/8000 (0%)]" in out
    match = re.search(r"Test set: Average loss: [0-9.]+, Accuracy: (\d+)/2000", out)
    assert match, out
    spec = importlib.util.spec_from_file_location("mnist_example", os.path.join(EXAMPLES, "mnist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(fastgrad.load(tmp_path / "mnist_cnn.pt"))  # strict: every key, every shape


def test_cifar10_tutorial_on_tiny_data(tmp_path):
    _cifar_python_batches(tmp_path / "data")
    out = _run("cifar10_tutorial.py", tmp_path)
    assert "Finished Training" in out and "GroundTruth:" in out and "Predicted:" in out
    assert re.search(r"Accuracy of the network on the 10000 test images: \d+ %", out)
    assert len(re.findall(r"Accuracy for class: \w+ +is [0-9.]+ %", out)) == 10
    assert out.rstrip().endswith("cpu")
    assert set(fastgrad.load(tmp_path / "cifar_net.pth")) == {
        f"{m}.{p}" for m in ("conv1", "conv2", "fc1", "fc2", "fc3") for p in ("weight", "bias")
    }


def test_resnet8_on_tiny_cifar_shaped_data(tmp_path):
    _needs(optim.lr_scheduler, "CosineAnnealingLR")
    _needs(nn, "AdaptiveAvgPool2d")
    _cifar_python_batches(tmp_path / "data", n_train=6)
    out = _run(
        "resnet8_cifar.py",
        tmp_path,
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--log-interval",
        "1",
    )
    assert re.search(r"test: loss [0-9.]+, accuracy \d+/10", out) and "best accuracy" in out
    ckpt = fastgrad.load(tmp_path / "resnet8_cifar.pt")
    assert ckpt["epoch"] in (1, 2) and "layer3.0.shortcut.1.running_mean" in ckpt["model_state_dict"]


def test_fashion_mnist_with_layernorm_and_gelu_on_tiny_data(tmp_path):
    _needs(nn, "LayerNorm", "GELU")
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in (("train", 40), ("t10k", 12)):
        write_idx(raw / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    out = _run("fashion_mnist.py", tmp_path, "--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "16")
    assert re.search(r"epoch 1: train loss [0-9.]+ acc [0-9.]+ \| val loss", out) and "test loss" in out
    assert "head.2.weight" in fastgrad.load(tmp_path / "fashion_mnist.pt")
