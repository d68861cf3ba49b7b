"""Checkpoints: exact round trips, atomic saves that survive a kill, strict refusal of
truncated, garbage, crafted and mismatched files, and PyTorch interop."""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgrad
from fastgrad import io, models, optim
from fastgrad.io import CheckpointError


def _net(seed=0, **kw):
    fastgrad.manual_seed(seed)
    return models.lenet5(**kw)


def _assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k


def _assert_same_nested(a, b, path="state"):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            _assert_same_nested(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_nested(x, y, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), (path, a, b)


def _stepped_optimizer(model, cls=optim.Adam, steps=3, **kw):
    """An optimizer with real state: a few steps on made-up gradients."""
    opt = cls(model.parameters(), **kw)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = fastgrad.Tensor(rng.standard_normal(p.shape).astype(p.dtype))
        opt.step()
    return opt


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "cls,kw",
    [
        (optim.Adam, {"lr": 1e-3}),
        (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
        (optim.AdamW, {"lr": 1e-3}),
        (optim.RMSprop, {"lr": 1e-3, "momentum": 0.5}),
    ],
)
def test_model_and_optimizer_round_trip_exactly(tmp_path, cls, kw):
    model = _net(0)
    opt = _stepped_optimizer(model, cls, **kw)
    path = tmp_path / "ck.safetensors"
    io.save_checkpoint(path, model, opt, epoch=4, step=321, extra={"note": "hi", "arr": np.arange(3)})
    model2 = _net(1)
    opt2 = cls(model2.parameters(), **kw)
    ck = io.load_checkpoint(path, model2, opt2)
    assert (ck.epoch, ck.step, ck.fastgrad_version) == (4, 321, fastgrad.__version__)
    assert "Conv2d" in ck.model_description and ck.optimizer_class == cls.__name__
    assert ck.extra["note"] == "hi" and ck.extra["arr"].tolist() == [0, 1, 2]
    _assert_same_state(model.state_dict(), model2.state_dict())
    _assert_same_nested(opt.state_dict(), opt2.state_dict())


def test_nested_state_encoding_keeps_types():
    state = {
        "state": {
            0: {"step": np.float32(3.0), "buf": np.arange(6, dtype=np.float64).reshape(2, 3)},
            7: {"flag": True, "n": None},
        },
        "param_groups": [
            {"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 7], "eps": float("nan"), "name": "x", "__odd__": 1}
        ],
        "ints": np.array([1, 2], dtype=np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, dtype=np.float32),
        "b": np.array([True, False]),
    }
    tensors = {}
    encoded = io.encode_state(state, "optim", tensors)
    decoded = io.decode_state(json.loads(json.dumps(encoded)), tensors, "test")
    _assert_same_nested(state, decoded)
    with pytest.raises(CheckpointError, match="cannot store set"):
        io.encode_state({"s": {1, 2}}, "x", {})


def test_weights_only_file_round_trip(tmp_path):
    model = _net(0)
    io.save_weights(tmp_path / "w.safetensors", model)
    model2 = _net(5)
    state = io.load_weights(tmp_path / "w.safetensors", model2)
    _assert_same_state(model.state_dict(), model2.state_dict())
    assert sorted(state) == sorted(model.state_dict())
    io.save_checkpoint(tmp_path / "ck.safetensors", model)  # load_weights also reads checkpoints
    assert sorted(io.load_weights(tmp_path / "ck.safetensors")) == sorted(model.state_dict())


# --------------------------------------------------------------------------- atomic saves


def test_failed_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    first = _net(0)
    io.save_checkpoint(path, first, epoch=1)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        io.save_checkpoint(path, _net(1), epoch=2)
    monkeypatch.undo()
    model = _net(2)
    assert io.load_checkpoint(path, model).epoch == 1
    _assert_same_state(first.state_dict(), model.state_dict())
    assert os.listdir(tmp_path) == ["ck.safetensors"]  # the temporary file was removed


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import fastgrad
    from fastgrad import io, models
    fastgrad.manual_seed(0)
    path = sys.argv[1]
    io.save_checkpoint(path, models.lenet5(), epoch=1)
    fastgrad.manual_seed(1)
    newer = models.lenet5()
    def die(fd):  # the new bytes are written, nothing is renamed yet: the worst moment to die
        os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = die
    io.save_checkpoint(path, newer, epoch=2)
    print("not reached")
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_process_killed_during_save_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "ck.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__))),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    model = _net(7)
    assert io.load_checkpoint(path, model).epoch == 1
    _assert_same_state(_net(0).state_dict(), model.state_dict())
    leftovers = [f for f in os.listdir(tmp_path) if f != "ck.safetensors"]
    assert all(f.startswith(".ck.safetensors.") and f.endswith(".tmp") for f in leftovers)


# --------------------------------------------------------------------------- refusing bad files


@pytest.fixture
def checkpoint(tmp_path):
    model = _net(0)
    path = tmp_path / "ck.safetensors"
    io.save_checkpoint(path, model, _stepped_optimizer(model), epoch=1, step=3)
    return path


def test_truncated_files_are_refused(checkpoint, tmp_path):
    blob = checkpoint.read_bytes()
    header_end = 8 + struct.unpack("<Q", blob[:8])[0]
    for cut in sorted({0, 3, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 5, len(blob) - 1}):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(blob[:cut])
        with pytest.raises(CheckpointError, match=str(bad.name)):
            io.load_checkpoint(bad)


def test_garbage_and_foreign_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    cases = {
        "random": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text": b"this is not a checkpoint at all, just some text in a file\n" * 10,
        "huge_header": struct.pack("<Q", 1 << 60) + b"{}",
        "not_object": struct.pack("<Q", 2) + b"[]",
        "bad_utf8": struct.pack("<Q", 4) + b"\xff\xfe{}",
        "pickle": b"\x80\x04\x95" + bytes(100),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError):
            io.load_checkpoint(path)
    plain = tmp_path / "plain.safetensors"
    io.write_safetensors(plain, {"w": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="not a fastgrad checkpoint"):
        io.load_checkpoint(plain)
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "absent.safetensors")


def _crafted(path, header_text, data):
    raw = header_text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    "header,data,match",
    [
        ('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', bytes(8), "past the end"),
        (
            '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
            bytes(12),
            "overlapping",
        ),
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12), "hole"),
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(12), "cover 8 bytes"),
        ('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8), "needs 12 bytes"),
        ('{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}', bytes(8), "not supported"),
        ('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', bytes(8), "shape"),
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', bytes(8), "data_offsets"),
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}', bytes(8), "exactly"),
        (
            '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            bytes(8),
            "duplicate names",
        ),
        ('{"__metadata__":{"x":1}}', b"", "strings"),
        ("[" * 100000 + "]" * 100000, b"", "not valid JSON"),
    ],
)
def test_crafted_headers_are_refused(tmp_path, header, data, match):
    with pytest.raises(CheckpointError, match=match):
        io.read_safetensors(_crafted(tmp_path / "x.safetensors", header, data))


