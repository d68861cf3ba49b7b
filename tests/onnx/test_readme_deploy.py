"""The README's Deploy example runs as written (in a fresh interpreter, in a temporary
folder). Its code block is marked ```py, not ```python, so that tests/test_readme.py,
which runs every ```python block whether onnx is installed or not, leaves it to this
test, which skips without onnx and onnxruntime."""

import os
import re
import subprocess
import sys

import pytest

import fastgrad

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def deploy_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.skipif(fastgrad.kernels.backend != "compiled", reason="CIFAR-sized convolutions (compiled kernels only)")
def test_the_deploy_example_runs_and_matches(tmp_path):
    (code,) = deploy_blocks()
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 1e-5
    assert (tmp_path / "cifar_small.onnx").exists()
