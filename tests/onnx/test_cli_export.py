"""`fastgrad export CHECKPOINT --onnx FILE` on a checkpoint of a short `fastgrad train --save`
run: onnxruntime's logits for held-out images equal those of the checkpoint's model."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastgrad
from fastgrad import io, models
from fastgrad.cli import main
from fastgrad.datasets import load_mnist

compiled_only = pytest.mark.skipif(
    fastgrad.kernels.backend != "compiled", reason="trains on 128 images (compiled kernels only)"
)
QUICK = ["--limit", "128", "--val-limit", "64", "--batch-size", "32", "--epochs", "1", "--quiet", "--threads", "1"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@compiled_only
@pytest.mark.parametrize("model", ["lenet5", "cifar_small", "mlp"])
def test_export_a_trained_checkpoint(tmp_path, capsys, model):
    ck, path = tmp_path / "run.safetensors", tmp_path / "model.onnx"
    code, out, err = run(capsys, "train", "--model", model, *QUICK, "--save", str(ck))
    assert code == 0, out + err
    code, out, err = run(capsys, "export", str(ck), "--onnx", str(path))
    assert code == 0, out + err
    assert f"{model} after 1 epochs" in out
    assert f"wrote {path}: input 'input' (batch, 1, 28, 28) float32, output 'logits' (batch, 10); opset 17" in out
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)

    net = models.build(model, in_channels=1, image_size=28)
    io.load_weights(ck, net)
    net.eval()
    _, (images, _) = load_mnist()
    images = images[:7]
    with fastgrad.no_grad():
        want = net(fastgrad.tensor(images)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": images})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # the trained weights, not freshly initialized ones, are what was exported
    fresh = models.build(model, in_channels=1, image_size=28).eval()
    with fastgrad.no_grad():
        assert not np.allclose(fresh(fastgrad.tensor(images)).numpy(), got, atol=1e-3)


def test_export_errors_exit_2_with_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "export", str(tmp_path / "missing.safetensors"), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "no such file" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "export", str(bad), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and err.count("\n") == 1
    weights = tmp_path / "weights.safetensors"
    io.save_checkpoint(weights, models.lenet5())  # no record of the model's name
    code, _, err = run(capsys, "export", str(weights), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "pass --model" in err
    code, _, err = run(capsys, "export", str(weights), "--onnx", str(tmp_path / "no" / "m.onnx"), "--model", "lenet5")
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "export", str(weights))
    assert code == 2 and "--onnx" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "weights.safetensors"]


def test_export_with_model_given(tmp_path, capsys):
    ck, path = tmp_path / "weights.safetensors", tmp_path / "m.onnx"
    io.save_checkpoint(ck, models.lenet5())
    code, out, err = run(capsys, "export", str(ck), "--onnx", str(path), "--model", "lenet5", "--opset", "13")
    assert code == 0, err
    assert "opset 13" in out and onnx.load(str(path)).opset_import[0].version == 13
