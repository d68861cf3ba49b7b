"""The chain-rule accumulation loop of the backward pass, in pure Python.

Twin of ``src_c/_engine.pyx``. ``backward_walk`` visits the graph's Function nodes in
reverse topological order (the order is computed by ``fastgrad.autograd``), calls each
node's ``backward`` on the gradient gathered for its output, and adds every returned
input gradient into the right place: the producing node's pending gradient, or the
``.grad`` of a leaf tensor. ``accumulate`` is that addition, in place.
``run_instructions`` is the loop a compiled plan's traced program runs
(fastgrad/compile/program.py), ``replay_backward`` a plan's backward (compile/plan.py)
and ``guard_holds`` the check a plan's ModuleGuard makes before each replay
(compile/guards.py).
"""

from operator import is_

import numpy as np

from ..ops import buffer_pool
from ._checks import check_array, check_like

__all__ = ["accumulate", "backward_walk", "guard_holds", "replay_backward", "run_instructions"]


def accumulate(dst, src):
    """dst += src, elementwise and in place.

    dst: IN/OUT, C-contiguous, writable float32/float64 array.
    src: IN, same shape and dtype, C-contiguous.
    """
    _check_accumulate(dst, src)
    flat = dst.reshape(-1)
    acc = flat.tolist()
    add = src.reshape(-1).tolist()
    for i in range(len(acc)):
        acc[i] += add[i]
    flat[:] = acc


def _check_accumulate(dst, src):
    """dst: a writable float array; src: one of its dtype and shape."""
    dtype = check_array("accumulate", "dst", dst, output=True)
    check_array("accumulate", "src", src, None, dtype)
    check_like("accumulate", "src", src, "dst", dst)


def _add_into(dst, grad):
    """Add a gradient into an owned buffer; gradients may arrive as strided views."""
    accumulate(dst, np.ascontiguousarray(grad, dtype=dst.dtype))


def backward_walk(order, tensor_cls, retain_graph):
    """Run the backward pass over ``order`` (Function nodes, output first).

    Each node's ``grad_out`` holds the gradient gathered so far for its output; the
    caller seeds the first one. A gradient that arrives first is kept as it is (it may
    be a view owned by someone else); a second arrival makes an owned sum, and later
    ones are added into it in place, so no array is shared and none is copied twice.
    A leaf's first gradient is copied into its ``.grad``, unless the node declares
    ``fresh_grads`` (every array its backward returns is new and referenced nowhere
    else) and the array is not a view: then the leaf keeps it.
    """
    for fn in order:
        grad = fn.grad_out
        if grad is None:  # nothing flowed here (a branch that needs no gradient)
            continue
        if fn.freed:
            raise RuntimeError(
                f"backward through {fn.name()} a second time: its saved tensors were freed "
                "by the first backward; pass retain_graph=True to the first call"
            )
        fn.grad_out = None
        if fn.grad_hooks is not None:  # Tensor.register_hook / retain_grad on fn's output
            grad = fn.grad_hooks.run(grad)
        input_grads = fn.backward(grad)
        fresh = fn.fresh_grads  # its gradients are new arrays: a leaf may keep one as is
        parents = fn.parents
        if not retain_graph:
            fn.release()
        for parent, g in zip(parents, input_grads):
            if g is None or not parent.requires_grad:
                continue
            node = parent._ctx
            if node is None:  # a leaf: its .grad accumulates across backward calls
                if parent._hooks is not None and parent._hooks.hooks:  # gathered, hooks run once on the sum
                    parent._hooks.gather(parent, g)
                    continue
                if parent.grad is None:
                    if not (fresh and g.base is None and g.dtype == parent.data.dtype):
                        g = np.array(g, dtype=parent.data.dtype, order="C", copy=True)
                    parent.grad = tensor_cls._from_op(g, None)
                else:
                    _add_into(parent.grad.data, g)
            elif node.grad_out is None:
                node.grad_out = g
                node.grad_owned = False
            elif node.grad_owned:
                _add_into(node.grad_out, g)
            else:
                node.grad_out = buffer_pool.add(node.grad_out, g)  # from the pool: fresh pages would fault
                node.grad_owned = True


