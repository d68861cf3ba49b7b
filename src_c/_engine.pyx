# Design: the chain-rule accumulation loop of the backward pass; the twin of
# fastgrad/reference/engine.py (read that first: same algorithm, same names).
# backward_walk is Python-level glue typed for speed (each node's backward is a Python
# method); accumulate is the numeric part: a GIL-free, contiguous `dst += src` loop.
# run_instructions is the loop of a compiled plan's traced program (one Python call per
# kernel call and little else: the arguments are filled in without Python bytecode),
# replay_backward a plan's backward walk;
# guard_holds is the identity check a plan makes before each replay.
# Data layout: flat C-contiguous float32/float64 buffers; no threads (additions are
# memory-bound and the gradients of small nets are far below the ~50 us that pays
# for a parallel region).

from cpython.dict cimport PyDict_Next, PyDict_Size
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM

import numpy as np
cimport numpy as cnp
from cython cimport floating

from fastgrad.ops import buffer_pool

from _checks cimport check_array, check_like

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = ["accumulate", "backward_walk", "guard_holds", "replay_backward", "run_instructions"]


cdef void _add_into_buffer(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] += src[i]


def accumulate(dst, src):
    """dst += src, elementwise and in place.

    dst: IN/OUT, C-contiguous, writable float32/float64 array.
    src: IN, same shape and dtype, C-contiguous.
    """
    _check_accumulate(dst, src)
    if dst.size == 0:
        return
    cdef float[::1] d32
    cdef const float[::1] s32
    cdef double[::1] d64
    cdef const double[::1] s64
    if dst.dtype == np.float32:
        d32, s32 = dst.reshape(-1), src.reshape(-1)
        with nogil:
            _add_into_buffer(&d32[0], &s32[0], d32.shape[0])
    else:
        d64, s64 = dst.reshape(-1), src.reshape(-1)
        with nogil:
            _add_into_buffer(&d64[0], &s64[0], d64.shape[0])


cdef int _check_accumulate(dst, src) except -1:
    """dst: a writable float array; src: one of its dtype and shape."""
    cdef int t = check_array("accumulate", "dst", dst, -1, -1, True)
    check_array("accumulate", "src", src, -1, t, False)
    return check_like("accumulate", "src", src, "dst", dst)


cdef inline _add_into(dst, grad):
    accumulate(dst, np.ascontiguousarray(grad, dtype=dst.dtype))


def backward_walk(list order, object tensor_cls, bint retain_graph):
    """Run the backward pass over ``order`` (Function nodes, output first).

    Same contract as fastgrad.reference.engine.backward_walk.
    """
    cdef object fn, grad, parent, node, g
    cdef bint fresh
    for fn in order:
        grad = fn.grad_out
        if grad is None:
            continue
        if fn.freed:
            raise RuntimeError(
                f"backward through {fn.name()} a second time: its saved tensors were freed "
                "by the first backward; pass retain_graph=True to the first call")
        fn.grad_out = None
        if fn.grad_hooks is not None:  # Tensor.register_hook / retain_grad on fn's output
            grad = fn.grad_hooks.run(grad)
        input_grads = fn.backward(grad)
        fresh = fn.fresh_grads  # its gradients are new arrays: a leaf may keep one as is
        parents = fn.parents
        if not retain_graph:
            fn.release()
        for parent, g in zip(parents, input_grads):
            # Tensor's slots (_requires_grad, _data), not its properties: this runs for
            # every parameter of every step
            if g is None or not parent._requires_grad:
                continue
            node = parent._ctx
            if node is None:
                if parent._hooks is not None and parent._hooks.hooks:  # its hooks see the summed gradient
                    parent._hooks.gather(parent, g)
                    continue
                if parent.grad is None:
                    dtype = parent._data.dtype
                    if not (fresh and g.base is None and (g.dtype is dtype or g.dtype == dtype)):
                        g = np.array(g, dtype=dtype, order="C", copy=True)
                    parent.grad = tensor_cls._from_op(g, None)
                else:
                    _add_into(parent.grad.data, g)
            elif node.grad_out is None:
                node.grad_out = g
                node.grad_owned = False
            elif node.grad_owned:
                _add_into(node.grad_out, g)
            else:
                # an array from the pool: a fresh one would fault on every page
                node.grad_out = buffer_pool.add(node.grad_out, g)
                node.grad_owned = True


