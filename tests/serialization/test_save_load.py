"""fastgrad.save / fastgrad.load: tensors, state dicts and optimizer state round-trip
exactly, to paths and file objects, in a safetensors file that holds no pickle."""

import io
import json
import os
from collections import OrderedDict

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn
from fastgrad.io import CheckpointError, read_safetensors


def _net():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def _trained():
    net = _net()
    opt = fastgrad.optim.Adam(net.parameters(), lr=1e-2, betas=(0.8, 0.9))
    x = fastgrad.randn(4, 1, 6, 6)
    for _ in range(2):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    return net, opt, x


def test_checkpoint_dict_round_trips_and_resumes_exactly(tmp_path):
    net, opt, x = _trained()
    path = tmp_path / "ckpt.pt"
    fastgrad.save(
        {
            "epoch": 3,
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "loss": 0.25,
            "note": "run",
            "best": None,
            "hist": [1.0, 2.0],
            "pair": (1, "a"),
        },
        path,
    )
    ckpt = fastgrad.load(path)
    assert (ckpt["epoch"], ckpt["loss"], ckpt["note"], ckpt["best"], ckpt["hist"], ckpt["pair"]) == (
        3,
        0.25,
        "run",
        None,
        [1.0, 2.0],
        (1, "a"),
    )
    assert isinstance(ckpt["model_state_dict"], OrderedDict)
    for key, value in net.state_dict().items():
        got = ckpt["model_state_dict"][key]
        assert type(got) is np.ndarray and got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)
    net2 = _net()
    net2.load_state_dict(ckpt["model_state_dict"])
    opt2 = fastgrad.optim.Adam(net2.parameters(), lr=1e-2, betas=(0.8, 0.9))
    opt2.load_state_dict(ckpt["optimizer_state_dict"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    for n, o in ((net, opt), (net2, opt2)):  # one more step from the same state: the same weights
        o.zero_grad()
        n(x).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_tensors_keep_their_class_dtype_and_sharing():
    t = fastgrad.randn(3, 2, dtype=fastgrad.float64)
    w = nn.Parameter(fastgrad.ones(2))
    labels = fastgrad.tensor([1, 2, 3])
    buf = io.BytesIO()
    fastgrad.save(
        {
            "t": t,
            "w": w,
            "again": t,
            "labels": labels,
            "scalar": np.float32(1.5),
            "raw": b"\x00\xff",
            "ints": {1: "a", 2: "b"},
        },
        buf,
    )
    buf.seek(0)
    obj = fastgrad.load(buf)
    assert type(obj["t"]) is fastgrad.Tensor and obj["t"].dtype == np.float64
    np.testing.assert_array_equal(obj["t"].data, t.data)
    assert obj["again"] is obj["t"]
    assert type(obj["w"]) is nn.Parameter and obj["w"].requires_grad
    assert obj["labels"].dtype == np.int64 and obj["labels"].tolist() == [1, 2, 3]
    assert obj["scalar"] == np.float32(1.5) and type(obj["scalar"]) is np.float32
    assert obj["raw"] == b"\x00\xff" and obj["ints"] == {1: "a", 2: "b"}
    single = io.BytesIO()
    fastgrad.save(t, single)
    single.seek(0)
    np.testing.assert_array_equal(fastgrad.load(single).data, t.data)


def test_the_file_is_safetensors_with_a_json_description_and_no_pickle(tmp_path):
    net, _, _ = _trained()
    path = tmp_path / "w.pt"
    fastgrad.save(net.state_dict(), path)
    arrays, metadata = read_safetensors(path)  # the strict reader of fastgrad.io
    assert set(arrays) == set(net.state_dict())
    doc = json.loads(metadata["fastgrad.save"])
    assert doc["format"] == "fastgrad.save" and doc["version"] == 1
    raw = path.read_bytes()
    assert b"\x80\x02" not in raw[:16] and b"cbuiltins" not in raw and not raw.startswith(b"PK")


def test_plain_safetensors_files_load_as_dicts_of_tensors(tmp_path):
    from fastgrad.io import write_safetensors

    write_safetensors(tmp_path / "x.safetensors", {"a": np.arange(3, dtype=np.float32)})
    obj = fastgrad.load(tmp_path / "x.safetensors")
    assert list(obj) == ["a"] and obj["a"].tolist() == [0.0, 1.0, 2.0]


def test_what_cannot_be_saved_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="Sequential.*state_dict"):
        fastgrad.save(_net(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"'opts.fn'"):
        fastgrad.save({"opts": {"fn": print}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="dtype object"):
        fastgrad.save({"a": np.array([None])}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="never pickles"):
        fastgrad.save({}, tmp_path / "x.pt", pickle_protocol=4)
    assert not os.path.exists(tmp_path / "x.pt") and not os.path.exists(tmp_path / "model.pt")


def test_damaged_files_are_clear_errors(tmp_path):
    path = tmp_path / "w.pt"
    fastgrad.save({"w": fastgrad.ones(1000)}, path)
    raw = path.read_bytes()
    for cut in (5, 40, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.pt").write_bytes(raw[:cut])
        with pytest.raises(CheckpointError):
            fastgrad.load(tmp_path / "cut.pt")
    header_len = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + header_len].replace(b'version\\": 1', b'version\\": 9')  # inside the JSON string
    assert header != raw[8 : 8 + header_len]
    (tmp_path / "v9.pt").write_bytes(raw[:8] + header + raw[8 + header_len :])
    with pytest.raises(CheckpointError, match="version"):
        fastgrad.load(tmp_path / "v9.pt")
    with pytest.raises(TypeError):
        fastgrad.load(12)
