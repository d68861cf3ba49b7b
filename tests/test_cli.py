"""The fastgrad command end to end, on a few hundred images."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastgrad
from fastgrad import io
from fastgrad.cli import main

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:  # the optional extra fastgrad[plot]: plots are replaced by a one-line hint
    HAVE_MATPLOTLIB = False
REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
# Training LeNet-5 on hundreds of images takes minutes on the pure-Python kernels: those
# tests run on the compiled backend; test_reference_backend_runs covers the other one.
compiled_only = pytest.mark.skipif(
    fastgrad.kernels.backend != "compiled", reason="trains LeNet-5 on hundreds of images (compiled kernels only)"
)
QUICK = ["--limit", "320", "--val-limit", "200", "--batch-size", "32", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads_and_backend():
    threads, backend = fastgrad.get_num_threads(), fastgrad.kernels.backend
    yield
    fastgrad.set_num_threads(threads)
    fastgrad.kernels.use_backend(backend)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _accuracy(text):
    return float(re.search(r"held-out accuracy: ([\d.]+)%", text).group(1))


def _loss(text):
    return re.search(r"held-out accuracy: .*loss ([\d.]+)", text).group(1)


@compiled_only
def test_train_save_evaluate_plot(tmp_path, capsys):
    ck, png = tmp_path / "run.safetensors", tmp_path / "curves.png"
    code, out, err = run(capsys, "train", "--epochs", "2", *QUICK, "--save", str(ck), "--plot", str(png))
    assert code == 0, out
    assert "lenet5 on the bundled MNIST sample (320 training / 200 held-out images)" in out
    for words in ("held-out accuracy:", "images/s", "1 thread", "compiled backend", "saved checkpoint"):
        assert words in out
    assert _accuracy(out) > 50  # 640 image presentations are enough to beat chance by far
    if HAVE_MATPLOTLIB:
        assert png.stat().st_size > 10_000
    else:
        assert "pip install fastgrad[plot]" in err and not png.exists()
    saved = io.load_checkpoint(ck)
    assert saved.epoch == 2 and saved.step == 20 and saved.extra["user"]["cli"]["limit"] == 320
    code, out2, _ = run(capsys, "evaluate", str(ck), "--val-limit", "200")
    assert code == 0 and "lenet5 after 2 epochs (20 updates)" in out2
    assert _accuracy(out2) == _accuracy(out) and _loss(out2) == _loss(out)


def _ctrl_c_after(monkeypatch, update):
    """Make `fastgrad train` see a Ctrl-C right after the given update (in-process)."""
    from fastgrad.train import StopOnInterrupt

    def on_batch_end(self, trainer, logs):
        if trainer.global_step == update:
            self._handler(signal.SIGINT, None)

    monkeypatch.setattr(StopOnInterrupt, "on_batch_end", on_batch_end, raising=False)


@compiled_only
@pytest.mark.parametrize("update", [7, 10])  # in the middle of epoch 1, and at its end
def test_interrupted_run_resumes_exactly(tmp_path, capsys, monkeypatch, update):
    ck = tmp_path / "ck.safetensors"
    code, straight, _ = run(capsys, "train", "--epochs", "2", "--optimizer", "sgd", *QUICK)
    assert code == 0
    _ctrl_c_after(monkeypatch, update)
    code, out, _ = run(capsys, "train", "--epochs", "2", "--optimizer", "sgd", *QUICK, "--save", str(ck))
    assert code == 130 and f"continue with: fastgrad train --resume {ck}" in out
    assert io.load_checkpoint(ck).step == update
    monkeypatch.undo()
    code, resumed, _ = run(capsys, "train", "--resume", str(ck), "--quiet", "--threads", "1", "--save", str(ck))
    assert code == 0 and "resuming" in resumed and "sgd lr 0.05" in resumed
    assert _loss(resumed) == _loss(straight) and _accuracy(resumed) == _accuracy(straight)
    code, again, _ = run(capsys, "train", "--resume", str(ck), "--quiet")
    assert code == 0 and "already has 2 epochs" in again and _loss(again) == _loss(straight)


@compiled_only
@pytest.mark.skipif(os.name != "posix", reason="needs SIGINT delivery to a child process")
def test_ctrl_c_saves_a_checkpoint_and_resuming_finishes(tmp_path):
    ck = tmp_path / "ck.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "fastgrad",
        "train",
        "--limit",
        "3000",
        "--val-limit",
        "100",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--save",
        str(ck),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = bytearray()

    def pump():
        while True:
            b = proc.stderr.read(1)
            if not b:
                return
            seen.extend(b)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.time() + 60
    while b"img/s" not in seen and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read().decode()
    proc.wait(timeout=60)
    reader.join(timeout=5)
    assert proc.returncode == 130, out + seen.decode(errors="replace")
    assert "interrupted in epoch 1" in out and f"fastgrad train --resume {ck}" in out
    state = io.load_checkpoint(ck)
    assert state.epoch == 0 and 0 < state.step < 3000 // 32
    assert state.extra["trainer"]["epoch_step"] == state.step
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastgrad",
            "train",
            "--resume",
            str(ck),
            "--epochs",
            "1",
            "--quiet",
            "--threads",
            "1",
            "--save",
            str(ck),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert io.load_checkpoint(ck).epoch == 1 and io.load_checkpoint(ck).step == -(-3000 // 32)


@compiled_only
def test_compare_gd(tmp_path, capsys):
    png = tmp_path / "gd.png"
    code, out, _ = run(
        capsys,
        "compare-gd",
        "--limit",
        "64",
        "--val-limit",
        "100",
        "--epochs",
        "2",
        "--quiet",
        "--threads",
        "1",
        "--plot",
        str(png),
    )
    assert code == 0
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["batch"], ["sgd"], ["minibatch"])
    }
    assert rows["batch"][1:3] == ["0.5", "2"] and rows["sgd"][1:3] == ["0.01", "128"]
    assert rows["minibatch"][1:3] == ["0.05", "4"]
    assert "initial training loss" in out
    assert png.stat().st_size > 10_000 if HAVE_MATPLOTLIB else not png.exists()


@compiled_only
def test_compare_gd_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, out, err = run(
        capsys,
        "compare-gd",
        "--limit",
        "16",
        "--val-limit",
        "20",
        "--epochs",
        "1",
        "--quiet",
        "--threads",
        "1",
        "--plot",
        str(tmp_path / "gd.png"),
    )
    assert code == 0 and "pip install fastgrad[plot]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "gd.png").exists()


@compiled_only
def test_summary(capsys):
    code, out, _ = run(capsys, "summary", "--model", "lenet5")
    assert code == 0
    assert "(N, 6, 28, 28)" in out and "(N, 16, 5, 5)" in out and "(N, 10)" in out
    assert "total parameters: 61,706" in out
    code, out, _ = run(capsys, "summary", "--model", "cifar_small")
    assert code == 0 and "total parameters: 545,098" in out


@compiled_only
def test_train_on_a_folder_of_idx_files(tmp_path, capsys):
    from fastgrad.datasets import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("t10k", 40)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = (rng.integers(0, 60, (n, 28, 28)) + 19 * labels[:, None, None]).astype(np.uint8)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    code, out, _ = run(
        capsys,
        "train",
        "--data",
        str(tmp_path),
        "--epochs",
        "2",
        "--quiet",
        "--threads",
        "1",
        "--batch-size",
        "16",
        "--save",
        str(tmp_path / "ck.safetensors"),
    )
    assert code == 0 and f"MNIST-format files in {tmp_path} (96 training / 40 held-out images)" in out
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "ck.safetensors"))
    assert code == 0 and "40 images of MNIST-format files" in out


@compiled_only
def test_other_models_and_modes_train(capsys):
    for extra in (
        ["--model", "mlp", "--mode", "batch", "--optimizer", "rmsprop"],
        ["--model", "cifar_small", "--limit", "64", "--mode", "sgd", "--optimizer", "adamw"],
    ):
        args = ["train", "--epochs", "1", *QUICK, *extra]
        code, out, _ = run(capsys, *args)
        assert code == 0 and "held-out accuracy" in out


def test_reference_backend_runs(capsys):
    code, out, _ = run(
        capsys,
        "train",
        "--model",
        "mlp",
        "--backend",
        "reference",
        "--limit",
        "16",
        "--val-limit",
        "16",
        "--epochs",
        "1",
        "--quiet",
    )
    assert code == 0 and "reference backend" in out
    assert fastgrad.kernels.backend == "reference"


def test_bench_builtin(capsys, monkeypatch):
    from fastgrad import cli

    monkeypatch.setattr(cli, "builtin_bench", lambda budget=0.3, _real=cli.builtin_bench: _real(budget=0.0))
    code, out, _ = run(capsys, "bench", "--builtin")
    assert code == 0 and "compiled ms" in out and "gradient accumulation" in out


@pytest.mark.parametrize(
    "argv,reason",
    [
        (["train", "--epochs", "0"], "must be >= 1"),
        (["train", "--model", "resnet"], "invalid choice"),
        (["train", "--lr", "-1"], "must be > 0"),
        (["train", "--batch-size", "x"], "expected an integer"),
        (["train", "--mode", "full"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
        ([], "choose a command"),
    ],
)
def test_wrong_arguments_print_usage_and_exit_2(capsys, argv, reason):
    code, out, err = run(capsys, *argv)
    assert code == 2 and "usage:" in err and reason in err


def test_unusable_files_exit_2_with_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(300))
    cases = [
        (["evaluate", str(tmp_path / "absent.safetensors")], "no such file"),
        (["evaluate", str(garbage)], "not a valid safetensors file"),
        (["train", "--resume", str(tmp_path / "absent")], "no such file"),
        (["train", "--data", str(tmp_path / "nowhere")], "not 'bundled' and not a folder"),
        (["train", "--data", str(tmp_path), "--quiet"], "train-images-idx3-ubyte"),
        (["train", "--save", str(tmp_path / "no" / "dir" / "ck")], "does not exist"),
    ]
    for argv, reason in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastgrad", "summary"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "total parameters: 61,706" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "fastgrad", "train", "--epochs", "-3"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "usage:" in proc.stderr


def test_resumed_run_with_more_epochs_replans_the_cosine():
    from fastgrad import optim
    from fastgrad.cli import cosine_over_run

    w = fastgrad.nn.Parameter(np.zeros(3, np.float32))
    opt = optim.SGD([w], lr=0.1)
    first = cosine_over_run(opt, 10)
    for _ in range(10):
        opt.step()
        first.on_batch_end(None, {})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    opt2 = optim.SGD([fastgrad.nn.Parameter(np.zeros(3, np.float32))], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    longer = cosine_over_run(opt2, 20)
    longer.load_state_dict(first.state_dict())
    lrs = [opt2.param_groups[0]["lr"]]
    for _ in range(10):
        opt2.step()
        longer.on_batch_end(None, {})
        lrs.append(opt2.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.05)  # halfway down the 20-update cosine
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
