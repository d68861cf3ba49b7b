"""Reading ``torch.save`` checkpoints (the zip format of PyTorch 1.6 and later) without
PyTorch and without running anything from the file, as ``torch.load(weights_only=True)``.

The zip holds ``<name>/data.pkl``, a pickle of the saved object in which every tensor is a
call to ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every
storage a persistent id ``("storage", torch.FloatStorage, key, location, numel)`` whose
bytes are the record ``<name>/data/<key>``; ``<name>/byteorder`` says ``little`` or ``big``.

Checks, in order, before anything is built: the zip's directory (stored entries only, no
duplicates, every entry inside the file), the pickle (``restricted.scan``: only the globals
of ``STAND_INS``), then while loading: each storage's declared size against its record's
real size, and each tensor's offset, sizes and strides against its storage, so a file that
lies about sizes is refused before any array is made. Tensors come back as fastgrad Tensors
(``nn.Parameter`` for parameters) on the CPU; half and bfloat16 storages become float32.
"""

import collections
import io
import numbers
import zipfile

import numpy as np

from .._device import device
from ..io import CheckpointError
from . import restricted
from .numpy_pickle import latin1_bytes

MAX_DIMS = 64
# An expanded tensor (stride 0) is rebuilt as a copy: at most this many bytes, or its
# storage's size when that is larger.
MAX_EXPANDED_BYTES = 1 << 26


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and its kin: which dtype a storage holds."""

    __slots__ = ("name", "dtype", "bfloat16")

    def __init__(self, name, dtype, bfloat16=False):
        self.name, self.dtype, self.bfloat16 = name, np.dtype(dtype), bfloat16

    def __setstate__(self, state):
        raise restricted.UnsafePickleError(f"refused: state set on {self.name}")


_STORAGES = {
    name: _StorageType(name, dtype, name == "BFloat16Storage")
    for name, dtype in {
        "DoubleStorage": np.float64,
        "FloatStorage": np.float32,
        "HalfStorage": np.float16,
        "BFloat16Storage": np.uint16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
    }.items()
}


class _Storage:
    """A storage read from its record: a flat numpy array in native byte order."""

    __slots__ = ("array", "type")

    def __init__(self, array, storage_type):
        self.array, self.type = array, storage_type

    def __setstate__(self, state):
        raise restricted.UnsafePickleError("refused: state set on a storage")


def _int(value, what, where, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise CheckpointError(f"{where}: {what} must be an integer >= {minimum}, got {value!r:.60}")
    return int(value)


def _int_tuple(value, what, where, minimum=0):
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise CheckpointError(f"{where}: {what} must be a tuple of at most {MAX_DIMS} integers, got {value!r:.80}")
    return tuple(_int(v, what, where, minimum) for v in value)


def _materialize(storage, offset, size, stride, where):
    """The tensor ``size``/``stride`` describes at ``offset`` in ``storage``, as a fresh
    C-contiguous array, after checking that every element lies inside the storage."""
    flat = storage.array
    if len(stride) != len(size):
        raise CheckpointError(f"{where}: a tensor has size {size} but stride {stride}")
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        out = np.empty(size, dtype=flat.dtype)
    else:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= flat.size:
            raise CheckpointError(
                f"{where}: a tensor of size {size}, stride {stride} at offset {offset} reaches "
                f"element {last} of a storage of {flat.size} elements"
            )
        if numel * flat.itemsize > max(flat.nbytes, MAX_EXPANDED_BYTES):
            raise CheckpointError(
                f"{where}: a tensor of size {size} views a storage of {flat.size} elements "
                f"with repeating strides {stride}; copying it would take "
                f"{numel * flat.itemsize:,} bytes"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[st * flat.itemsize for st in stride], writeable=False
        )
        out = np.array(view, order="C", copy=True)
    if storage.type.bfloat16:  # bfloat16 is the top half of a float32
        out = (out.astype(np.uint32) << 16).view(np.float32)
    elif out.dtype == np.float16:
        out = out.astype(np.float32)
    return out


class _Reader:
    """One checkpoint: its zip, record prefix and byte order, and the storages read so far."""

    def __init__(self, raw, where):
        self.where = where
        self.size = len(raw)
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(raw))
            infos = self.zip.infolist()
        except Exception as exc:  # BadZipFile, LargeZipFile, struct errors from a damaged directory
            raise CheckpointError(f"{where}: not a readable zip archive: {exc}") from None
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError(f"{where}: the zip archive lists a name twice")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{where}: zip entry {info.filename} is compressed; torch.save writes stored entries only"
                )
            if info.file_size != info.compress_size or info.header_offset + info.file_size > self.size:
                raise CheckpointError(
                    f"{where}: zip entry {info.filename} claims {info.file_size:,} bytes at "
                    f"offset {info.header_offset:,}, past the end of the {self.size:,}-byte file"
                )
        self.infos = {i.filename: i for i in infos}
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{where}: not a torch.save checkpoint (expected one <name>/data.pkl record, found {len(pickles)})"
            )
        self.prefix = pickles[0][: -len("data.pkl")]
        order = (
            self.read(self.prefix + "byteorder").decode("ascii", "replace")
            if self.prefix + "byteorder" in self.infos
            else "little"
        )
        if order not in ("little", "big"):
            raise CheckpointError(f"{where}: byteorder record says {order!r:.20}, expected 'little' or 'big'")
        self.endian = "<" if order == "little" else ">"
        self.storages = {}

    def read(self, name):
        try:
            return self.zip.read(name)
        except Exception as exc:  # bad CRC, truncated local header
            raise CheckpointError(f"{self.where}: cannot read zip entry {name}: {exc}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.where}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(location, str):
            raise CheckpointError(f"{self.where}: malformed storage reference {pid!r:.80}")
        numel = _int(numel, "a storage's element count", self.where)
        if key in self.storages:
            return self.storages[key]
        record = f"{self.prefix}data/{key}"
        info = self.infos.get(record)
        if info is None:
            raise CheckpointError(f"{self.where}: storage {key} has no record {record} in the archive")
        nbytes = numel * storage_type.dtype.itemsize
        if info.file_size != nbytes:
            raise CheckpointError(
                f"{self.where}: storage {key} declares {numel:,} elements of "
                f"{storage_type.name} ({nbytes:,} bytes) but its record holds {info.file_size:,}"
            )
        dtype = storage_type.dtype.newbyteorder(self.endian) if storage_type.dtype.itemsize > 1 else storage_type.dtype
        flat = np.frombuffer(self.read(record), dtype=dtype).astype(storage_type.dtype, copy=False)
        storage = self.storages[key] = _Storage(flat, storage_type)
        return storage

    def stand_ins(self):
        where = self.where

        def rebuild_tensor_v2(
            storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
        ):
            from ..tensor import Tensor

            if not isinstance(storage, _Storage):
                raise CheckpointError(f"{where}: a tensor is rebuilt from a {type(storage).__name__}, not a storage")
            if backward_hooks:
                raise CheckpointError(f"{where}: a tensor carries backward hooks, which fastgrad does not load")
            array = _materialize(
                storage,
                _int(storage_offset, "a storage offset", where),
                _int_tuple(size, "a tensor size", where),
                _int_tuple(stride, "a stride", where),
                where,
            )
            t = Tensor._from_op(array, None)
            if requires_grad is True and array.dtype.kind == "f":
                t.requires_grad = True
            return t

        def rebuild_parameter(data, requires_grad, backward_hooks, *state):
            from ..nn import Parameter
            from ..tensor import Tensor

            if type(data) is not Tensor:
                raise CheckpointError(f"{where}: a parameter wraps a {type(data).__name__}, not a tensor")
            return Parameter(data.data, requires_grad=bool(requires_grad) and data.data.dtype.kind == "f")

        stand_ins = {("torch", name): st for name, st in _STORAGES.items()}
        stand_ins.update(
            {
                ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
                ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
                ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
                ("collections", "OrderedDict"): collections.OrderedDict,
                ("torch", "Size"): _size,
                ("torch", "device"): device,
                ("_codecs", "encode"): latin1_bytes,
                ("builtins", "set"): set,
                ("builtins", "frozenset"): frozenset,
                ("__builtin__", "set"): set,  # protocol 2 spells builtins the Python 2 way
                ("__builtin__", "frozenset"): frozenset,
            }
        )
        stand_ins.update({("torch", name): np.dtype(dt) for name, dt in _TORCH_DTYPES.items()})
        return stand_ins


_TORCH_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


def _size(dims=()):
    return tuple(dims)


def _accept(node):
    from ..nn import Parameter
    from ..tensor import Tensor

    if type(node) in (Tensor, Parameter):
        ok = isinstance(node.data, np.ndarray) and node.grad is None and node.grad_fn is None
        return [] if ok else None
    if type(node) in (device, np.dtype) or isinstance(node, np.dtype):
        return []
    return restricted.plain_children(node)


def load_torch_zip(raw, where):
    """The object a ``torch.save`` zip checkpoint (``raw``: its bytes) holds."""
    reader = _Reader(raw, where)
    data = reader.read(reader.prefix + "data.pkl")
    obj = restricted.load(data, reader.stand_ins(), where, persistent_load=reader.persistent_load, encoding="utf-8")
    restricted.check_tree(obj, _accept, where)
    return obj
