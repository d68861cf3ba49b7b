"""Without the onnx package, export says what to install (and the CLI exits 2 with that
line); fastgrad itself imports and trains as before."""

import sys

import pytest

import fastgrad
from fastgrad import nn
from fastgrad.cli import main


@pytest.fixture
def no_onnx(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError


def test_export_names_the_missing_package(no_onnx, tmp_path):
    from fastgrad.onnx import export

    with pytest.raises(ImportError, match=r"pip install 'fastgrad\[onnx\]'"):
        export(nn.Linear(2, 2).eval(), fastgrad.randn(1, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_2_with_one_line(no_onnx, tmp_path, capsys):
    code = main(["export", str(tmp_path / "any.safetensors"), "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "the onnx package is not installed" in err
