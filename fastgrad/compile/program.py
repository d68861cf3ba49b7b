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

import functools
import importlib
import threading
import weakref

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
_empty, _copy, _add, _workspace = buffer_pool.empty, buffer_pool.copy, buffer_pool.add, _conv.workspace


class Tracer:
    """The slots of one traced replay (the plan's slots, then one per array the ops made)
    and the instructions of the op being traced (``instrs``; None while not recording).

    The tracer holds no array of the run: an array is known by its id while it lives (a
    weak reference's callback forgets the id when the array goes, before the id can be
    reused), so the run lets go of its arrays as an untraced run does and the pool hands
    them out again; an array the pool hands out anew is a new slot (``know`` again).
    Holding every array until the trace ends would make a traced step's peak memory the
    sum of all its arrays."""

    def __init__(self, n_slots, constants):
        self.n_slots = n_slots
        self.slot_of = {}  # id(array) -> slot, for the arrays alive now
        self.refs = {}  # id(array) -> its weak reference (the callback forgets the id)
        self.by_owner = {}  # id(owning array) -> {id(array): (weak reference, slot)}: for reshapes
        self.constants = {id(a) for a in constants}
        self.instrs = None
        self.failure = None
        self.known_now = []  # (array, owner, slot) the open op made known

    def new_slot(self):
        self.n_slots += 1
        return self.n_slots - 1

    def _remember(self, a, slot):
        key = id(a)
        self.slot_of[key] = slot
        if key not in self.refs:
            # the callback holds the tracer weakly: no cycle keeps a finished tracer (and
            # the arrays of its last op) alive until the garbage collector runs
            self.refs[key] = weakref.ref(a, functools.partial(_forget, weakref.ref(self), key))

    def _forget(self, key):
        # the array is being freed: its id may belong to another array next
        self.slot_of.pop(key, None)
        self.refs.pop(key, None)
        owned = self.by_owner.pop(key, None)  # no view outlives its owner
        for entries in self.by_owner.values() if owned is None else ():
            entries.pop(key, None)

    def know(self, a, slot):
        self._remember(a, slot)
        owner = a if a.base is None else a.base
        self.by_owner.setdefault(id(owner), {})[id(a)] = (self.refs[id(a)], slot)
        if self.failure is None and self.instrs is not None:
            self.known_now.append((a, owner, slot))

    def begin(self):
        self.instrs, self.failure, self.known_now = [], None, []

    def end(self):
        """The open op's instructions, or None when it could not be traced: then the
        arrays it made are forgotten (they are the op's own when it runs as itself)."""
        instrs, self.instrs = self.instrs, None
        known_now, self.known_now = self.known_now, []
        if self.failure is None:
            return instrs
        for a, owner, slot in known_now:
            if self.slot_of.get(id(a)) == slot:
                del self.slot_of[id(a)]
            entries = self.by_owner.get(id(owner), {})
            if entries.get(id(a), (None, None))[1] == slot:
                del entries[id(a)]
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
        same = []
        for ref, source in list(self.by_owner.get(id(owner), {}).values()):
            b = ref()
            if (
                b is not None
                and self.slot_of.get(id(b)) == source
                and b.__array_interface__["data"][0] == start
                and b.nbytes == a.nbytes
                and b.dtype == a.dtype
                and a.flags.c_contiguous
                and b.flags.c_contiguous
            ):
                same.append((b, source))
        for b, source in same:
            if b.shape == a.shape:  # a view that is its source over again: the source serves
                self._remember(a, source)
                return source
        if same:
            slot = self.new_slot()
            self.instrs.append((_reshape, [None, a.shape], ((0, same[0][1]),), slot))
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


def _forget(tracer_ref, key, array_ref):
    tracer = tracer_ref()
    if tracer is not None:
        tracer._forget(key)


def _recording():
    tracer = _active.tracer
    return tracer if tracer is not None and tracer.instrs is not None else None


def _traced_kernel(kernel):
    def call(*args, **kwargs):
        tracer = _recording()
        if tracer is None or kwargs:
            if tracer is not None:  # instructions pass arguments by position only
                tracer.fail(f"{kernel.__name__} called with keyword arguments")
            return kernel(*args, **kwargs)
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


