"""A captured forward and backward, held as data, and the loops that replay them.

A ``Plan`` is a list of ``Entry`` records, one per op the captured forward ran: the op's
Function class (the same class the eager op applies, so the same Step objects and
kernels run), the slots its input arrays come from, its keyword parameters, which inputs
want a gradient, and the slot its output goes to. Slots are positions in one list of
arrays: the boundary slots are filled at each call from the call's input tensors and the
module's parameters and buffers; every other slot is written by one entry.

``Plan.run`` walks the entries once, calling each op's ``forward`` on its slots' arrays;
when a gradient is wanted the output's graph node is one ``Replay`` holding the ops'
Function objects. Its ``backward`` walks them in the order the eager engine would (the
topological order of the captured graph), gathering gradients per slot exactly as
``kernels.backward_walk`` does per node, so values and gradients are bit-identical to
the eager run. Gradients for the boundary tensors go out once per use, in the order the
eager walk would deliver them, and the engine adds them into ``.grad`` as it always does
(hooks on those tensors fire there).

The first replays of a plan are also traced (compile/program.py): from then on the ops
whose kernel calls a trace could place run as those calls (a ``Program``), forward and
backward, and the others as their Function, in the same order on the same arrays.
"""

import numpy as np

from .. import kernels
from ..autograd import Function, _capture
from ..tensor import Tensor
from .program import Program, Tracer, Untraceable, backward_note, tracing

# how an input of an entry is gathered in backward: into a slot, out as a boundary use, or
# not (the engine's GRAD_TO_SLOT, GRAD_TO_USE, GRAD_TO_NONE: kernels.replay_backward)
SLOT, USE, SKIP = 0, 1, 2


class Entry:
    __slots__ = ("cls", "frees", "grad_to", "ins", "needs", "out", "params", "site", "wants_grad")

    def __init__(self, cls, ins, params, needs, out, site):
        self.cls, self.ins, self.params, self.needs, self.out, self.site = cls, ins, params, needs, out, site
        self.grad_to = ()  # per input: (SLOT, slot) | (USE, index into Plan.uses) | (SKIP, None)
        self.frees = ()  # slots no later entry reads: dropped once this one ran
        self.wants_grad = True in needs


