"""What a plan assumed about the module, checked before each replay.

``call_key`` is the part that selects a plan: grad mode, thread count, kernel backend and,
per argument, a tensor's shape, dtype, requires_grad and which earlier argument it is
(the same tensor passed twice), or a plain value itself. ``ModuleGuard`` is the rest:
every sub-module's class and instance attributes (by identity: a replaced forward, a
changed stride, a swapped sub-module, train()/eval() all change one), every parameter's
and buffer's array and requires_grad, and whether any hook is registered. Comparing by
identity is exact for what it sees and errs only towards re-planning.
"""

from .. import _config, kernels
from ..autograd import is_grad_enabled
from ..ops.conv import kernel_home
from ..tensor import Tensor


def call_key(args):
    """The plan-cache key of a call, or None when an argument cannot be keyed."""
    sig = [
        is_grad_enabled(),
        _config.get_num_threads(),
        kernel_home(),  # the backend and SIMD path: their plans and workspaces differ
        _config.are_deterministic_algorithms_enabled(),
    ]
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            first = i
            for j in range(i):
                if args[j] is a:
                    first = j
                    break
            d = a._data
            sig.append((d.shape, d.dtype, a._requires_grad, first))
        else:
            try:
                hash(a)
            except TypeError:
                return None
            sig.append(("value", type(a), a))
    return tuple(sig)


def _hook_containers(module):
    """The module's hook registries (attributes named *hook*), present or not yet made."""
    return [v for k, v in module.__dict__.items() if "hook" in k and isinstance(v, (dict, list))]


def has_hooks(module, skip_root=False):
    """Whether ``module`` or a module inside it (only those when ``skip_root``) has hooks."""
    return any(
        bool(v)
        for m in module.modules()
        if not (skip_root and m is module)
        for k, v in m.__dict__.items()
        if "hook" in k and v is not None and not isinstance(v, (bool, int, str))
    )


def node_has_hooks(node):
    """Whether the tensor a graph node made carries gradient hooks or retains its gradient
    (a non-leaf's hooks are kept on the node that made it: fastgrad/hooks.py)."""
    hooks = node.grad_hooks
    return hooks is not None and (bool(hooks.hooks) or hooks.retained is not None)


class ModuleGuard:
    def __init__(self, root, skip_root_hooks=False):
        mods = list(root.modules())
        self.modules = [(m, type(m), m.__dict__, tuple(m.__dict__.values())) for m in mods]
        # the hook registries that must stay empty (the root's not, when its own hooks
        # run outside the plan: PlanCache's root_hooks_outside)
        self.hooks = [c for m in mods if not (skip_root_hooks and m is root) for c in _hook_containers(m)]
        self.tensors = []
        for m in mods:
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None:
                    self.tensors.append((t, t._data, t._requires_grad))
        self.tensor_objects = [t for t, _, _ in self.tensors]
        self.arrays = [a for _, a, _ in self.tensors]
        self.flags = [r for _, _, r in self.tensors]

    def holds(self):
        return kernels.guard_holds(self.modules, self.tensor_objects, self.arrays, self.flags, self.hooks)

    def same_as(self, other):
        """Whether two snapshots saw the same state (a forward that assigned a module
        attribute, or replaced a parameter's array, in Python changed it)."""
        if len(self.modules) != len(other.modules) or len(self.tensors) != len(other.tensors):
            return False
        for (m, c, d, v), (m2, c2, d2, v2) in zip(self.modules, other.modules):
            if m is not m2 or c is not c2 or len(v) != len(v2) or any(a is not b for a, b in zip(v, v2)):
                return False
        return all(t is t2 and a is b and r is r2 for (t, a, r), (t2, b, r2) in zip(self.tensors, other.tensors))
