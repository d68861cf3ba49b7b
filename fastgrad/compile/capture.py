"""Capturing one forward as a Plan: the forward runs eagerly (its result is the call's
result) while ``Function.apply`` reports every op to a ``Recorder``.

What cannot be captured is a graph break; the call then stays eager (or, under
``fullgraph=True``, raises ``CaptureError`` naming the module, the operation and the
user's line):
- reading a tensor's values in Python inside the forward (``item``, ``tolist``,
  ``numpy``, ``bool``, ``float``, ``int``, ``__array__``, or ``.data`` from user code):
  a branch on them could go another way next time;
- an op on a tensor that is neither an input, nor a parameter or buffer of the module,
  nor a 0-d constant (Python numbers become those), nor made by an earlier op;
- an op given an array as a parameter, other than a module buffer's own array;
- hooks on the module, or on a tensor made inside the forward;
- a forward that assigns module attributes, or changes a buffer in Python other than
  incrementing an integer counter by one (BatchNorm's num_batches_tracked);
- an output that is not one tensor made by an op.
"""

import functools
import os
import sys
import threading
import weakref

import numpy as np

from ..autograd import _capture, topological_order
from ..tensor import Tensor
from .fuse import fold_batchnorms, fuse_relus
from .guards import ModuleGuard, node_has_hooks
from .plan import SKIP, SLOT, USE, Entry, Plan

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CaptureError(RuntimeError):
    """fastgrad.compile(fullgraph=True) met something it cannot capture."""


class GraphBreak(Exception):
    """Raised inside a capture to stop it (fullgraph) or noted to keep the call eager."""


def user_site():
    """file:line of the innermost frame outside fastgrad: the user's line that made an op."""
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if not os.path.abspath(name).startswith(_PACKAGE_DIR):
            return f"{name}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


def _from_user_code():
    return not os.path.abspath(sys._getframe(2).f_code.co_filename).startswith(_PACKAGE_DIR)


