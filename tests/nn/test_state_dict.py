"""state_dict / load_state_dict: numpy copies under PyTorch's keys, buffers included,
round trips, and the errors for missing, unexpected and wrongly shaped entries."""

from collections import OrderedDict

import numpy as np
import pytest

import fastgrad
import fastgrad.nn as nn


def small_cnn(lib):
    """The same network in fastgrad or torch (construction only: no forward here)."""
    return lib.Sequential(
        OrderedDict(
            [
                (
                    "features",
                    lib.Sequential(lib.Conv2d(1, 4, 3, padding=1), lib.BatchNorm2d(4), lib.ReLU(), lib.MaxPool2d(2)),
                ),
                ("flatten", lib.Flatten()),
                (
                    "head",
                    lib.Sequential(
                        lib.Linear(4 * 4 * 4, 8), lib.BatchNorm1d(8), lib.Dropout(0.25), lib.Linear(8, 3, bias=False)
                    ),
                ),
            ]
        )
    )


EXPECTED_KEYS = [
    "features.0.weight",
    "features.0.bias",
    "features.1.weight",
    "features.1.bias",
    "features.1.running_mean",
    "features.1.running_var",
    "features.1.num_batches_tracked",
    "head.0.weight",
    "head.0.bias",
    "head.1.weight",
    "head.1.bias",
    "head.1.running_mean",
    "head.1.running_var",
    "head.1.num_batches_tracked",
    "head.3.weight",
]


def test_keys_shapes_and_copies():
    model = small_cnn(nn)
    sd = model.state_dict()
    assert list(sd) == EXPECTED_KEYS
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["features.0.weight"].shape == (4, 1, 3, 3) and sd["features.0.weight"].dtype == np.float32
    assert sd["head.1.num_batches_tracked"].shape == () and sd["head.1.num_batches_tracked"].dtype == np.int64
    sd["features.0.weight"][...] = 7  # a copy: the model is untouched
    assert not np.any(model[0][0].weight.data == 7)
    kept = model.state_dict(keep_vars=True)
    assert kept["features.0.weight"] is model.features[0].weight


def test_keys_match_pytorch():
    torch = pytest.importorskip("torch")
    tmodel = small_cnn(torch.nn)
    tsd = tmodel.state_dict()
    sd = small_cnn(nn).state_dict()
    assert list(sd) == list(tsd)
    for key in sd:
        assert sd[key].shape == tuple(tsd[key].shape), key
        assert sd[key].dtype == tsd[key].numpy().dtype, key


def test_round_trip_restores_every_value():
    src, dst = small_cnn(nn), small_cnn(nn)
    src.features[1].running_mean.data[:] = np.arange(4)
    src.features[1].num_batches_tracked.data[...] = 12
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for (k, a), (k2, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert int(dst.features[1].num_batches_tracked.item()) == 12


def test_load_keeps_parameter_objects_and_casts():
    model = small_cnn(nn)
    weight = model.features[0].weight
    sd = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in model.state_dict().items()}
    sd["features.0.weight"] = fastgrad.ones(4, 1, 3, 3, dtype=fastgrad.float64)  # Tensors are accepted
    model.load_state_dict(sd)
    assert model.features[0].weight is weight  # copied in place: optimizers keep their references
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight.data, 1)


def test_strict_errors_name_every_bad_key():
    model = small_cnn(nn)
    sd = model.state_dict()
    del sd["head.0.bias"], sd["features.1.running_var"]
    sd["head.9.weight"] = np.zeros(3)
    sd["features.0.weight"] = np.zeros((4, 1, 5, 5), dtype=np.float32)
    before = model.features[0].bias.data.copy()
    sd["features.0.bias"] = before + 1
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(sd)
    msg = str(info.value)
    assert msg.startswith("Error(s) in loading state_dict for Sequential:")
    assert 'Missing key(s) in state_dict: "features.1.running_var", "head.0.bias".' in msg
    assert 'Unexpected key(s) in state_dict: "head.9.weight".' in msg
    assert (
        "size mismatch for features.0.weight: copying a param with shape (4, 1, 5, 5) from checkpoint, "
        "the shape in current model is (4, 1, 3, 3)."
    ) in msg
    # nothing was copied, not even the good entries
    np.testing.assert_array_equal(model.features[0].bias.data, before)


def test_non_strict_reports_keys_and_loads_the_rest():
    model = small_cnn(nn)
    sd = model.state_dict()
    del sd["head.3.weight"]
    sd["extra.weight"] = np.zeros(2)
    sd["features.0.bias"] = np.full(4, 0.5, dtype=np.float32)
    result = model.load_state_dict(sd, strict=False)
    assert result == (["head.3.weight"], ["extra.weight"])
    assert result.missing_keys == ["head.3.weight"] and result.unexpected_keys == ["extra.weight"]
    assert "missing_keys=['head.3.weight']" in repr(result)
    np.testing.assert_array_equal(model.features[0].bias.data, 0.5)


def test_non_strict_still_raises_on_shape_mismatch():
    model = small_cnn(nn)
    sd = model.state_dict()
    sd["head.0.weight"] = np.zeros((8, 3))
    with pytest.raises(RuntimeError, match=r"size mismatch for head.0.weight"):
        model.load_state_dict(sd, strict=False)


def test_load_rejects_non_mappings_and_non_numbers():
    model = nn.BatchNorm1d(2)
    with pytest.raises(TypeError, match="dict-like"):
        model.load_state_dict([("weight", np.ones(2))])
    sd = model.state_dict()
    sd["weight"] = np.array(["a", "b"])
    with pytest.raises(RuntimeError, match="cannot load weight"):
        model.load_state_dict(sd)


def test_loss_weights_are_buffers_as_in_pytorch():
    loss = nn.CrossEntropyLoss(weight=fastgrad.tensor([1.0, 2.0, 0.5]))
    assert list(loss.state_dict()) == ["weight"]
    assert list(nn.MSELoss().state_dict()) == []
    torch = pytest.importorskip("torch")
    assert list(torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5])).state_dict()) == ["weight"]