def run_instructions(tuple instrs, list vals):
    """Run a traced program's instructions on the slots ``vals``, in order.

    Same contract as fastgrad.reference.engine.run_instructions.
    """
    cdef tuple instr, fills, fill, clears
    cdef list args
    cdef Py_ssize_t destination
    cdef object result, slot
    for instr in instrs:
        fills = <tuple>instr[2]
        try:
            if fills:
                args = list(<list>instr[1])
                for fill in fills:
                    args[<Py_ssize_t>fill[0]] = vals[<Py_ssize_t>fill[1]]
                result = instr[0](*args)
            else:
                result = instr[0](*<list>instr[1])
        except BaseException as exc:
            if instr[5] is not None:
                exc.add_note(instr[5])
            raise
        destination = instr[3]
        if destination >= 0:
            vals[destination] = result
        clears = <tuple>instr[4]
        for slot in clears:
            vals[<Py_ssize_t>slot] = None


# how replay_backward hands an input's gradient on (as fastgrad.reference.engine)
GRAD_TO_SLOT, GRAD_TO_USE, GRAD_TO_NONE = 0, 1, 2
cdef enum:
    _TO_USE = 1
    _TO_NONE = 2


def replay_backward(tuple steps, list fns, list vals, object grad, Py_ssize_t n_slots,
                    Py_ssize_t out_slot, Py_ssize_t n_uses, bint retain, object op_backward):
    """A compiled plan's backward: the tuple of the gradients it hands to the engine.

    Same contract as fastgrad.reference.engine.replay_backward.
    """
    cdef list grads = [None] * n_slots
    cdef list owned = [False] * n_slots
    cdef list out = [None] * n_uses
    cdef tuple step, code, outs, target
    cdef object g, gi, fn, input_grads, frees, saved_frees, summed, k
    cdef Py_ssize_t slot, kind, j
    cdef bint fresh
    grads[out_slot] = grad
    for step in steps:
        slot = step[1]
        g = grads[slot]
        if g is None:
            continue
        grads[slot] = None
        try:
            if step[3] is None:
                fn = fns[<Py_ssize_t>step[0]]
                if op_backward is None:
                    input_grads = fn.backward(g)
                else:
                    input_grads = op_backward(step[0], fn, g)
                fresh = fn.fresh_grads
                if not retain:
                    fn.release()
            else:
                code = <tuple>step[3]
                if not g.flags.c_contiguous or g.dtype != code[1]:
                    g = np.ascontiguousarray(g, dtype=code[1])
                vals[<Py_ssize_t>code[0]] = g
                run_instructions(<tuple>code[2], vals)
                outs = <tuple>code[3]
                input_grads = [None if <Py_ssize_t>k < 0 else vals[<Py_ssize_t>k] for k in outs]
                fresh = step[4]
                for k in <tuple>step[5]:
                    vals[<Py_ssize_t>k] = None
                if not retain:
                    for k in <tuple>step[6]:
                        vals[<Py_ssize_t>k] = None
        except BaseException as exc:
            exc.add_note(step[7])
            raise
        for target, gi in zip(<tuple>step[2], input_grads):
            kind = target[0]
            if gi is None or kind == _TO_NONE:
                continue
            j = target[1]
            if kind == _TO_USE:
                out[j] = gi if fresh else np.array(gi, order="C", copy=True)
            elif grads[j] is None:
                grads[j] = gi
            elif owned[j]:
                _add_into(grads[j], gi)
            else:
                grads[j] = buffer_pool.add(grads[j], gi)
                owned[j] = True
    return tuple(out)


def guard_holds(list modules, list tensors, list arrays, list flags, list hooks):
    """Whether a module is as a plan saw it (all by identity).

    Same contract as fastgrad.reference.engine.guard_holds.
    """
    cdef tuple entry, values
    cdef dict d
    cdef Py_ssize_t pos, i, n = len(tensors)
    cdef PyObject *key
    cdef PyObject *value
    for entry in modules:
        if type(entry[0]) is not entry[1]:
            return False
        d, values = entry[2], entry[3]
        if PyDict_Size(d) != len(values):
            return False
        pos, i = 0, 0
        while PyDict_Next(d, &pos, &key, &value):
            if value != PyTuple_GET_ITEM(values, i):
                return False
            i += 1
    if len(arrays) != n or len(flags) != n:
        return False
    for i in range(n):
        t = tensors[i]
        if t._data is not arrays[i] or t._requires_grad is not flags[i]:
            return False
    for h in hooks:
        if h:
            return False
    return True
