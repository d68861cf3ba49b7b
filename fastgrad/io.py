"""Checkpoints and weight files in the safetensors format, written atomically and read
without executing anything from the file.

A checkpoint is one ``.safetensors`` file:

* tensors ``model.<key>``: the model's ``state_dict()`` (PyTorch key names), so the
  weights load into the matching PyTorch module with
  ``{k[6:]: v for k, v in safetensors.torch.load_file(path).items() if k.startswith("model.")}``;
* tensors ``optim.<...>``: every array of the optimizer's ``state_dict()`` (PyTorch's
  layout: ``state`` per parameter index, ``param_groups``), and ``extra.<...>`` for arrays
  a caller stores beside them;
* the safetensors metadata (a str -> str map) holds one entry, ``"fastgrad"``: a JSON
  document with the format name and version, the fastgrad version, ``epoch``, ``step``,
  the model's description, the optimizer's class and the structure of its state dict
  (hyperparameters inline, arrays as ``{"__tensor__": name}``), and ``extra``.

``save_weights`` writes a model's state dict alone under its plain keys: that file is
what ``safetensors.torch.load_file`` + ``load_state_dict`` take directly, and
``load_weights`` reads files written that way by PyTorch.

Writes are atomic: the bytes go to a temporary file in the target's folder, which is
flushed and fsync'ed, renamed over the target with ``os.replace``, and the folder is
fsync'ed, so a crash leaves either the old file or the new one, never a mix.

Reading parses the header with a strict reader of its own (no pickle, no eval): the
header length, JSON syntax, duplicate names, dtypes, shapes, offsets inside the file,
overlaps and holes are all checked, and loading into a model or optimizer checks every
name, shape and dtype before changing anything. Every problem raises CheckpointError
with the file name and the reason.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

if TYPE_CHECKING:
    from .nn import Module
    from .optim import Optimizer

FORMAT = "fastgrad.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "fastgrad"
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype names <-> numpy (little-endian on disk)
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint or weight file that is unreadable, damaged, or does not match."""