def test_crafted_metadata_is_refused(tmp_path, checkpoint):
    tensors, metadata = io.read_safetensors(checkpoint)
    meta = json.loads(metadata["fastgrad"])

    def variant(**changes):
        m = dict(meta, **changes)
        p = tmp_path / "v.safetensors"
        io.write_safetensors(p, tensors, {"fastgrad": json.dumps(m)})
        return p

    with pytest.raises(CheckpointError, match="format version"):
        io.load_checkpoint(variant(format_version=99))
    with pytest.raises(CheckpointError, match="bad epoch"):
        io.load_checkpoint(variant(epoch=-1))
    with pytest.raises(CheckpointError, match="lacks"):
        io.load_checkpoint(variant(model_keys=meta["model_keys"] + ["ghost.weight"]))
    with pytest.raises(CheckpointError, match="not listed"):
        io.load_checkpoint(variant(model_keys=meta["model_keys"][1:]))
    deep = tmp_path / "deep.safetensors"
    io.write_safetensors(deep, tensors, {"fastgrad": "[" * 100000 + "]" * 100000})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        io.load_checkpoint(deep)
    with pytest.raises(CheckpointError, match="bad numpy scalar"):
        io.load_checkpoint(variant(extra={"x": {"__np__": "object", "value": "os.system"}}))
    dup = tmp_path / "dup.safetensors"
    io.write_safetensors(dup, tensors, {"fastgrad": metadata["fastgrad"][:-1] + ', "epoch": 5}'})
    with pytest.raises(CheckpointError, match="duplicate"):
        io.load_checkpoint(dup)


def test_mismatched_model_or_optimizer_is_refused_and_left_untouched(checkpoint):
    for other in (models.mlp(), _net(0, num_classes=5), _net(0).double()):
        before = other.state_dict()
        with pytest.raises(CheckpointError, match="do not match"):
            io.load_checkpoint(checkpoint, other)
        _assert_same_state(before, other.state_dict())
    model = _net(3)
    before = model.state_dict()
    with pytest.raises(CheckpointError, match="Adam state, not SGD"):
        io.load_checkpoint(checkpoint, model, optim.SGD(model.parameters(), lr=0.1))
    _assert_same_state(before, model.state_dict())  # checked before anything was loaded
    small = models.mlp(hidden=(4,))
    with pytest.raises(CheckpointError):
        io.load_checkpoint(checkpoint, optimizer=optim.Adam(small.parameters()))


# --------------------------------------------------------------------------- PyTorch interop


def _torch_lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def test_checkpoint_weights_load_into_pytorch(checkpoint):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    state = {k[len("model.") :]: v for k, v in load_file(str(checkpoint)).items() if k.startswith("model.")}
    net = _torch_lenet(torch)
    net.load_state_dict(state)  # strict: every key and shape matches
    ours = io.load_checkpoint(checkpoint).model_state
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ours[k])
    model = _net(9)
    io.load_checkpoint(checkpoint, model)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    with fastgrad.no_grad():
        got = model(fastgrad.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)  # the same network, the same outputs


def test_pytorch_weights_load_into_fastgrad(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = _torch_lenet(torch)
    save_file(net.state_dict(), str(tmp_path / "torch.safetensors"))
    model = _net(0)
    io.load_weights(tmp_path / "torch.safetensors", model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, net.state_dict()[k].numpy())
    save_file({"0.weight": torch.zeros(6, 1, 3, 3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match="shape"):
        io.load_weights(tmp_path / "wrong.safetensors", model)