class Plan:
    """Entries over slots; ``boundary``: (slot, source) with source ("arg", i) or
    ("tensor", t); ``back``: entry indices in backward order; ``uses``: the boundary
    source of each gradient the Replay node hands to the engine."""

    def __init__(self, n_slots, boundary, entries, out_slot, back, uses, counters):
        self.n_slots, self.boundary, self.entries = n_slots, boundary, entries
        self.out_slot, self.back, self.uses, self.counters = out_slot, back, uses, counters
        self.wants_grad = bool(uses)
        # an intermediate array is let go after its last reader, as the eager forward lets
        # go of a Tensor nobody holds: the pool can then hand it to a later op
        last = {}
        for i, e in enumerate(entries):
            for k in e.ins:
                last[k] = i
        boundary_slots = {k for k, _ in boundary}
        for i, e in enumerate(entries):
            e.frees = tuple(k for k in set(e.ins) if last[k] == i and k != out_slot and k not in boundary_slots)
        # the module arrays ops take as parameters (BatchNorm's running statistics): the
        # same arrays at every call (ModuleGuard), constants of a traced program
        self.constants = [v for e in entries for v in e.params.values() if isinstance(v, np.ndarray)]
        self.arg_slots = [(slot, ref) for slot, (kind, ref) in boundary if kind == "arg"]
        self.tensor_slots = [(slot, ref) for slot, (kind, ref) in boundary if kind != "arg"]
        # the backward walk when every entry runs as its op (kernels.replay_backward)
        self.op_steps = tuple(
            (i, entries[i].out, entries[i].grad_to, None, False, (), (), backward_note(entries[i])) for i in back
        )
        self.program = None  # the traced Program, once a trace succeeded
        self.traces_left = _TRACES
        self.run_as_ops = set()  # entries a trace could not follow to the end: run as ops

    def run(self, args):
        program = self.program
        if program is not None:
            return self._run_program(program, args)
        if self.traces_left > 0:
            self.traces_left -= 1
            return self._run_ops(args, self._tracer(args))
        return self._run_ops(args, None)

    def _tracer(self, args):
        """A Tracer that knows the boundary arrays of this call, or None when two of them
        share memory (a later call could give them apart, and a trace could not tell
        which slot an array came from)."""
        tracer = Tracer(self.n_slots, self.constants)
        owners = set()
        for slot, (kind, ref) in self.boundary:
            a = args[ref]._data if kind == "arg" else ref._data
            owner = id(a if a.base is None else a.base)
            if owner in owners:
                self.traces_left = 0
                return None
            owners.add(owner)
            tracer.know(a, slot)
        return tracer

    def _boundary_values(self, n_slots, args):
        vals = [None] * n_slots
        for slot, i in self.arg_slots:
            vals[slot] = args[i]._data
        for slot, t in self.tensor_slots:
            vals[slot] = t._data
        for t in self.counters:  # a counter buffer the forward increments in Python
            t._data += 1
        return vals

    def _run_ops(self, args, tracer):
        """Each entry's op, forward; traced when ``tracer``."""
        vals = self._boundary_values(self.n_slots, args)
        fns = []
        keep = fns.append if self.wants_grad else _drop  # without a backward, what a Function saved goes at once
        codes = []
        with tracing(tracer) if tracer is not None else _NO_TRACE:
            for i, e in enumerate(self.entries):
                fn = e.cls()
                fn.needs_input_grad = e.needs
                traced = tracer is not None and e.cls.replays_kernels and i not in self.run_as_ops
                if traced:
                    tracer.begin()
                try:
                    out = vals[e.out] = fn.forward(*[vals[k] for k in e.ins], **e.params)
                except Exception as exc:
                    exc.add_note(f"fastgrad.compile: raised by {e.cls.__name__} replayed from {e.site}")
                    raise
                if tracer is not None:
                    codes.append(_forward_code(tracer, e, out) if traced else None)
                    if codes[-1] is None and isinstance(out, np.ndarray):
                        tracer.know(out, e.out)
                for k in e.frees:
                    vals[k] = None
                keep(fn)
        out = vals[self.out_slot]
        if not self.wants_grad:
            if tracer is not None:
                self._install(tracer, codes, [None] * len(codes))
            return Tensor._from_op(out, None)
        node = Replay()
        node.plan, node.fns = self, fns
        if tracer is not None:
            node.tracer, node.codes = tracer, codes
        node.parents = tuple([args[ref] if kind == "arg" else ref for kind, ref in self.uses])
        node.needs_input_grad = (True,) * len(self.uses)
        return Tensor._from_op(out, node)

    def _run_program(self, program, args):
        """The traced program, forward: one run of its instructions."""
        vals = self._boundary_values(program.n_slots, args)
        fns = vals[program.fns_slot] = [None] * len(self.entries) if self.wants_grad else None
        arena = program.take_arena()
        vals[program.arena_base : program.arena_base + len(arena)] = arena
        kernels.run_instructions(program.instrs, vals)
        out = vals[program.out_slot]
        if not self.wants_grad:
            program.give_back(arena)  # nothing of the run outlives it but its output
            return Tensor._from_op(out, None)
        node = Replay()
        node.plan, node.fns, node.program, node.vals, node.arena = self, fns, program, vals, arena
        node.parents = tuple([args[ref] if kind == "arg" else ref for kind, ref in self.uses])
        node.needs_input_grad = (True,) * len(self.uses)
        return Tensor._from_op(out, node)

    def _install(self, tracer, forward, backward):
        """Make the traced program this plan's, or note the entries a trace could not follow
        to the end (they run as ops in the next trace)."""
        missing = {
            i
            for i in self.back
            if forward[i] is not None and backward[i] is None and self.wants_grad and self.entries[i].wants_grad
        }
        if missing:
            self.run_as_ops |= missing
            return
        if any(code is not None for code in forward):
            self.program = Program(self, tracer.n_slots, forward, backward)


