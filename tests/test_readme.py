"""The README's Python examples run as written (each in a fresh interpreter, in a temporary
folder): a newcomer's first copy-paste must work."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path):
    code = python_blocks()[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def test_first_example_prints_pytorchs_numbers(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", python_blocks()[0]], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["-4.0", "2.4000000953674316", "-18.0", "-6.0"]
