"""`mpiexec -n 2 fastgrad train --distributed`: one report, a trained model, one checkpoint."""

import importlib.util
import re
import sys


def test_train_distributed_prints_once_and_reaches_95_percent(mpirun, tmp_path):
    save = importlib.util.find_spec("safetensors") is not None
    args = ["-m", "fastgrad", "train", "--distributed", "--epochs", "2", "--threads", "1", "--quiet"]
    if save:
        args += ["--save", str(tmp_path / "run.safetensors")]
    proc = mpirun("cli", args=args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("fastgrad train: ") == 1 and out.count("held-out accuracy") == 1, out
    assert "batch 64 = 2 processes x 32" in out
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)%", out).group(1))
    assert accuracy >= 95.0, out
    if save:
        assert (tmp_path / "run.safetensors").exists()
        # the checkpoint holds the plain model (no "module." prefix): `fastgrad evaluate` reads it
        import subprocess

        done = subprocess.run(
            [sys.executable, "-m", "fastgrad", "evaluate", str(tmp_path / "run.safetensors")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"held-out accuracy: {accuracy:.2f}%" in done.stdout


def test_train_distributed_refuses_a_batch_it_cannot_split(mpirun):
    proc = mpirun(
        "cli",
        args=["-m", "fastgrad", "train", "--distributed", "--batch-size", "63", "--epochs", "1", "--quiet"],
        timeout=300,
    )
    assert proc.returncode == 2
    assert "divisible by the 2 processes" in proc.stderr