class Recorder:
    def __init__(self, module, args, fullgraph):
        self.module, self.args, self.fullgraph = module, args, fullgraph
        # the recorder holds no tensor the forward made: the forward lets go of them as
        # it would uncaptured (a weak reference's callback forgets a tensor's id when it
        # goes), so a capture's peak memory is the eager run's
        self.slots = {}  # id(tensor) -> slot, for the tensors alive now
        self.refs = {}  # id(tensor) -> its weak reference
        self.meta = []  # per slot: (shape, dtype) of its array
        self.nodes = []  # the graph nodes the ops made (their ids stay unique meanwhile)
        self.boundary = []  # (slot, ("arg", i) | ("tensor", t))
        self.entries = []
        self.fns = {}  # id(Function node) -> entry index
        self.broken = None  # the first reason the call cannot be captured
        self.changed_state = False
        self.fuse = True  # fuse_relus on the finished capture (off to compare against)
        self.freeze = False  # parameters are constants: fold_batchnorms where no gradient is made
        self.module_tensors = {}
        self.buffer_arrays = {}
        for m in module.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None:
                    self.module_tensors[id(t)] = t
            for t in m._buffers.values():
                if t is not None:
                    self.buffer_arrays[id(t._data)] = t

    def graph_break(self, reason):
        if self.broken is None:
            self.broken = f"{type(self.module).__name__}: {reason}"
            if self.fullgraph:
                raise CaptureError(f"fastgrad.compile(fullgraph=True) cannot capture {self.broken}")

    def _slot_of(self, t, op):
        k = self.slots.get(id(t))
        if k is not None:
            return k
        for i, a in enumerate(self.args):
            if a is t:
                source = ("arg", i)
                break
        else:
            if id(t) in self.module_tensors:
                source = ("tensor", t)
            elif t._ctx is None and t._data.ndim == 0 and not t._requires_grad:
                source = ("tensor", t)  # a constant made from a Python number
            else:
                self.graph_break(
                    f"{op} at {user_site()} takes a tensor of shape {tuple(t.shape)} that is "
                    "neither an input, a parameter or buffer of the module, nor made inside it"
                )
                return None
        k = self._new_slot(t)
        self.boundary.append((k, source))
        return k

    def _new_slot(self, t):
        k = len(self.meta)
        self.meta.append((t._data.shape, t._data.dtype))
        key = id(t)
        self.slots[key] = k
        self.refs[key] = weakref.ref(t, functools.partial(_forget, weakref.ref(self), key))
        return k

    def _parameter_array(self, k):
        """The array of boundary slot ``k`` when it holds a parameter or buffer of the module."""
        kind, ref = self._sources.get(k, (None, None))
        return ref._data if kind == "tensor" and id(ref) in self.module_tensors else None

    def _new_constant(self, a):
        """A new boundary slot holding ``a`` (a folded weight) at every call."""
        t = Tensor._from_op(a, None)
        k = len(self.meta)
        self.meta.append((a.shape, a.dtype))
        self.boundary.append((k, ("tensor", t)))
        return k

    def op(self, fn, tensors, params, needs, result):
        if self.broken is not None:
            return
        cls = type(fn)
        name = cls.__name__
        ins = [self._slot_of(t, name) for t in tensors]
        if self.broken is not None:
            return
        for key, v in params.items():
            if isinstance(v, np.ndarray) and id(v) not in self.buffer_arrays:
                self.graph_break(
                    f"{name} at {user_site()} takes an array parameter {key!r} that is not a module buffer"
                )
                return
        out = self._new_slot(result)
        if result._ctx is not None:
            self.fns[id(result._ctx)] = len(self.entries)
            self.nodes.append(result._ctx)
        params = dict(params)
        step = fn.__dict__.get("step") if cls.takes_step else None
        if step is not None:  # its Step, made once, is replayed
            params["step"] = step
        self.entries.append(Entry(cls, ins, params, needs, out, user_site()))

    def plan(self, output, before, counters):
        """The Plan of the finished capture, or None after a graph break."""
        if self.broken is None and (
            not isinstance(output, Tensor)
            or id(output) not in self.slots
            or self.slots[id(output)] in {k for k, _ in self.boundary}
        ):
            self.graph_break("the forward's output is not one tensor made by an op inside it")
        if self.broken is None and any(node_has_hooks(n) for n in self.nodes):
            self.graph_break("a tensor made inside the forward has a hook or retains its gradient")
        if self.broken is None and not before.same_as(ModuleGuard(self.module)):
            self.changed_state = True  # perhaps a cache made on a first call: tried again
            self.graph_break("the forward assigned a module attribute or replaced a parameter's array")
        if self.broken is not None:
            return None
        back, uses = [], []
        boundary_slots = {k for k, _ in self.boundary}
        source = dict(self.boundary)
        out_slot = self.slots[id(output)]
        entries, index = fuse_relus(self.entries, out_slot, self.meta) if self.fuse else (self.entries, None)
        if self.freeze and output._ctx is None:
            self._sources = source  # the boundary before folding adds constants to it
            entries = fold_batchnorms(entries, out_slot, self._parameter_array, self._new_constant)
        if output._ctx is not None:
            for fn in topological_order(output._ctx):
                i = self.fns.get(id(fn))
                if i is not None and index is not None:
                    i = index[i]  # None: a ReLU now inside its producer's entry
                if i is not None:  # nodes before the inputs are outside the module's call
                    back.append(i)
        for i in back:
            e = entries[i]
            grad_to = []
            for k, need in zip(e.ins, e.needs):
                if not need:
                    grad_to.append((SKIP, None))
                elif k in boundary_slots:
                    grad_to.append((USE, len(uses)))
                    uses.append(source[k])
                else:
                    grad_to.append((SLOT, k))
            e.grad_to = tuple(grad_to)
        return Plan(len(self.meta), self.boundary, entries, out_slot, back, uses, counters)


def _forget(recorder_ref, key, tensor_ref):
    recorder = recorder_ref()
    if recorder is not None:  # the tensor is being freed: its id may be another's next
        recorder.slots.pop(key, None)
        recorder.refs.pop(key, None)


# --------------------------------------------------------------------------- value reads

_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "__array__")
_patch_lock = threading.Lock()
_patch_depth = 0
_originals = {}


def _watching(name, original):
    def read(self, *args, **kwargs):
        recorder = _capture.recorder
        if recorder is not None and _from_user_code():
            recorder.graph_break(f"Tensor.{name} at {user_site()} reads a tensor's values in Python")
        return original(self, *args, **kwargs)

    read.__name__ = name
    return read


def _watching_data(prop):
    def get(self):
        recorder = _capture.recorder
        if recorder is not None and _from_user_code():
            recorder.graph_break(f"Tensor.data at {user_site()} reads a tensor's values in Python")
        return prop.fget(self)

    return property(get, prop.fset, prop.fdel, prop.__doc__)


class watch_value_reads:
    """While any thread captures, Tensor's value-reading methods tell that thread's
    recorder (other threads see no change but a check of a thread-local)."""

    def __enter__(self):
        global _patch_depth
        with _patch_lock:
            if _patch_depth == 0:
                for name in _READS:
                    _originals[name] = Tensor.__dict__[name]
                    setattr(Tensor, name, _watching(name, _originals[name]))
                _originals["data"] = Tensor.__dict__["data"]
                Tensor.data = _watching_data(_originals["data"])
            _patch_depth += 1
        return self

    def __exit__(self, *exc):
        global _patch_depth
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                for name, original in _originals.items():
                    setattr(Tensor, name, original)
                _originals.clear()
        return False
