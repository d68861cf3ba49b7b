"""Gradient hooks on tensors (``Tensor.register_hook``, ``Tensor.retain_grad``) and the
handle every ``register_*hook`` returns.

PyTorch's semantics: a tensor's hooks run in the order they were registered, each on the
gradient with respect to that tensor, and may replace it by returning a new one; a
retained gradient (``retain_grad``) is stored after all of them, in ``.grad``, adding up
over backward calls. Where the hooks live follows where the gradient is complete:

- on a non-leaf tensor, the node that made it (``Function.grad_hooks``): the engine
  (``kernels.backward_walk``) runs them on the node's gathered output gradient before
  calling the node's backward, so what they return is what flows on;
- on a leaf, the tensor itself (``Tensor._hooks``): a leaf may receive several
  contributions, so the engine hands them to ``gather`` and ``autograd.backward`` calls
  ``flush_leaves`` after the walk, which runs the hooks once on their sum and then
  accumulates the result into ``.grad``, as PyTorch's AccumulateGrad does.

A leaf's post-accumulate-grad hooks (``Tensor.register_post_accumulate_grad_hook``) live in
the same ``TensorHooks``; ``autograd.backward`` calls them once the leaf's ``.grad`` is final
(see ``autograd._walk_calling_post_accumulate_grad_hooks``).
"""

import itertools
import threading
import weakref

import numpy as np

_ids = itertools.count()


class RemovableHandle:
    """What ``register_*hook`` returns: ``remove()`` takes the hook out (a second call does
    nothing); usable as a context manager that removes the hook on exit."""

    def __init__(self, hooks_dict, *extra_dicts, on_remove=None):
        self.id = next(_ids)
        self._dicts = [weakref.ref(hooks_dict)] + [weakref.ref(d) for d in extra_dicts]
        self._on_remove = on_remove  # called once, when remove() takes a hook out

    def remove(self):
        removed = False
        for ref in self._dicts:
            d = ref()
            if d is not None and d.pop(self.id, None) is not None:
                removed = True
        if removed and self._on_remove is not None:
            self._on_remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _HookDict(dict):
    """A dict that a weakref can point at (plain dicts cannot be weakly referenced)."""


def _checked(name, grad, result):
    """The array of a hook's return value, which must keep the gradient's shape and dtype."""
    data = getattr(result, "_data", None)
    if data is None:
        raise TypeError(f"hook {name!r} returned a {type(result).__name__}; a hook returns a Tensor or None")
    if data.shape != grad.shape:
        raise RuntimeError(
            f"hook {name!r} has changed the size of value: it returned shape "
            f"{tuple(data.shape)}, the gradient has shape {tuple(grad.shape)}"
        )
    if data.dtype != grad.dtype:
        raise RuntimeError(
            f"hook {name!r} has changed the type of value: it returned {data.dtype}, the gradient is {grad.dtype}"
        )
    return data


class TensorHooks:
    """The gradient hooks of one tensor, and whether its gradient is retained."""

    __slots__ = ("hooks", "retained", "pending", "post_accumulate")

    def __init__(self):
        self.hooks = _HookDict()
        self.retained = None  # non-leaf only: a weak reference to the tensor that keeps .grad
        self.pending = None  # leaf only: the sum of this backward's contributions so far
        self.post_accumulate = _HookDict()  # leaf only: hook(tensor) once .grad is final

    def add(self, hook):
        handle = RemovableHandle(self.hooks)
        self.hooks[handle.id] = hook
        return handle

    def apply(self, grad):
        """Run the hooks in order on ``grad`` (an array); the gradient they leave."""
        if self.hooks:
            from .tensor import Tensor

            for hook in list(self.hooks.values()):
                result = hook(Tensor._from_op(grad, None))
                if result is not None:
                    grad = _checked(getattr(hook, "__name__", repr(hook)), grad, result)
        return grad

    def run(self, grad):
        """A non-leaf's output gradient: hooks, then the retained copy, then on to backward."""
        grad = self.apply(grad)
        tensor = self.retained() if self.retained is not None else None
        if tensor is not None:
            _accumulate_grad(tensor, grad)
        return grad

    def gather(self, leaf, grad):
        """One contribution to a hooked leaf's gradient; the hooks run on the sum in flush_leaves."""
        if self.pending is None:
            self.pending = np.array(grad, dtype=leaf._data.dtype, order="C", copy=True)
            _pending_leaves().append(leaf)
        else:
            self.pending += grad


