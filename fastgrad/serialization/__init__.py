"""``fastgrad.save`` and ``fastgrad.load``, as ``torch.save`` and ``torch.load``.

``save`` writes tensors, arrays and the containers around them (state dicts, optimizer
state dicts, dicts of both with epochs and losses) in fastgrad's own format: a
safetensors file described by JSON (``native.py``), never a pickle. ``load`` reads that
format, plain safetensors files (a dict of tensors), and the zip checkpoints ``torch.save``
writes (``torch_zip.py``), those through a restricted unpickler that rebuilds tensors,
storages, OrderedDicts and plain containers only, as ``torch.load(weights_only=True)``;
nothing from a file is ever run. Tensors load onto the CPU.
"""

import os
import tempfile

from .. import _device

__all__ = ["CheckpointError", "UnsafePickleError", "load", "save"]
ZIP_MAGIC = b"PK\x03\x04"


def __getattr__(name):
    # The readers load on first use (zipfile, pickletools and safetensors are not needed
    # by `import fastgrad`); their error types are importable from here all the same.
    if name == "CheckpointError":
        from ..io import CheckpointError

        return CheckpointError
    if name == "UnsafePickleError":
        from .restricted import UnsafePickleError

        return UnsafePickleError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save(obj, f, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True):
    """Save ``obj`` to ``f`` (a path or a binary file object). ``pickle_module`` and
    ``pickle_protocol`` are accepted for PyTorch's signature and must be left unset: fastgrad
    never pickles."""
    if pickle_module is not None or pickle_protocol not in (None, 2):
        raise ValueError("fastgrad.save never pickles: leave pickle_module and pickle_protocol unset")
    from ..io import write_safetensors
    from . import native

    tree, arrays = native.encode(obj)
    metadata = native.metadata_for(tree)
    if isinstance(f, (str, os.PathLike)):
        write_safetensors(f, arrays, metadata)  # atomic: a crash leaves the old file or the new one
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "obj.safetensors")
        write_safetensors(path, arrays, metadata)
        with open(path, "rb") as src:
            f.write(src.read())


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **pickle_load_args):
    """Load what ``save`` or ``torch.save`` wrote to ``f`` (a path or a binary file object).

    Everything loads onto the CPU: ``map_location`` may be None, ``"cpu"``, a CPU device,
    a dict mapping locations to ``"cpu"``, or a function returning the storage it is given
    (``lambda storage, loc: storage``). ``weights_only`` is accepted and always in force:
    a PyTorch checkpoint that holds anything beyond tensors and containers (a pickled
    model, a custom class) is refused, naming the global it asked for."""
    _check_map_location(map_location)
    if pickle_module is not None:
        raise ValueError("fastgrad.load does not take a pickle_module: it never unpickles arbitrary objects")
    from ..io import CheckpointError

    where, raw = _read(f)
    if raw[:4] == ZIP_MAGIC:
        from .torch_zip import load_torch_zip

        return load_torch_zip(raw, where)
    if raw[:1] == b"\x80":
        raise CheckpointError(
            f"{where}: a torch.save file in the legacy (pre-1.6, not zip) format; fastgrad "
            "reads the zip format: re-save it with a current PyTorch"
        )
    if len(raw) >= 9 and raw[8:9] == b"{":
        return _load_safetensors(f, raw, where)
    raise CheckpointError(
        f"{where}: not a file written by fastgrad.save, safetensors or torch.save (it starts with {raw[:8]!r})"
    )


def _read(f):
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        with open(path, "rb") as src:
            return path, src.read()
    if not hasattr(f, "read"):
        raise TypeError(f"fastgrad.load: expected a path or a binary file object, got {type(f).__name__}")
    raw = f.read()
    if not isinstance(raw, (bytes, bytearray)):
        raise TypeError("fastgrad.load: the file object must be opened in binary mode")
    return getattr(f, "name", "<file object>") if isinstance(getattr(f, "name", None), str) else "<file object>", bytes(
        raw
    )


def _load_safetensors(f, raw, where):
    from ..io import CheckpointError, atomic_write, read_safetensors
    from . import native

    if isinstance(f, (str, os.PathLike)):
        arrays, metadata = read_safetensors(f)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "obj.safetensors")
            atomic_write(path, raw)
            try:
                arrays, metadata = read_safetensors(path)
            except CheckpointError as exc:
                raise CheckpointError(str(exc).replace(path, where)) from None
    if native.METADATA_KEY in metadata:
        return native.decode(metadata, arrays, where)
    from collections import OrderedDict

    from ..tensor import Tensor

    return OrderedDict((name, Tensor._from_op(a, None)) for name, a in arrays.items())


def _check_map_location(map_location):
    if map_location is None or callable(map_location) and not isinstance(map_location, (str, _device.device)):
        return  # a function is given each storage and must return it (there is only the CPU)
    if isinstance(map_location, dict):
        for target in map_location.values():
            _device.as_cpu(target, "fastgrad.load(map_location=...)")
        return
    _device.as_cpu(map_location, "fastgrad.load(map_location=...)")
