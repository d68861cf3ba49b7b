"""Devices, as ``torch.device``: fastgrad computes on the CPU only.

``fastgrad.device("cuda")`` can be made (as in PyTorch, where making a device object
never touches the hardware), so scripts that pick a device by name run unchanged; what
fails is moving anything onto a device other than the CPU, with one message that says
why. ``Tensor.to`` and ``Module.to`` share the argument parsing below, so both accept
PyTorch's forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``
and the keywords ``device=``, ``dtype=``, ``non_blocking=``, ``copy=``.
"""

import numbers

import numpy as np

_KNOWN_TYPES = ("cpu", "cuda", "mps", "xpu", "xla", "meta", "hip", "mtia", "privateuseone")


def cpu_only_error(what):
    """The error raised for anything that needs an accelerator."""
    return RuntimeError(
        f"{what}: fastgrad runs on the CPU only (it has no CUDA, MPS or other "
        "accelerator backend); use the device 'cpu', or leave the device out"
    )


class device:
    """A device, as ``torch.device``: ``device("cpu")``, ``device("cuda", 0)``,
    ``device("cuda:1")``. Only ``"cpu"`` can hold fastgrad tensors."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            if index is not None:
                raise ValueError("device: give an index only with a device type string")
            self.type, self.index = type.type, type.index
            return
        if isinstance(type, numbers.Integral) and not isinstance(type, bool):
            raise cpu_only_error(f"device({type})")  # a bare ordinal means an accelerator in PyTorch
        if not isinstance(type, str):
            raise TypeError(f"device: expected a string such as 'cpu', got {type.__class__.__name__}")
        name, sep, ordinal = type.partition(":")
        if name not in _KNOWN_TYPES:
            raise RuntimeError(
                f"Expected one of {', '.join(_KNOWN_TYPES)} device type at start of device string: {type}"
            )
        if sep:
            if index is not None:
                raise RuntimeError(f"device: type {type!r} already names an index; do not also pass index={index}")
            if not ordinal.isdigit():
                raise RuntimeError(f"Invalid device string: {type!r}")
            index = int(ordinal)
        if index is not None and (isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0):
            raise RuntimeError(f"Device index must not be negative, got {index!r}")
        self.type, self.index = name, None if index is None else int(index)

    def __repr__(self):
        return (
            f"device(type='{self.type}')" if self.index is None else f"device(type='{self.type}', index={self.index})"
        )

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __reduce__(self):
        return (device, (self.type, self.index))


CPU = device("cpu")


def as_cpu(dev, what):
    """Check that ``dev`` (a device, a string, or None) is the CPU; raise the CPU-only
    error otherwise."""
    if dev is None:
        return CPU
    d = dev if isinstance(dev, device) else device(dev)
    if d.type != "cpu":
        raise cpu_only_error(f"{what}({str(d)!r})")
    return CPU


def _is_dtype(value):
    if isinstance(value, (str, device)) or value is None:
        return False
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def parse_to(what, args, kwargs):
    """``(dtype or None, copy)`` from the arguments of ``Tensor.to`` / ``Module.to``,
    after checking that any device given is the CPU. A tensor argument stands for its
    dtype (and its device, the CPU)."""
    from .tensor import Tensor

    kwargs = dict(kwargs)
    dev = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("memory_format", None)
    copy = bool(kwargs.pop("copy", False))
    if kwargs:
        raise TypeError(f"{what}() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    positional = list(args)
    if positional and isinstance(positional[0], Tensor):
        other = positional.pop(0)
        dtype = other.dtype if dtype is None else dtype
    elif positional and not _is_dtype(positional[0]):
        dev = positional.pop(0) if dev is None else dev
    if positional and _is_dtype(positional[0]):
        dtype = positional.pop(0) if dtype is None else dtype
    # what may follow in PyTorch's signatures: non_blocking, copy
    if positional and isinstance(positional[0], bool):
        positional.pop(0)
    if positional and isinstance(positional[0], bool):
        copy = positional.pop(0)
    if positional:
        raise TypeError(f"{what}(): cannot interpret argument(s) {positional!r} as a device, dtype or tensor")
    as_cpu(dev, f"{what}")
    return (None if dtype is None else np.dtype(dtype)), copy