def _drop(fn):
    pass


class Replay(Function):
    """The graph node of a replayed forward: its backward replays the captured backward."""

    fresh_grads = True  # a gradient from an op that does not promise fresh arrays is copied

    def backward(self, grad):
        plan = self.plan
        program = self.__dict__.get("program")
        tracer = self.__dict__.get("tracer")
        retain = _capture.retain_graph
        n_uses = len(plan.uses)
        if not grad.flags.c_contiguous:  # (a broadcast from a sum) every op would copy it: once here
            grad = np.ascontiguousarray(grad)
        if program is not None and program.backward_instrs is not None:  # a fixed walk
            vals = self.vals
            if not grad.flags.c_contiguous or grad.dtype != program.root_dtype:
                grad = np.ascontiguousarray(grad, dtype=program.root_dtype)
            vals[program.root_slot] = grad
            kernels.run_instructions(program.backward_instrs_retained if retain else program.backward_instrs, vals)
            return tuple([None if k is None else vals[k] for k in program.use_slots])
        if program is not None:
            return kernels.replay_backward(
                program.steps, self.fns, self.vals, grad, plan.n_slots, plan.out_slot, n_uses, retain, None
            )
        if tracer is None:
            return kernels.replay_backward(
                plan.op_steps, self.fns, None, grad, plan.n_slots, plan.out_slot, n_uses, retain, None
            )
        forward, backward = self.codes, [None] * len(plan.entries)

        def traced(i, fn, g):  # an entry whose forward was traced: trace its backward
            if forward[i] is None:
                return fn.backward(g)
            input_grads, backward[i] = _traced_backward(tracer, fn, g)
            return input_grads

        out = kernels.replay_backward(
            plan.op_steps, self.fns, None, grad, plan.n_slots, plan.out_slot, n_uses, retain, traced
        )
        self.tracer = None
        plan._install(tracer, forward, backward)
        return out

    def release(self):
        fns = self.__dict__.get("fns") or ()
        for fn in fns:
            if fn is not None:
                fn.release()
        program, arena = self.__dict__.get("program"), self.__dict__.get("arena")
        super().release()
        if arena is not None:  # nothing refers to its arrays any more
            program.give_back(arena)

    def __del__(self):
        # a graph dropped without a backward: nothing else refers to its arena's arrays
        arena = self.__dict__.get("arena")
        if arena is not None:
            self.__dict__["program"].give_back(arena)


_TRACES = 3  # replays of a plan traced before it keeps running its ops


class _NoTrace:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_TRACE = _NoTrace()


def _forward_code(tracer, e, out):
    """(instructions, output slot) of the entry just run, or None."""
    if tracer.instrs is not None:
        try:
            out_slot = tracer.place(out)
            if out_slot is None:
                raise Untraceable("an output that is a module's array")
        except Untraceable as exc:
            tracer.fail(str(exc))
    instrs = tracer.end()
    return None if instrs is None else (tuple(instrs), out_slot)


def _traced_backward(tracer, fn, g):
    """fn.backward(g), traced: (its gradients, (gradient slot, dtype, instructions,
    slot of each gradient or -1)) or (its gradients, None)."""
    with tracing(tracer):
        tracer.begin()
        g_slot = tracer.new_slot()
        tracer.know(g, g_slot)
        input_grads = fn.backward(g)
        outs = []
        if tracer.instrs is not None:
            try:
                for gi in input_grads:
                    slot = -1 if gi is None else tracer.place(gi)
                    if slot is None:
                        raise Untraceable("a gradient that is a module's array")
                    outs.append(slot)
            except Untraceable as exc:
                tracer.fail(str(exc))
        instrs = tracer.end()
    return input_grads, (None if instrs is None else (g_slot, g.dtype, tuple(instrs), tuple(outs)))
