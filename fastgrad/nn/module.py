"""Module, the base of every layer, and Parameter, the tensor a Module trains.

A Module keeps three ordered registries, filled by plain attribute assignment:
``_parameters`` (Parameters), ``_buffers`` (Tensors that are state but not trained, such
as BatchNorm's running statistics) and ``_modules`` (sub-modules). Each registered entry
is also stored in the instance ``__dict__`` so that ``self.weight`` inside ``forward`` is
an ordinary attribute read, not a ``__getattr__`` fallback; ``__setattr__`` and
``__delattr__`` keep the two in step. Names, traversal order and ``state_dict`` keys
follow PyTorch ("features.0.weight"), so checkpoints map one to one.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import numpy as np

from .. import _device
from ..hooks import RemovableHandle
from ..tensor import Tensor, _as_array
from .hooks import add_hook, call_with_hooks, has_hooks

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (``requires_grad=True`` by default).

    ``Parameter(t)`` shares ``t``'s array, as in PyTorch; other data (numpy arrays, lists)
    is converted as ``fastgrad.tensor`` does (floats become float32).
    """

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            array = np.empty((0,), dtype=np.float32)
        elif isinstance(data, Tensor):
            array = data.data
        else:
            array = _as_array(data)
        self._data = array
        self.grad = None
        self._ctx = None
        self._hooks = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict(strict=False)`` reports, as PyTorch's named tuple."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _indent_after_first_line(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    pad = " " * spaces
    return "\n".join([lines[0]] + [pad + line if line else line for line in lines[1:]])


def _check_name(kind: str, owner: Module, name: str, registry: dict[str, Any]) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if not name:
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
    if hasattr(owner, name) and name not in registry:
        raise KeyError(f"attribute '{name}' already exists")


# Functions called as ``observe(module, args, output)`` after each Module call returns, while
# registered: how fastgrad.onnx learns which module made each op of a forward pass. While
# any is registered, plans are not replayed (compile/cache.py): every module is called.
_forward_observers = []


