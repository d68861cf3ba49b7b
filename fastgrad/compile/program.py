"""A plan's kernel calls, traced on one replay and replayed as data from then on.

A replayed plan (compile/plan.py) calls each op's ``forward`` and ``backward``: the
op's Python (its Step, the arrays it asks the pool for, the views it takes, the
workspace it looks up) runs again on every step although it does the same thing every
time. On the first replay of a plan the ops run as usual while a ``Tracer`` notes, op by
op, what they do with arrays: every kernel call, every array they take from the pool
(``buffer_pool.empty``, ``buffer_pool.copy``), every reshaped view of a known array and
the thread's convolution workspace. From then on an op whose forward and backward were
both traced runs as its list of instructions, each ``(function, arguments, fills,
destination)``: call ``function`` on ``arguments`` with the positions in ``fills``
taken from the run's slots, and put the result (if ``destination`` >= 0) in a slot.
The instructions are data: one loop runs them, no source text is made.

An op takes part only when its class says ``replays_kernels = True``: its forward and
backward write arrays only through ``fastgrad.kernels`` and arrays from the pool
(numpy writing into an array is invisible to a trace). Anything a trace cannot place
makes that op run as itself, forward and backward, on every step, and the rest of the
plan still replays: an array of unknown origin (say, a copy numpy made), a kernel that
returned a value, an argument list holding arrays. Arrays are identified by identity;
a view by the array it views (same owner, same first element, same size, both
C-contiguous: a reshape). The arrays a module keeps (BatchNorm's running statistics,
passed as parameters) are the plan's constants: ModuleGuard checks they are the same
arrays at every call. Values are those of running the ops, bit for bit: the same
kernels run on the same arrays with the same arguments, and the pool hands out the same
kind of arrays.

Tracing sees the calls by standing in for ``fastgrad.kernels``' functions and the
pool's ``empty`` and ``copy`` while a trace runs on some thread (other threads' calls
go straight through: the stand-ins check a thread-local), as capture.py watches
Tensor's value reads.
"""

import importlib
import threading

import numpy as np

from .. import kernels
from ..ops import buffer_pool
from ..ops import conv as _conv


class Untraceable(Exception):
    """What one op did cannot be replayed from a trace."""


class _Active(threading.local):
    tracer = None  # the Tracer recording on this thread, or None


_active = _Active()


def _reshape(a, shape):
    return a.reshape(shape)


# the functions instructions call: the pool's own, never the tracing stand-ins
_empty, _copy, _workspace = buffer_pool.empty, buffer_pool.copy, _conv.workspace


class Tracer:
    """The slots of one traced replay (the plan's slots, then one per array the ops made)
    and the instructions of the op being traced (``instrs``; None while not recording)."""

    def __init__(self, n_slots, constants):
        self.n_slots = n_slots
        self.slot_of = {}  # id(array) -> slot
        self.seen = []  # every placed array, alive so that ids stay unique during the trace
        self.by_owner = {}  # id(owning array) -> [(array, slot)]: where a reshape is looked up
        self.constants = {id(a) for a in constants}
        self.instrs = None
        self.failure = None
        self.known_now = []  # (array, owner, slot) the open op made known

    def new_slot(self):
        self.n_slots += 1
        return self.n_slots - 1

    def know(self, a, slot):
        self.slot_of[id(a)] = slot
        self.seen.append(a)
        owner = a if a.base is None else a.base
        self.by_owner.setdefault(id(owner), []).append((a, slot))
        if self.failure is None and self.instrs is not None:
            self.known_now.append((a, owner, slot))

    def begin(self):
        self.instrs, self.failure, self.known_now = [], None, []

    def end(self):
        """The open op's instructions, or None when it could not be traced: then the
        arrays it made are forgotten (they are the op's own when it runs as itself)."""
        instrs, self.instrs = self.instrs, None
        if self.failure is None:
            return instrs
        for a, owner, slot in self.known_now:
            if self.slot_of.get(id(a)) == slot:
                del self.slot_of[id(a)]
            self.by_owner[id(owner)] = [(b, k) for b, k in self.by_owner[id(owner)] if k != slot]
        return None

    def fail(self, reason):
        if self.failure is None:
            self.failure = reason
        self.instrs = None  # nothing more of this op is recorded

    def place(self, a):
        """The slot ``a`` comes from, or None when it is a constant of the plan (anything
        that is not an array, or a module's own array). Records the view or workspace
        lookup that finds it again; raises Untraceable for an array of unknown origin."""
        if not isinstance(a, np.ndarray):
            if isinstance(a, (tuple, list)) and any(isinstance(b, np.ndarray) for b in a):
                raise Untraceable("an argument list holding arrays")
            return None
        slot = self.slot_of.get(id(a))
        if slot is not None:
            return slot
        if id(a) in self.constants:
            return None
        if a is _conv._workspaces.by_dtype.get(a.dtype):
            slot = self.new_slot()
            self.instrs.append((_workspace, [a.shape[0], a.dtype], (), slot))
            self.know(a, slot)
            return slot
        owner = a if a.base is None else a.base
        start = a.__array_interface__["data"][0]
        for b, source in self.by_owner.get(id(owner), ()):
            if (
                b.__array_interface__["data"][0] == start
                and b.nbytes == a.nbytes
                and b.dtype == a.dtype
                and a.flags.c_contiguous
                and b.flags.c_contiguous
            ):
                slot = self.new_slot()
                self.instrs.append((_reshape, [None, a.shape], ((0, source),), slot))
                self.know(a, slot)
                return slot
        raise Untraceable(f"an array of shape {a.shape} of unknown origin")

    def record(self, function, args, destination=-1):
        """Append the call ``function(*args)`` with each array argument placed."""
        template, fills = list(args), []
        for i, a in enumerate(args):
            slot = self.place(a)
            if slot is not None:
                template[i] = None
                fills.append((i, slot))
        self.instrs.append((function, template, tuple(fills), destination))