# --------------------------------------------------------------------------- atomic writes


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` (bytes) to ``path`` so that a crash at any moment leaves either the
    previous file or the complete new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _mode_for(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o777  # keep the permissions of the file replaced
    except OSError:
        return 0o644


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- safetensors files


def write_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a dict name -> array as a safetensors file, atomically.
    ``metadata`` is an optional str -> str dict."""
    from safetensors.numpy import save

    arrays = {}
    for name, value in tensors.items():
        arr = _as_array(value)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d arrays into 1-d)
            arr = arr.copy(order="C")
        if arr.dtype.newbyteorder("<") not in _NAMES and arr.dtype not in _NAMES:
            raise CheckpointError(f"cannot store tensor {name!r} of dtype {arr.dtype} in safetensors")
        arrays[name] = arr
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"safetensors metadata must map str to str; bad entries: {bad}")
    atomic_write(path, save(arrays, metadata=metadata))


def read_safetensors(
    path: str | os.PathLike[str], max_header_bytes: int = MAX_HEADER_BYTES
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a safetensors file, every byte of the header checked.

    ``tensors`` maps names to fresh numpy arrays; ``metadata`` is the str -> str map
    (empty when the file has none). Raises CheckpointError for anything malformed and
    FileNotFoundError when ``path`` does not exist."""
    path = os.fspath(path)

    def fail(reason: str) -> NoReturn:
        raise CheckpointError(f"{path}: not a valid safetensors file: {reason}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            fail(f"{size} bytes, too short for the 8-byte header length")
        header_len = int.from_bytes(f.read(8), "little")
        if header_len < 2 or header_len > max_header_bytes:
            fail(f"header length {header_len} is out of range (2 to {max_header_bytes})")
        if 8 + header_len > size:
            fail(f"header claims {header_len} bytes but the file has only {size - 8} after the length (truncated?)")
        raw_header = f.read(header_len)
        try:
            header = json.loads(raw_header.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            header = exc
        if isinstance(header, Exception):
            fail(f"the header is not valid JSON ({header})")
        if not isinstance(header, dict):
            fail("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
            fail("__metadata__ must map strings to strings")
        data_size = size - 8 - header_len
        tensors = _check_entries(header, data_size, fail)
        data = memoryview(f.read(data_size))  # only now, with every offset known to be inside the file
    if len(data) != data_size:
        fail(f"the file changed while it was read ({len(data)} of {data_size} data bytes)")
    out = {}
    for name, (dtype, shape, begin) in tensors.items():
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    return out, dict(metadata)


def _check_entries(
    header: dict[str, Any], data_size: int, fail: Callable[[str], NoReturn]
) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """Validate every tensor entry of a header; returns name -> (dtype, shape, begin)."""
    spans, tensors = [], {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor {name!r}: expected exactly dtype, shape and data_offsets")
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype_name not in _DTYPES:
            fail(
                f"tensor {name!r}: dtype {dtype_name!r} is not supported (numpy has no "
                f"{dtype_name}; supported: {', '.join(_DTYPES)})"
            )
        if not isinstance(shape, list) or len(shape) > 32 or any(type(s) is not int or s < 0 for s in shape):
            fail(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or any(type(o) is not int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            fail(f"tensor {name!r}: data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
        if offsets[1] > data_size:
            fail(
                f"tensor {name!r}: data_offsets {offsets} point past the end of the data "
                f"({data_size} bytes; truncated file?)"
            )
        dtype = np.dtype(_DTYPES[dtype_name])
        count = 1
        for s in shape:
            count *= s
        if count * dtype.itemsize != offsets[1] - offsets[0]:
            fail(
                f"tensor {name!r}: shape {shape} of {dtype_name} needs {count * dtype.itemsize} bytes, "
                f"data_offsets give {offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], name))
        tensors[name] = (dtype, tuple(shape), offsets[0])
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            fail(
                f"tensor {name!r} starts at byte {begin} of the data, expected {position} "
                "(overlapping tensors or a hole)"
            )
        position = end
    if position != data_size:
        fail(f"the tensors cover {position} bytes of data but the file holds {data_size}")
    return tensors


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate names {dup}")
    return dict(pairs)


def _as_array(value: Any) -> np.ndarray:
    data = getattr(value, "data", value)  # a Tensor or Parameter holds its array in .data
    if not isinstance(data, np.ndarray):
        data = np.asarray(data)
    return data


# --------------------------------------------------------------------------- nested state <-> JSON + tensors
# Arrays become tensors named after their path; the rest becomes JSON with a few tagged
# forms that keep Python types exact: {"__tensor__": name}, {"__tuple__": [...]},
# {"__np__": dtype, "value": v} for numpy scalars, {"__items__": [[k, v], ...]} for dicts
# whose keys are not plain strings (optimizer state is keyed by parameter index).

_TAGS = ("__tensor__", "__tuple__", "__np__", "__items__")


def encode_state(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON-able data; its arrays are added to ``tensors`` under ``prefix.<path>``."""

    def enc(value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return {"__np__": value.dtype.name, "value": value.item()}
        if isinstance(value, np.ndarray) or hasattr(value, "data") and isinstance(value.data, np.ndarray):
            name = path
            n = 1
            while name in tensors:
                n += 1
                name = f"{path}#{n}"
            tensors[name] = _as_array(value)
            return {"__tensor__": name}
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: enc(v, f"{path}.{k}") for k, v in value.items()}
            return {"__items__": [[enc(k, path), enc(v, f"{path}.{k}")] for k, v in value.items()]}
        raise CheckpointError(
            f"cannot store {type(value).__name__} at {path!r} in a checkpoint "
            "(arrays, numbers, strings, None, lists, tuples and dicts only)"
        )

    return enc(obj, prefix)


def decode_state(obj: Any, tensors: Mapping[str, np.ndarray], where: str) -> Any:
    """Inverse of ``encode_state``; ``where`` names the file in errors."""

    def dec(value: Any) -> Any:
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = next((t for t in _TAGS if t in value), None)
        if tag is None:
            return {k: dec(v) for k, v in value.items()}
        if tag == "__tensor__":
            name = value["__tensor__"]
            if not isinstance(name, str) or name not in tensors:
                raise CheckpointError(f"{where}: the metadata refers to tensor {name!r}, which the file lacks")
            return tensors[name]
        if tag == "__tuple__":
            return tuple(dec(v) for v in _expect(value["__tuple__"], list, where))
        if tag == "__np__":
            try:
                dtype = np.dtype(value["__np__"])
                if dtype.kind not in "biuf":
                    raise TypeError(dtype)
                return dtype.type(value["value"])
            except (TypeError, ValueError, KeyError, OverflowError):
                raise CheckpointError(f"{where}: bad numpy scalar {value!r:.80} in the metadata") from None
        items = _expect(value["__items__"], list, where)
        out = {}
        for item in items:
            if not isinstance(item, list) or len(item) != 2:
                raise CheckpointError(f"{where}: bad dict item {item!r} in the metadata")
            key = dec(item[0])
            if not isinstance(key, (str, int, float, bool, tuple)) or key in out:
                raise CheckpointError(f"{where}: bad or duplicate key {key!r} in the metadata")
            out[key] = dec(item[1])
        return out

    return dec(obj)


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise CheckpointError(f"{where}: malformed metadata (expected a {kind.__name__}, got {value!r:.60})")
    return value


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` read. ``model_state`` maps state-dict keys to arrays;
    ``optimizer_state`` is the optimizer's state dict (or None); ``extra`` is what the
    saver stored beside them."""

    path: str
    epoch: int
    step: int
    fastgrad_version: str
    model_description: str
    model_state: dict
    optimizer_class: str = None
    optimizer_state: dict = None
    extra: dict = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save ``model``'s weights, ``optimizer``'s state, the position (``epoch``: epochs
    completed, ``step``: updates made) and ``extra`` (JSON-able values and arrays) to
    ``path``, atomically."""
    from . import __version__

    for label, value in (("epoch", epoch), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"save_checkpoint: {label} must be a non-negative integer, got {value!r}")
    tensors = {}
    for key, value in model.state_dict().items():
        tensors["model." + key] = _as_array(value)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastgrad_version": __version__,
        "epoch": int(epoch),
        "step": int(step),
        "model": _describe(model),
        "model_keys": list(model.state_dict().keys()),
        "optimizer": None,
        "extra": None,
    }
    if optimizer is not None:
        header["optimizer"] = {
            "class": type(optimizer).__name__,
            "state_dict": encode_state(optimizer.state_dict(), "optim", tensors),
        }
    if extra is not None:
        header["extra"] = encode_state(dict(extra), "extra", tensors)
    write_safetensors(path, tensors, {METADATA_KEY: json.dumps(header)})