def backward_note(e):
    """The note an error in entry ``e``'s replayed backward carries."""
    return f"fastgrad.compile: raised by the backward of {e.cls.__name__} replayed from {e.site}"


def _run_op(cls, needs, params, index, fns, *ins):
    """An entry that runs as its op: its Function's forward (kept in ``fns`` for backward)."""
    fn = cls()
    fn.needs_input_grad = needs
    out = fn.forward(*ins, **params)
    if fns is not None:
        fns[index] = fn
    return out


class Program:
    """A plan's traced program.

    ``forward[i]``: entry i's traced forward (instructions, the slot of its output), or
    None when it runs as its op; ``backward[i]``: its traced backward (the slot its
    gradient goes in, the dtype the trace saw it in, instructions, the slot of each
    input's gradient or -1), or None. From these, what runs: ``instrs``, the whole
    forward as one list of instructions (``kernels.run_instructions``; an op's entry is
    one instruction calling its Function, which goes in the run's list ``fns``, slot
    ``fns_slot``), whose output is slot ``out_slot``; and ``steps``, the backward walk
    (``kernels.replay_backward``). Each instruction lets go of the slots nothing later
    reads; the arrays the backward reads go after their last reader there (kept when the
    graph is retained)."""

    def __init__(self, plan, n_slots, forward, backward):
        self.forward, self.backward = forward, backward
        self.fns_slot = n_slots
        self.n_slots = n_slots + 1
        where = {}  # a traced entry's plan slot -> the slot that holds its output
        instrs = []  # [function, arguments, fills, destination, note]
        for i, e in enumerate(plan.entries):
            note = f"fastgrad.compile: raised by {e.cls.__name__} replayed from {e.site}"
            code = forward[i]
            if code is None:
                ins = [where.get(k, k) for k in e.ins]
                args = [e.cls, e.needs, e.params, i, None] + [None] * len(ins)
                fills = ((4, self.fns_slot),) + tuple((5 + j, k) for j, k in enumerate(ins))
                instrs.append([_run_op, args, fills, e.out, note])
            else:
                instrs += [[f, args, fills, d, note] for f, args, fills, d in code[0]]
                where[e.out] = code[1]
        self.out_slot = where.get(plan.out_slot, plan.out_slot)
        steps = []
        for i in plan.back:
            e = plan.entries[i]
            code = backward[i] if forward[i] is not None else None
            steps.append([i, e.out, e.grad_to, code, e.cls.fresh_grads, backward_note(e)])
        keep = {k for k, _ in plan.boundary} | {self.out_slot, self.fns_slot}
        last = {}  # slot -> ("f", instruction index) or ("b", step index)
        for j, (_, _, fills, d, _) in enumerate(instrs):
            for _, k in fills:
                last[k] = ("f", j)
            if d >= 0:
                last.setdefault(d, ("f", j))
        made_in_backward = set()
        for j, step in enumerate(steps):
            code = step[3]
            if code is None:
                continue
            g_slot, _, b_instrs, outs = code
            made_in_backward.add(g_slot)
            for _, _, fills, d in b_instrs:
                for _, k in fills:
                    last[k] = ("b", j)
                if d >= 0:
                    made_in_backward.add(d)
                    last[d] = ("b", j)
            for k in (g_slot, *outs):
                if k >= 0:
                    last[k] = ("b", j)
        clears = [[] for _ in instrs]
        frees = [[] for _ in steps]
        saved = [[] for _ in steps]
        for k, (phase, j) in last.items():
            if k in keep:
                continue
            if phase == "f":
                clears[j].append(k)
            else:
                (frees if k in made_in_backward else saved)[j].append(k)
        self.instrs = tuple((f, args, fills, d, tuple(c), note) for (f, args, fills, d, note), c in zip(instrs, clears))
        self.steps = tuple(
            (i, out, grad_to, None if code is None else _with_clears(code), fresh, tuple(f), tuple(sv), note)
            for (i, out, grad_to, code, fresh, note), f, sv in zip(steps, frees, saved)
        )
        self._arena_in_place(plan)
        self._static_backward(plan)

    # ----------------------------------------------------------------- static backward
    def _static_backward(self, plan):
        """When every op of the backward walk was traced, the walk itself is fixed: which
        gradients meet in which slot, which go out. It is then one list of instructions
        (``backward_instrs``; ``backward_instrs_retained`` keeps the forward's arrays for
        another backward), started from slot ``root_slot`` (the output's gradient, of
        dtype ``root_dtype``), the gradients handed out being ``use_slots``."""
        self.backward_instrs = None
        if not self.steps or any(step[3] is None for step in self.steps):
            return
        self.root_slot = self.n_slots
        self.n_slots += 1
        gradient_of = {plan.out_slot: self.root_slot}  # plan slot -> the slot holding its gradient
        owned, uses, instrs, renamed = set(), [None] * len(plan.uses), [], {}
        made_here = set()
        self.root_dtype = None
        for _, out, grad_to, code, fresh, _, _, note in self.steps:
            source = gradient_of.pop(out, None)
            if source is None:
                continue  # no gradient reaches this op
            g_slot, dtype, b_instrs, outs = code
            if source == self.root_slot:
                self.root_dtype = dtype

            renamed[g_slot] = renamed.get(source, source)  # the gradient is its source's slot
            named = renamed.get
            instrs += [
                (f, args, tuple((i, named(k, k)) for i, k in fills), d, note) for f, args, fills, d, _, _ in b_instrs
            ]
            made_here.update(d for _, _, _, d, _, _ in b_instrs if d >= 0)
            for (kind, k), slot in zip(grad_to, (named(k, k) for k in outs)):
                if slot < 0 or kind == 2:
                    continue
                if kind == 1:
                    if not fresh:  # a gradient that is not a new array is copied before it leaves
                        copy = self._new_slot(made_here)
                        instrs.append((_fresh_copy, [None], ((0, slot),), copy, note))
                        slot = copy
                    uses[k] = slot
                elif k not in gradient_of:
                    gradient_of[k] = slot
                elif k in owned:
                    instrs.append((_accumulate, [None, None], ((0, gradient_of[k]), (1, slot)), -1, note))
                else:  # the engine's rule: the first two gradients summed into an array from the pool
                    summed = self._new_slot(made_here)
                    instrs.append((_add, [None, None], ((0, gradient_of[k]), (1, slot)), summed, note))
                    gradient_of[k] = summed
                    owned.add(k)
        if self.root_dtype is None:
            return
        self.use_slots = tuple(uses)
        keep = set(uses) | {self.root_slot}
        self.backward_instrs = _cleared(instrs, keep, made_here, forward_too=True)
        self.backward_instrs_retained = _cleared(instrs, keep, made_here, forward_too=False)

    def _new_slot(self, made_here):
        self.n_slots += 1
        made_here.add(self.n_slots - 1)
        return self.n_slots - 1

    # ----------------------------------------------------------------- arena
    def _arena_in_place(self, plan):
        """Small arrays nothing outside the step ever sees come from an arena the run takes
        and its graph gives back: no allocation. The arena's arrays go into slots
        ``arena_base`` on, in one assignment at the start of a run; the instructions that
        made them are dropped."""
        escapes = _escaping_slots(plan, self)
        self.arena_specs, self.spare, rename = [], [], {}
        code_instrs = [step[3][2] for step in self.steps if step[3] is not None]
        for instrs in (self.instrs, *code_instrs):
            for f, args, _, d, _, _ in instrs:
                if f is np.empty and d not in escapes:
                    rename[d] = self.n_slots + len(self.arena_specs)
                    self.arena_specs.append((args[0], args[1]))
        self.arena_base = self.n_slots
        self.n_slots += len(self.arena_specs)
        arena = set(rename.values())

        def rewrite(instrs):
            out = []
            for f, args, fills, d, clears, note in instrs:
                if d in rename and f is np.empty:
                    continue
                fills = tuple((i, rename.get(k, k)) for i, k in fills)
                clears = tuple(k for k in (rename.get(k, k) for k in clears) if k not in arena)
                out.append((f, args, fills, rename.get(d, d), clears, note))
            return tuple(out)

        self.instrs = rewrite(self.instrs)
        steps = []
        for step in self.steps:
            code = step[3]
            if code is not None:
                g_slot, dtype, instrs, outs = code
                code = (g_slot, dtype, rewrite(instrs), tuple(rename.get(k, k) for k in outs))
            frees = tuple(k for k in step[5] if k not in rename)
            saved = tuple(k for k in step[6] if k not in rename)
            steps.append(step[:3] + (code, step[4], frees, saved, step[7]))
        self.steps = tuple(steps)

    def take_arena(self):
        try:
            return self.spare.pop()
        except IndexError:
            return [np.empty(shape, dtype) for shape, dtype in self.arena_specs]

    def give_back(self, arena):
        if len(self.spare) < _SPARE_ARENAS:
            self.spare.append(arena)