class Module:
    """Base class of every layer and model (as torch.nn.Module).

    Subclasses call ``super().__init__()`` first, assign Parameters, buffers and
    sub-modules as attributes, and define ``forward``; calling the module runs ``forward``.
    """

    def __init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "training", True)
        setattr_(self, "_parameters", {})
        setattr_(self, "_buffers", {})
        setattr_(self, "_non_persistent_buffers", set())
        setattr_(self, "_modules", {})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if has_hooks(self):
            output = call_with_hooks(self, args, kwargs)
        else:
            output = self.forward(*args, **kwargs)
        if _forward_observers:
            for observe in _forward_observers:
                observe(self, args, output)
        return output

    # ----------------------------------------------------------------- hooks (nn/hooks.py)
    def register_forward_pre_hook(
        self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """``hook(module, args)`` before each forward; a returned value replaces ``args``
        (with ``with_kwargs=True``: ``hook(module, args, kwargs)`` returning ``(args, kwargs)``)."""
        return add_hook(self, "_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(
        self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False, always_call: bool = False
    ) -> RemovableHandle:
        """``hook(module, args, output)`` after each forward; a returned value replaces the output."""
        return add_hook(self, "_forward_hooks", hook, prepend, with_kwargs, always_call)

    def register_full_backward_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` once the gradients with respect to the
        module's positional Tensor inputs are computed; a returned tuple replaces grad_input."""
        return add_hook(self, "_backward_hooks", hook, prepend)

    # ----------------------------------------------------------------- registration
    def _registries(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"cannot assign to a {type(self).__name__} before Module.__init__() call "
                "(call super().__init__() first)"
            )
        return d["_parameters"], d["_buffers"], d["_modules"]

    def _unregister(self, name: str) -> None:
        params, buffers, modules = self._registries()
        params.pop(name, None)
        buffers.pop(name, None)
        modules.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self.__dict__.pop(name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            self._registries()
            if name not in params:  # a replacement keeps its place in the order
                self._unregister(name)
            params[name] = value
            d[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(fastgrad.nn.Parameter or None expected)"
                )
            params[name] = None
            d[name] = None
        elif isinstance(value, Module):
            self._registries()
            if name not in d["_modules"]:  # a replacement keeps its place in the order
                self._unregister(name)
            d["_modules"][name] = value
            d[name] = value
        elif params is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' "
                    "(fastgrad.nn.Module or None expected)"
                )
            d["_modules"][name] = None
            d[name] = None
        elif params is not None and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' (fastgrad.Tensor or None expected)"
                )
            d["_buffers"][name] = value
            d[name] = value
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        if any(name in d.get(reg, ()) for reg in ("_parameters", "_buffers", "_modules")):
            self._unregister(name)
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a Parameter (or None, a declared but absent one, like ``bias=False``)."""
        self._registries()
        _check_name("parameter", self, name, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(fastgrad.nn.Parameter or None required)"
            )
        self._unregister(name)
        self._parameters[name] = param
        self.__dict__[name] = param

    def register_buffer(self, name: str, tensor: Tensor | np.ndarray | None, persistent: bool = True) -> None:
        """Add a buffer: module state that is saved in state_dict (unless not persistent)
        but not trained. ``tensor`` is a Tensor, a numpy array, or None."""
        self._registries()
        _check_name("buffer", self, name, self._buffers)
        if isinstance(tensor, np.ndarray):
            tensor = Tensor._from_op(tensor, None)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (fastgrad.Tensor or None required)"
            )
        self._unregister(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        self.__dict__[name] = tensor

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a sub-module under ``name`` (a string; PyTorch's numbered names are "0", "1"...)."""
        self._registries()
        _check_name("module", self, name, self._modules)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._unregister(name)
        self._modules[name] = module
        self.__dict__[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """The sub-module at a dotted path such as "features.0" ("" is the module itself)."""
        module = self
        for part in target.split(".") if target else ():
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{module._get_name()} has no submodule `{part}` (looking up {target!r})")
            module = child
        return module

    # ----------------------------------------------------------------- traversal
    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module and every sub-module, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool, skip_non_persistent: bool = False
    ) -> Iterator[tuple[str, Any]]:
        owners = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for owner_prefix, owner in owners:
            for name, value in getattr(owner, registry).items():
                if value is None or (skip_non_persistent and name in owner._non_persistent_buffers):
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield (f"{owner_prefix}.{name}" if owner_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a Parameter shared by two layers appears once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_parameter(self, target: str) -> Parameter:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if module._parameters.get(name) is None:
            raise AttributeError(f"{module._get_name()} has no parameter `{name}`")
        return module._parameters[name]

    def get_buffer(self, target: str) -> Tensor:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if module._buffers.get(name) is None:
            raise AttributeError(f"{module._get_name()} has no buffer `{name}`")
        return module._buffers[name]

    # ----------------------------------------------------------------- modes and gradients
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (``set_to_none``) or zero every parameter's gradient."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.data[...] = 0

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module (children first) and then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------- dtype
    def _cast_floats(self, dtype: np.dtype) -> Module:
        for module in self.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is None or tensor.data.dtype not in _FLOAT_DTYPES or tensor.data.dtype == dtype:
                    continue
                tensor.data = tensor.data.astype(dtype)  # in place on the object: optimizers keep it
                if tensor.grad is not None:
                    tensor.grad.data = tensor.grad.data.astype(dtype)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` or keywords:
        converts floating parameters and buffers in place. The one device is the CPU:
        ``to("cuda")`` raises, saying so."""
        dtype, _ = _device.parse_to("Module.to", args, kwargs)
        if dtype is None:
            return self
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"Module.to: only float32 or float64 are supported, got {dtype}")
        return self._cast_floats(dtype)

    def float(self) -> Module:
        return self._cast_floats(np.dtype(np.float32))

    def double(self) -> Module:
        return self._cast_floats(np.dtype(np.float64))

    def cpu(self) -> Module:
        return self

    def cuda(self, device: Any = None) -> NoReturn:
        raise _device.cpu_only_error("Module.cuda")

    # ----------------------------------------------------------------- state
    def _state_entries(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(key, Tensor) for every saved entry: each module's parameters, then its
        persistent buffers, then its children's, as PyTorch orders state_dict."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                yield prefix + name, buf
        for name, child in self._modules.items():
            if child is not None:
                yield from child._state_entries(f"{prefix}{name}.")

    def state_dict(
        self, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Any]:
        """Parameters and persistent buffers under PyTorch's dotted keys, as numpy copies
        (or the Tensors themselves with ``keep_vars=True``)."""
        out = OrderedDict() if destination is None else destination
        for key, tensor in self._state_entries(prefix):
            out[key] = tensor if keep_vars else np.array(tensor.data, copy=True)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values from ``state_dict`` (numpy arrays, fastgrad Tensors, or anything
        ``numpy.asarray`` accepts) into this module's parameters and buffers, in place.

        Nothing is copied unless every entry is usable: a wrongly shaped entry always
        raises, and with ``strict`` so do missing and unexpected keys. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        targets = OrderedDict(self._state_entries())
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        errors, ready = [], []
        for key, tensor in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else np.asarray(value)
            if value.dtype.kind not in "biuf":
                errors.append(f"cannot load {key}: expected numbers, got an array of dtype {value.dtype}.")
            elif value.shape != tensor.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {tuple(value.shape)} from "
                    f"checkpoint, the shape in current model is {tuple(tensor.shape)}."
                )
            else:
                ready.append((tensor, value))
        if strict and unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
        if strict and missing:
            errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {self._get_name()}:\n\t" + "\n\t".join(errors))
        for tensor, value in ready:
            if tensor.data.flags.writeable:
                np.copyto(tensor.data, value, casting="unsafe")
            else:
                tensor.data = value.astype(tensor.data.dtype)
        return IncompatibleKeys(missing, unexpected)

    # ----------------------------------------------------------------- printing
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """The layer's settings, shown inside its repr; layers override this."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): " + _indent_after_first_line(repr(child), 2) for name, child in self._modules.items()
        ]
        lines = extra_lines + child_lines
        if not lines:
            return self._get_name() + "()"
        if len(extra_lines) == 1 and not child_lines:
            return f"{self._get_name()}({extra_lines[0]})"
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"

    def _input_error(self, shape: tuple[int, ...], expected: str) -> ValueError:
        """The error a layer raises for an input of the wrong shape: names the layer by its
        repr, the expected shape and the shape it got."""
        return ValueError(f"{self!r}: expected input of shape {expected}, got {tuple(shape)}")