def _describe(model: Module) -> str:
    try:
        return repr(model)
    except Exception:  # a description is informative only; never fail a save for it
        return type(model).__name__


def load_checkpoint(
    path: str | os.PathLike[str], model: Module | None = None, optimizer: Optimizer | None = None
) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; with ``model`` and/or
    ``optimizer``, load their states into them after checking that every name, shape
    and dtype matches (nothing is changed when something does not). Returns a Checkpoint."""
    path = os.fspath(path)
    tensors, metadata = read_safetensors(path)
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a fastgrad checkpoint (no "
            f"{METADATA_KEY!r} metadata); for plain weights use load_weights"
        )
    try:
        header = json.loads(metadata[METADATA_KEY], object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the checkpoint metadata is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: the metadata does not describe a {FORMAT} file")
    version = header.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this fastgrad reads "
            f"versions 1 to {FORMAT_VERSION} (upgrade fastgrad?)"
        )
    for key in ("epoch", "step"):
        if type(header.get(key)) is not int or header[key] < 0:
            raise CheckpointError(f"{path}: bad {key} {header.get(key)!r} in the metadata")
    keys = header.get("model_keys")
    if not isinstance(keys, list) or any(not isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise CheckpointError(f"{path}: bad model_keys in the metadata")
    model_state = {}
    for key in keys:
        if "model." + key not in tensors:
            raise CheckpointError(f"{path}: the metadata lists model weight {key!r}, which the file lacks")
        model_state[key] = tensors["model." + key]
    stray = [n for n in tensors if n.startswith("model.") and n[6:] not in model_state]
    if stray:
        raise CheckpointError(f"{path}: tensors {stray[:5]} are not listed in the metadata")
    ckpt = Checkpoint(
        path=path,
        epoch=header["epoch"],
        step=header["step"],
        fastgrad_version=str(header.get("fastgrad_version")),
        model_description=str(header.get("model")),
        model_state=model_state,
    )
    opt = header.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or not isinstance(opt.get("class"), str) or "state_dict" not in opt:
            raise CheckpointError(f"{path}: malformed optimizer entry in the metadata")
        ckpt.optimizer_class = opt["class"]
        ckpt.optimizer_state = decode_state(opt["state_dict"], tensors, path)
    if header.get("extra") is not None:
        ckpt.extra = decode_state(header["extra"], tensors, path)
        if not isinstance(ckpt.extra, dict):
            raise CheckpointError(f"{path}: malformed extra entry in the metadata")
    if model is not None:
        check_state_matches(model, model_state, path)
    if optimizer is not None:
        check_optimizer_matches(optimizer, ckpt, path)
    if model is not None:
        model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
    return ckpt


def check_state_matches(model: Module, state: Mapping[str, Any], where: str) -> None:
    """Raise CheckpointError unless ``state`` has exactly ``model``'s keys, shapes and dtypes."""
    expected = {k: _as_array(v) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    for k, want in expected.items():
        if k in state:
            got = state[k]
            if got.shape != want.shape:
                problems.append(f"{k}: shape {tuple(got.shape)} in the file, {tuple(want.shape)} in the model")
            elif got.dtype != want.dtype:
                problems.append(f"{k}: dtype {got.dtype} in the file, {want.dtype} in the model")
    if problems:
        raise CheckpointError(
            f"{where}: the weights do not match the model ({type(model).__name__}): "
            + "; ".join(problems[:8])
            + (" ..." if len(problems) > 8 else "")
        )


def check_optimizer_matches(optimizer: Optimizer, ckpt: Checkpoint, where: str) -> None:
    """Raise CheckpointError unless the saved optimizer state fits ``optimizer``."""
    state = ckpt.optimizer_state
    if state is None:
        raise CheckpointError(f"{where}: the checkpoint holds no optimizer state")
    if ckpt.optimizer_class != type(optimizer).__name__:
        raise CheckpointError(
            f"{where}: the checkpoint holds {ckpt.optimizer_class} state, not {type(optimizer).__name__}"
        )
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("state"), dict)
        or not isinstance(state.get("param_groups"), list)
    ):
        raise CheckpointError(f"{where}: malformed optimizer state (expected state and param_groups)")
    groups = optimizer.param_groups
    saved = state["param_groups"]
    if len(saved) != len(groups):
        raise CheckpointError(f"{where}: {len(saved)} parameter groups saved, the optimizer has {len(groups)}")
    params = []
    for i, (g_saved, g) in enumerate(zip(saved, groups)):
        if not isinstance(g_saved, dict) or not isinstance(g_saved.get("params"), list):
            raise CheckpointError(f"{where}: malformed parameter group {i}")
        if len(g_saved["params"]) != len(g["params"]):
            raise CheckpointError(
                f"{where}: parameter group {i} has {len(g_saved['params'])} parameters "
                f"saved, {len(g['params'])} in the optimizer"
            )
        params.extend(zip(g_saved["params"], g["params"]))
    by_index = dict(params)
    if len(by_index) != len(params):
        raise CheckpointError(f"{where}: parameter indices repeat in the saved param_groups")
    for index, entry in state["state"].items():
        if index not in by_index or not isinstance(entry, dict):
            raise CheckpointError(f"{where}: optimizer state for unknown parameter {index!r}")
        want = _as_array(by_index[index])
        for name, value in entry.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                if value.shape != want.shape:
                    raise CheckpointError(
                        f"{where}: optimizer state {name!r} of parameter {index} has shape "
                        f"{value.shape}, the parameter {want.shape}"
                    )
                if value.dtype.kind == "f" and value.dtype != want.dtype:
                    raise CheckpointError(
                        f"{where}: optimizer state {name!r} of parameter {index} has dtype "
                        f"{value.dtype}, the parameter {want.dtype}"
                    )


# --------------------------------------------------------------------------- plain weight files


def save_weights(path: str | os.PathLike[str], model: Module | Mapping[str, Any]) -> None:
    """Write ``model``'s state dict (or a dict name -> array) under its plain keys,
    atomically: ``safetensors.torch.load_file(path)`` gives a state dict PyTorch's
    ``load_state_dict`` takes as it is."""
    state = model if isinstance(model, dict) else model.state_dict()
    write_safetensors(path, {k: _as_array(v) for k, v in state.items()})


def load_weights(path: str | os.PathLike[str], model: Module | None = None) -> dict[str, np.ndarray]:
    """The weights in ``path`` as a dict key -> array: a file from ``save_weights``, from
    PyTorch's ``safetensors.torch.save_file(module.state_dict(), path)``, or the model part
    of a checkpoint. With ``model``, they are checked against it and loaded into it."""
    path = os.fspath(path)
    tensors, metadata = read_safetensors(path)
    if METADATA_KEY in metadata:
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    else:
        state = tensors
    if model is not None:
        check_state_matches(model, state, path)
        model.load_state_dict(state)
    return state