_SPARE_ARENAS = 2  # more only matter when graphs pile up


class _Classes:
    """Union-find over slots: the arrays that may be one another's (views, gradients
    handed on)."""

    def __init__(self):
        self.parent = {}

    def find(self, k):
        while self.parent.get(k, k) != k:
            k = self.parent[k]
        return k

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def _escaping_slots(plan, program):
    """The slots whose arrays may be seen outside the run or outlive it: the output, the
    gradients handed to the engine, what an op running as its Function receives (it may
    keep or return it), and every view or gradient flow of those."""
    classes, outside = _Classes(), {program.out_slot}
    for f, _, fills, d, _, _ in program.instrs:
        if f is _reshape:
            classes.union(d, fills[0][1])
        elif f is _run_op:
            outside.update(k for pos, k in fills if pos > 4)  # its inputs
            outside.add(d)
    producer = {e.out: i for i, e in enumerate(plan.entries)}
    step_of = {step[0]: step for step in program.steps}
    contributions = {}  # plan slot -> [(entry index, input position)], traced steps only
    from_ops = set()  # plan slots an op running as its Function also hands a gradient to
    made = {d for f, _, _, d, _, _ in program.instrs if d >= 0}
    for step in program.steps:
        i, _, grad_to, code = step[:4]
        if code is not None:
            for f, _, fills, d, _, _ in code[2]:
                made.add(d)
                if f is _reshape:
                    classes.union(d, fills[0][1])
        for pos, (kind, k) in enumerate(grad_to):
            if code is None:
                if kind == 0:
                    from_ops.add(k)
            elif kind == 1:  # handed to the engine
                outside.add(code[3][pos])
            elif kind == 0:
                contributions.setdefault(k, []).append((i, pos))
    for k, contributors in contributions.items():
        if len(contributors) > 1 and k not in from_ops:
            continue  # summed into an array from the pool: each contribution is only read
        receiver = step_of.get(producer.get(k))
        for i, pos in contributors:
            out_slot = step_of[i][3][3][pos]
            if receiver is None or receiver[3] is None:
                outside.add(out_slot)  # an op running as its Function receives it
            else:
                classes.union(out_slot, receiver[3][0])  # it is that step's gradient
    roots = {classes.find(k) for k in outside if k >= 0}
    return {k for k in made | set(classes.parent) if classes.find(k) in roots}


def _fresh_copy(a):
    return np.array(a, order="C", copy=True)


def _accumulate(dst, src):
    kernels.accumulate(dst, np.ascontiguousarray(src, dtype=dst.dtype))


def _cleared(instrs, keep, made_here, forward_too):
    """``instrs`` in run_instructions' form, each letting go of the slots no later one
    reads (the forward's arrays too when ``forward_too``; never those in ``keep``)."""
    last = {}
    for j, (_, _, fills, d, _) in enumerate(instrs):
        for _, k in fills:
            last[k] = j
        if d >= 0:
            last.setdefault(d, j)
    clears = [[] for _ in instrs]
    for k, j in last.items():
        if k not in keep and (forward_too or k in made_here):
            clears[j].append(k)
    return tuple((f, args, fills, d, tuple(c), note) for (f, args, fills, d, note), c in zip(instrs, clears))


def _with_clears(code):
    """A traced backward's instructions in run_instructions' form (nothing cleared inside:
    the walk lets go of the op's slots once its gradients are handed on)."""
    g_slot, dtype, instrs, outs = code
    return g_slot, dtype, tuple((f, args, fills, d, (), None) for f, args, fills, d in instrs), outs