def _accumulate_grad(tensor, grad):
    from .tensor import Tensor

    if tensor.grad is None:
        tensor.grad = Tensor._from_op(np.array(grad, dtype=tensor._data.dtype, order="C", copy=True), None)
    else:
        tensor.grad._data += grad


class _Pending(threading.local):
    leaves = None


_pending = _Pending()


def _pending_leaves():
    if _pending.leaves is None:
        _pending.leaves = []
    return _pending.leaves


def flush_leaves():
    """After a backward walk: run each hooked leaf's hooks on its summed gradient, in the
    order the leaves first received one, and accumulate the results into ``.grad``."""
    leaves, _pending.leaves = _pending.leaves, None
    gathered = []
    for leaf in leaves or ():  # taken first: a hook that raises leaves nothing half-gathered
        if leaf._hooks.pending is not None:  # None: flushed already by flush_leaf
            gathered.append((leaf, leaf._hooks.pending))
            leaf._hooks.pending = None
    for leaf, grad in gathered:
        _accumulate_grad(leaf, leaf._hooks.apply(grad))


def flush_leaf(leaf):
    """Run one hooked leaf's gradient hooks on what it gathered so far and accumulate the
    result (before its post-accumulate-grad hooks see ``.grad``)."""
    grad, leaf._hooks.pending = leaf._hooks.pending, None
    if grad is not None:
        _accumulate_grad(leaf, leaf._hooks.apply(grad))


def discard_pending():
    """A backward walk that raised: forget the gathered leaf gradients."""
    leaves, _pending.leaves = _pending.leaves, None
    for leaf in leaves or ():
        leaf._hooks.pending = None


def register_hook(tensor, hook):
    """``Tensor.register_hook``: see the module docstring."""
    if not callable(hook):
        raise TypeError(f"register_hook: expected a callable, got {type(hook).__name__}")
    if not tensor._requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    return _hooks_of(tensor).add(hook)


class _LiveCount:
    """How many post-accumulate-grad hooks are registered and not removed: while it is 0,
    backward runs the chain-rule loop in one call."""

    n = 0


live_post_accumulate = _LiveCount()


def _one_fewer_post_accumulate():
    live_post_accumulate.n -= 1


def register_post_accumulate_grad_hook(tensor, hook):
    """``Tensor.register_post_accumulate_grad_hook``: ``hook(tensor)`` once per backward
    pass, after the leaf's ``.grad`` has gathered every contribution of that pass."""
    if tensor._ctx is not None:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    if not tensor._requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    if not callable(hook):
        raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
    post = _hooks_of(tensor).post_accumulate
    handle = RemovableHandle(post, on_remove=_one_fewer_post_accumulate)
    post[handle.id] = hook
    live_post_accumulate.n += 1
    return handle


def run_post_accumulate_grad_hooks(leaf):
    for hook in list(leaf._hooks.post_accumulate.values()):
        hook(leaf)


def retain_grad(tensor):
    """``Tensor.retain_grad``: a non-leaf keeps its gradient in ``.grad`` (a leaf always does)."""
    if not tensor._requires_grad:
        raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
    if tensor._ctx is not None:
        _hooks_of(tensor).retained = weakref.ref(tensor)


def retains_grad(tensor):
    hooks = tensor._ctx.grad_hooks if tensor._ctx is not None else None
    return hooks is not None and hooks.retained is not None


def _hooks_of(tensor):
    owner = tensor._ctx
    if owner is None:
        if tensor._hooks is None:
            tensor._hooks = TensorHooks()
        return tensor._hooks
    if owner.grad_hooks is None:
        owner.grad_hooks = TensorHooks()
    return owner.grad_hooks