def _recording():
    tracer = _active.tracer
    return tracer if tracer is not None and tracer.instrs is not None else None


def _traced_kernel(kernel):
    def call(*args):
        tracer = _recording()
        if tracer is None:
            return kernel(*args)
        instrs = tracer.instrs
        try:
            tracer.record(kernel, args)
        except Untraceable as exc:
            tracer.fail(str(exc))
            return kernel(*args)
        result = kernel(*args)
        if result is not None and tracer.instrs is instrs:
            tracer.fail(f"{kernel.__name__} returned a value")
        return result

    call.__name__ = getattr(kernel, "__name__", "kernel")
    return call


def _traced_empty(shape, dtype):
    a = _empty(shape, dtype)
    tracer = _recording()
    if tracer is not None:
        slot = tracer.new_slot()
        # below the pool's size the pool hands out numpy.empty's arrays: asked directly
        make = np.empty if a.nbytes < buffer_pool.MIN_BYTES else _empty
        tracer.instrs.append((make, [a.shape, a.dtype], (), slot))
        tracer.know(a, slot)
    return a


def _traced_copy(a):
    tracer = _recording()
    if tracer is None:
        return _copy(a)
    instrs = tracer.instrs
    try:
        source = tracer.place(a)
    except Untraceable as exc:
        tracer.fail(str(exc))
        return _copy(a)
    tracer.instrs = None  # the copy's own empty is part of the copy
    try:
        out = _copy(a)
    finally:
        tracer.instrs = instrs
    slot = tracer.new_slot()
    if source is None:
        instrs.append((_copy, [a], (), slot))
    else:
        instrs.append((_copy, [None], ((0, source),), slot))
    tracer.know(out, slot)
    return out


_patch_lock = threading.Lock()
_patch_depth = 0
_patched = {}  # (owner module, name) -> (original, stand-in)


_NOT_OPS_KERNELS = {"backward_walk", "run_instructions"}  # the engine's loops, never called by an op


def _kernel_names():
    names = []
    for family in kernels.FAMILIES:
        names += importlib.import_module(f"fastgrad.reference.{family}").__all__
    return [n for n in names if n not in _NOT_OPS_KERNELS]


class tracing:
    """While any thread traces, the kernels and the pool's empty and copy are stood in
    for (see the module docstring); ``tracer`` records on this thread."""

    def __init__(self, tracer):
        self.tracer = tracer

    def __enter__(self):
        global _patch_depth
        with _patch_lock:
            if _patch_depth == 0:
                for name in _kernel_names():
                    original = getattr(kernels, name)
                    _patched[kernels, name] = (original, _traced_kernel(original))
                _patched[buffer_pool, "empty"] = (buffer_pool.empty, _traced_empty)
                _patched[buffer_pool, "copy"] = (buffer_pool.copy, _traced_copy)
                for (module, name), (_, stand_in) in _patched.items():
                    setattr(module, name, stand_in)
            _patch_depth += 1
        self.previous, _active.tracer = _active.tracer, self.tracer
        return self.tracer

    def __exit__(self, *exc):
        global _patch_depth
        _active.tracer = self.previous
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                for (module, name), (original, stand_in) in _patched.items():
                    if getattr(module, name) is stand_in:  # not rebound meanwhile (use_backend)
                        setattr(module, name, original)
                _patched.clear()
        return False


class Program:
    """Per entry of a plan, its traced forward (instructions, the slot of its output) and
    backward (the slot its gradient goes in, the dtype the trace saw it in, instructions,
    the slot of each input's gradient or -1), or None for an entry that runs as its op;
    and the slots each step lets go of (``forward_frees[i]`` after entry i's forward;
    ``backward_frees[i]`` after its backward, and ``saved_frees[i]`` the forward's arrays
    its backward read last, kept when the graph is retained)."""

    def __init__(self, plan, n_slots, forward, backward):
        self.n_slots, self.forward, self.backward = n_slots, forward, backward
        self.forward_frees, self.backward_frees, self.saved_frees = _lifetimes(plan, forward, backward)


def _lifetimes(plan, forward, backward):
    entries = plan.entries
    keep = {k for k, _ in plan.boundary} | {plan.out_slot}
    last, made_in_backward = {}, set()
    for i, e in enumerate(entries):
        code = forward[i]
        reads = e.ins if code is None else [s for _, _, fills, _ in code[0] for _, s in fills] + [code[1]]
        for s in reads:
            last[s] = ("f", i)
        last[e.out] = last.get(e.out, ("f", i))
        if code is not None:
            for _, _, _, d in code[0]:
                if d >= 0:
                    last.setdefault(d, ("f", i))
    for i in plan.back:
        code = backward[i]
        if code is None:
            continue
        g_slot, _, instrs, outs = code
        made_in_backward.add(g_slot)
        for _, _, fills, d in instrs:
            for _, s in fills:
                last[s] = ("b", i)
            if d >= 0:
                made_in_backward.add(d)
                last[d] = ("b", i)
        for s in (g_slot, *outs):
            if s >= 0:
                last[s] = ("b", i)
    forward_frees = [[] for _ in entries]
    backward_frees = [[] for _ in entries]
    saved_frees = [[] for _ in entries]
    for s, (where, i) in last.items():
        if s in keep:
            continue
        if where == "f":
            forward_frees[i].append(s)
        elif s in made_in_backward:
            backward_frees[i].append(s)
        else:
            saved_frees[i].append(s)
    return [tuple(f) for f in forward_frees], [tuple(f) for f in backward_frees], [tuple(f) for f in saved_frees]
