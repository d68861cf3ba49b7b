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
"""

import numpy as np

from .. import kernels
from ..autograd import Function, _capture
from ..ops import buffer_pool
from ..tensor import Tensor

# how an input of an entry is gathered in backward: into a slot, out as a boundary use, or not
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

    def run(self, args):
        vals = [None] * self.n_slots
        for slot, (kind, ref) in self.boundary:
            vals[slot] = args[ref]._data if kind == "arg" else ref._data
        for t in self.counters:  # a counter buffer the forward increments in Python
            t._data += 1
        fns = []
        keep = fns.append if self.wants_grad else _drop  # without a backward, what a Function saved goes at once
        for e in self.entries:
            fn = e.cls()
            fn.needs_input_grad = e.needs
            try:
                vals[e.out] = fn.forward(*[vals[k] for k in e.ins], **e.params)
            except Exception as exc:
                exc.add_note(f"fastgrad.compile: raised by {e.cls.__name__} replayed from {e.site}")
                raise
            for k in e.frees:
                vals[k] = None
            keep(fn)
        out = vals[self.out_slot]
        if not self.wants_grad:
            return Tensor._from_op(out, None)
        node = Replay()
        node.plan, node.fns = self, fns
        node.parents = tuple([args[ref] if kind == "arg" else ref for kind, ref in self.uses])
        node.needs_input_grad = (True,) * len(self.uses)
        return Tensor._from_op(out, node)


def _drop(fn):
    pass


class Replay(Function):
    """The graph node of a replayed forward: its backward replays the captured backward."""

    fresh_grads = True  # a gradient from an op that does not promise fresh arrays is copied

    def backward(self, grad):
        plan, fns = self.plan, self.fns
        entries = plan.entries
        retain = _capture.retain_graph
        grads = [None] * plan.n_slots
        owned = [False] * plan.n_slots
        grads[plan.out_slot] = grad
        out = [None] * len(plan.uses)
        for i in plan.back:
            e = entries[i]
            g = grads[e.out]
            if g is None:
                continue
            grads[e.out] = None
            fn = fns[i]
            try:
                input_grads = fn.backward(g)
            except Exception as exc:
                exc.add_note(f"fastgrad.compile: raised by the backward of {e.cls.__name__} replayed from {e.site}")
                raise
            fresh = fn.fresh_grads
            if not retain:
                fn.release()
            for (kind, k), gi in zip(e.grad_to, input_grads):
                if gi is None or kind == SKIP:
                    continue
                if kind == USE:
                    out[k] = gi if fresh else np.array(gi, order="C", copy=True)
                elif grads[k] is None:  # the engine's rule, per slot instead of per node
                    grads[k] = gi
                elif owned[k]:
                    kernels.accumulate(grads[k], np.ascontiguousarray(gi, dtype=grads[k].dtype))
                else:
                    summed = buffer_pool.copy(grads[k])
                    kernels.accumulate(summed, np.ascontiguousarray(gi, dtype=summed.dtype))
                    grads[k], owned[k] = summed, True
        return tuple(out)

    def release(self):
        fns = self.__dict__.get("fns") or ()
        for fn in fns:
            fn.release()
        super().release()
