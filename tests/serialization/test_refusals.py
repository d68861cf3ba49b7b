"""Files that try to run code, lie about sizes, or are damaged: fastgrad.load refuses them
with a clear error, before anything named in the file is called and without allocating
what the file claims."""

import io
import os
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastgrad
from fastgrad.serialization import CheckpointError, UnsafePickleError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ERRORS = (CheckpointError, UnsafePickleError)


def torch_zip(pkl, records=(), prefix="archive", compress=zipfile.ZIP_STORED):
    """A zip laid out as torch.save lays it out, around the pickle bytes ``pkl``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in dict(records).items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return buf.getvalue()


@pytest.fixture
def no_system(monkeypatch, tmp_path):
    """os.system and friends replaced by a recorder: a refused file must never reach them."""
    calls = []
    for name in ("system", "popen", "execv", "remove"):
        monkeypatch.setattr(os, name, lambda *a, **k: calls.append(a))
    yield calls
    assert calls == []


def _load(raw):
    return fastgrad.load(io.BytesIO(raw))


class _RunsSystem:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_global_os_system_protocol0_is_refused_naming_it(no_system):
    pkl = b"cos\nsystem\n(S'echo owned'\ntR."
    with pytest.raises(UnsafePickleError, match=r"global os\.system"):
        _load(torch_zip(pkl))


# made before any test replaces os.system, so the pickles name the real one
_SYSTEM_PICKLES = {p: pickle.dumps({"state": _RunsSystem()}, protocol=p) for p in (2, 4, 5)}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reduce_of_a_pickled_callable_is_refused(no_system, protocol):
    pkl = _SYSTEM_PICKLES[protocol]
    with pytest.raises(UnsafePickleError, match=r"global (posix|os|nt)\.system"):
        _load(torch_zip(pkl))


def test_stack_global_through_the_memo_is_still_named(no_system):
    # 'os' is memoized, dropped, then fetched back with BINGET before 'system' and STACK_GLOBAL
    pkl = (
        b"\x80\x04"
        + b"\x8c\x02os\x94"
        + b"0"
        + b"h\x00"
        + b"\x8c\x06system\x94"
        + b"\x93"
        + b"\x8c\x0aecho owned\x85R."
    )
    with pytest.raises(UnsafePickleError, match=r"global os\.system"):
        _load(torch_zip(pkl))


def test_stack_global_whose_name_is_computed_is_refused(no_system):
    # the module name is the result of a call, which the scan cannot read: refused unread
    pkl = b"\x80\x04" + b"\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R" + b"\x8c\x06system\x93."
    with pytest.raises(UnsafePickleError, match="cannot be read"):
        _load(torch_zip(pkl))


@pytest.mark.parametrize(
    "pkl, what",
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
        (b"cbuiltins\ngetattr\n(ctorch._utils\n_rebuild_tensor_v2\nS'__globals__'\ntR.", "builtins.getattr"),
        (b"ctorch\nload\n(S'x'\ntR.", "torch.load"),
        (b"ctorch.nn.modules.linear\nLinear\n)R.", "torch.nn.modules.linear.Linear"),
        (b"cnumpy.core.multiarray\n_reconstruct\n.", "numpy.core.multiarray._reconstruct"),
    ],
)
def test_globals_outside_the_allow_list_are_named(no_system, pkl, what):
    with pytest.raises(UnsafePickleError, match="global " + what.replace(".", r"\.")):
        _load(torch_zip(pkl))


@pytest.mark.parametrize(
    "pkl, opcode",
    [
        (b"(S'echo owned'\nios\nsystem\n.", "INST"),
        (b"(cos\nsystem\nS'echo owned'\no.", "GLOBAL"),  # the global is refused before OBJ is reached
        (b"\x80\x02\x82\x01.", "EXT1"),
        (b"P0\n.", "PERSID"),
    ],
)
def test_object_building_opcodes_are_refused(no_system, pkl, opcode):
    with pytest.raises(UnsafePickleError, match=opcode if opcode != "GLOBAL" else "os.system"):
        _load(torch_zip(pkl))


def _tensor_pickle(numel, size, stride, offset=0):
    """A protocol-2 pickle of one torch tensor over storage '0' with the given geometry."""
    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
        + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        + b"\x8a"
        + _long(numel)
        + b"tQ"
        + b"\x8a"
        + _long(offset)
        + b"("
        + b"".join(b"\x8a" + _long(s) for s in size)
        + b"t"
        + b"("
        + b"".join(b"\x8a" + _long(s) for s in stride)
        + b"t"
        + b"\x89ccollections\nOrderedDict\n)RtR."
    )


def _long(n):
    body = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return bytes([len(body)]) + body


def test_the_hand_made_tensor_pickle_is_right():
    raw = torch_zip(_tensor_pickle(4, (2, 2), (2, 1)), {"0": np.arange(4, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(_load(raw).data, [[0, 1], [2, 3]])


@pytest.mark.parametrize(
    "numel, size, stride, offset, match",
    [
        (10**12, (10**12,), (1,), 0, "declares"),  # storage larger than its record
        (4, (1000,), (1,), 0, "reaches element"),  # tensor past its storage
        (4, (2, 2), (2, 1), 3, "reaches element"),  # offset pushes it out
        (1, (10**6, 10**6), (0, 0), 0, "repeating strides"),  # a 4 TB broadcast
        (4, (2**62, 2**62), (1, 1), 0, "reaches element"),
    ],
)
def test_declared_sizes_beyond_the_file_are_refused_without_allocating(numel, size, stride, offset, match):
    data = np.arange(min(numel, 4), dtype="<f4").tobytes()
    raw = torch_zip(_tensor_pickle(numel, size, stride, offset), {"0": data})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match):
            _load(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_lying_lengths_inside_the_pickle_are_refused_without_allocating():
    bomb = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xyz."  # BINBYTES8 of 1 TB, 3 bytes follow
    memo = b"\x80\x02Nr\xff\xff\xff\x7f."  # LONG_BINPUT at index 2**31 - 1
    for pkl in (bomb, memo):
        tracemalloc.start()
        try:
            with pytest.raises(UnsafePickleError, match="malformed"):
                _load(torch_zip(pkl))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20


def test_every_truncation_of_a_real_checkpoint_is_a_clear_error():
    with open(os.path.join(FIXTURES, "net_state_dict.pt"), "rb") as f:
        raw = f.read()
    for cut in list(range(0, len(raw), 61)) + [len(raw) - 1, len(raw) - 22]:
        with pytest.raises(ERRORS):
            _load(raw[:cut])


def test_corrupted_pickle_bytes_give_a_clear_error_or_a_valid_load():
    with open(os.path.join(FIXTURES, "tensors.pt"), "rb") as f:
        z = zipfile.ZipFile(io.BytesIO(f.read()))
    prefix = z.namelist()[0].split("/")[0]
    pkl = z.read(f"{prefix}/data.pkl")
    records = {n.split("/data/")[1]: z.read(n) for n in z.namelist() if "/data/" in n}
    outcomes = set()
    for pos in range(2, len(pkl), 7):
        for value in (0x00, 0x5D, 0x8A, 0xFF):
            bad = pkl[:pos] + bytes([value]) + pkl[pos + 1 :]
            try:
                _load(torch_zip(bad, records, prefix))
                outcomes.add("loaded")
            except ERRORS:
                outcomes.add("refused")
    assert "refused" in outcomes


def test_not_zip_legacy_and_odd_zips():
    with pytest.raises(CheckpointError, match="not a file written by"):
        _load(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="legacy"):
        _load(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="compressed"):
        _load(torch_zip(pickle.dumps({"a": 1}, protocol=2), compress=zipfile.ZIP_DEFLATED))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(CheckpointError, match="data.pkl"):
        _load(buf.getvalue())
    with pytest.raises(CheckpointError, match="no record"):
        _load(torch_zip(_tensor_pickle(4, (4,), (1,))))  # the storage record is missing
    with pytest.raises(UnsafePickleError, match="malformed"):
        _load(torch_zip(b"\x80\x02}q\x00(X\x01"))  # cut in the middle of an opcode


def test_plain_containers_load():
    obj = {"a": [1, 2.5, None, True], "b": ("x", b"\x00\x01"), "c": {3: frozenset({1})}}
    assert _load(torch_zip(pickle.dumps(obj, protocol=2))) == obj