def run_instructions(instrs, vals):
    """Run a traced program's instructions on the slots ``vals`` (a list), in order.

    instrs: a tuple of (function, arguments, fills, destination, clears, note): call
    ``function`` on the list ``arguments`` with each (position, slot) of the tuple
    ``fills`` taken from ``vals``; store the result in ``vals[destination]`` when
    destination >= 0; then set the slots of the tuple ``clears`` to None. An exception
    gets ``note`` (a string, or None for none) added.
    """
    for function, args, fills, destination, clears, note in instrs:
        if fills:
            args = args.copy()
            for i, slot in fills:
                args[i] = vals[slot]
        try:
            result = function(*args)
        except BaseException as exc:
            if note is not None:
                exc.add_note(note)
            raise
        if destination >= 0:
            vals[destination] = result
        for slot in clears:
            vals[slot] = None


# how replay_backward hands an input's gradient on: into a slot, out as a boundary use, or not
GRAD_TO_SLOT, GRAD_TO_USE, GRAD_TO_NONE = 0, 1, 2


def replay_backward(steps, fns, vals, grad, n_slots, out_slot, n_uses, retain, op_backward):
    """A compiled plan's backward: the tuple of the gradients it hands to the engine.

    steps: per op in backward order, (index, output slot, grad_to, code, fresh, frees,
    saved_frees, note). ``grad_to`` says per input where its gradient goes: (GRAD_TO_SLOT,
    slot), (GRAD_TO_USE, index into the result) or (GRAD_TO_NONE, None). ``code`` is None
    for an op that runs as its Function ``fns[index]`` (``op_backward(index, fn, g)``
    when op_backward is not None, else ``fn.backward(g)``, then ``fn.release()`` unless
    ``retain``), or the traced (gradient slot, dtype, instructions, slot of each input's
    gradient or -1) run on ``vals`` by run_instructions; then the slots ``frees`` are
    let go, and ``saved_frees`` too unless ``retain``. ``fresh``: the op's gradients are
    new arrays (others are copied before they leave). Gradients meeting in a slot are
    summed by the engine's rule: the first is kept, the second is added to it into a new
    array from the pool (buffer_pool.add), later ones into that array. ``grad`` is the output's gradient (slot
    ``out_slot``).
    """
    grads = [None] * n_slots
    owned = [False] * n_slots
    grads[out_slot] = grad
    out = [None] * n_uses
    for index, slot, grad_to, code, fresh, frees, saved_frees, note in steps:
        g = grads[slot]
        if g is None:
            continue
        grads[slot] = None
        try:
            if code is None:
                fn = fns[index]
                input_grads = fn.backward(g) if op_backward is None else op_backward(index, fn, g)
                fresh = fn.fresh_grads
                if not retain:
                    fn.release()
            else:
                g_slot, dtype, instrs, outs = code
                if not g.flags.c_contiguous or g.dtype != dtype:
                    g = np.ascontiguousarray(g, dtype=dtype)
                vals[g_slot] = g
                run_instructions(instrs, vals)
                input_grads = [None if k < 0 else vals[k] for k in outs]
                for k in frees:
                    vals[k] = None
                if not retain:
                    for k in saved_frees:
                        vals[k] = None
        except BaseException as exc:
            exc.add_note(note)
            raise
        for (kind, k), gi in zip(grad_to, input_grads):
            if gi is None or kind == GRAD_TO_NONE:
                continue
            if kind == GRAD_TO_USE:
                out[k] = gi if fresh else np.array(gi, order="C", copy=True)
            elif grads[k] is None:
                grads[k] = gi
            elif owned[k]:
                _add_into(grads[k], gi)
            else:
                grads[k], owned[k] = buffer_pool.add(grads[k], gi), True
    return tuple(out)


def guard_holds(modules, tensors, arrays, flags, hooks):
    """Whether a module is as a plan saw it (all by identity).

    modules: a list of (module, its class, its __dict__, a tuple of the dict's values
    then), each checked for the same class and the same values in the same order;
    tensors, arrays, flags: lists, each tensor's ``_data`` and ``_requires_grad`` checked
    against arrays[i] and flags[i]; hooks: the modules' hook registries, all empty.
    """
    for m, cls, d, values in modules:
        if type(m) is not cls or len(d) != len(values) or not all(map(is_, d.values(), values)):
            return False
    for t, a, r in zip(tensors, arrays, flags):
        if t._data is not a or t._requires_grad is not r:
            return False
    return not any(hooks)
