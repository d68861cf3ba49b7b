"""The plans of one module's calls: what ``fastgrad.compile`` keeps per compiled module, and
what a ``Sequential`` of fastgrad's own layers keeps for itself (nn/layers/container.py).

``PlanCache.call(args)`` picks the plan of the call's key (compile/guards.call_key) whose
guard holds and replays it; a call with no such plan is captured (compile/capture.py):
run eagerly through ``run(model, args, kwargs)`` while its ops are recorded, its result
the call's result, so a first call raises every error the eager module raises. A capture
that meets something it cannot follow leaves an "eager" entry for that key and guard:
later such calls run eagerly without trying again (hooks leave none: they are checked at
every capture, and a guard holds only while no hook is registered). Calls under anomaly
mode, inside another capture or while forward observers are registered always run
eagerly. ``may_capture(model)``, when given, is asked first and returns None or the
reason the call stays eager. ``root_hooks_outside``: ``run`` is the model's forward, whose
own hooks ``Module.__call__`` runs around it (a Sequential's), so only the hooks of the
modules inside it keep a call eager and enter its guard.

At most ``cache_size_limit`` entries are kept; the least recently used key goes first.
Copies of a module (``copy.deepcopy``, pickling) start with an empty cache: a plan's
guard and boundary refer to the modules and tensors it was captured from.
"""

from collections import OrderedDict

from ..autograd import _anomaly, _capture
from ..nn import module as _module
from .capture import Recorder, watch_value_reads
from .guards import ModuleGuard, call_key, has_hooks

_EAGER = None  # a cached "this signature runs eagerly" (after a graph break)
_STATE_RETRIES = 2


class PlanCache:
    def __init__(
        self,
        model,
        run,
        fullgraph=False,
        cache_size_limit=8,
        may_capture=None,
        freezing=False,
        root_hooks_outside=False,
    ):
        self.model, self.run, self.may_capture, self.freezing = model, run, may_capture, bool(freezing)
        self.root_hooks_outside = bool(root_hooks_outside)
        self.fullgraph, self.cache_size_limit = bool(fullgraph), int(cache_size_limit)
        self.plans = OrderedDict()  # call key -> [(ModuleGuard, Plan or _EAGER)]
        self.stats = {"captures": 0, "replays": 0, "eager_calls": 0, "graph_breaks": []}
        self.retries = {}

    def __reduce__(self):  # a copy starts empty (see the module docstring)
        return _empty_cache, (
            self.model,
            self.run,
            self.fullgraph,
            self.cache_size_limit,
            self.may_capture,
            self.freezing,
            self.root_hooks_outside,
        )

    def call(self, args, kwargs=None):
        model, stats = self.model, self.stats
        # anomaly mode checks every op, a capture records them, and forward observers
        # (fastgrad.onnx's recording) see every module's call: all run eagerly
        eager = kwargs or _anomaly.enabled or _capture.recorder is not None or _module._forward_observers
        key = None if eager else call_key(args)
        if key is None:
            stats["eager_calls"] += 1
            return self.run(model, args, kwargs or {})
        cached = self.plans.get(key)
        if cached is not None:
            try:
                self.plans.move_to_end(key)
            except KeyError:  # dropped by another thread's capture just now
                pass
            for guard, plan in cached:
                if guard.holds():
                    if plan is _EAGER:
                        stats["eager_calls"] += 1
                        return self.run(model, args, {})
                    stats["replays"] += 1
                    return plan.run(args)
        return self._capture(key, args)

    def _capture(self, key, args):
        model, stats = self.model, self.stats
        recorder = Recorder(model, args, self.fullgraph)
        recorder.freeze = self.freezing
        skip_root = self.root_hooks_outside
        if has_hooks(model, skip_root):
            # hooks must see every call; no entry is kept, since a guard holds only while
            # no hook is registered and so would let an eager entry outlive the hooks
            recorder.graph_break("a module has hooks registered")
            self._note_break(recorder)
            return self.run(model, args, {})
        guard = ModuleGuard(model, skip_root)
        reason = self.may_capture(model) if self.may_capture is not None else None
        if reason is not None:
            recorder.graph_break(reason)
            output = self.run(model, args, {})
            counters = []
        else:
            counters_before = _counter_values(model)
            _capture.recorder = recorder
            try:
                with watch_value_reads():
                    output = self.run(model, args, {})
            finally:
                _capture.recorder = None
            counters = _changed_counters(model, counters_before, recorder)
        plan = recorder.plan(output, guard, counters)
        if plan is None and recorder.changed_state and self.retries.get(key, 0) < _STATE_RETRIES:
            # a forward that set module state on its first call (a cache) is captured
            # again on the next; one that does so on every call stays eager
            self.retries[key] = self.retries.get(key, 0) + 1
            stats["eager_calls"] += 1
            return output
        if plan is None:
            self._note_break(recorder)
        else:
            stats["captures"] += 1
        # plans whose guards fail now stay (train() and eval() take turns); the bound on
        # the cache drops the least recently used
        entries = self.plans.pop(key, [])
        entries.append((ModuleGuard(model, skip_root) if plan is None else guard, plan if plan is not None else _EAGER))
        self.plans[key] = entries  # the most recently used
        # (snapshots taken in one C call each: another thread's call may move a key meanwhile)
        while sum(map(len, list(self.plans.values()))) > max(1, self.cache_size_limit):
            oldest = next(iter(list(self.plans)))
            entries = self.plans.get(oldest)
            if entries:
                entries.pop(0)
            if not entries:
                self.plans.pop(oldest, None)
        return output

    def _note_break(self, recorder):
        self.stats["eager_calls"] += 1
        if recorder.broken not in self.stats["graph_breaks"]:
            self.stats["graph_breaks"].append(recorder.broken)


def _empty_cache(model, run, fullgraph, cache_size_limit, may_capture, freezing, root_hooks_outside):
    return PlanCache(model, run, fullgraph, cache_size_limit, may_capture, freezing, root_hooks_outside)


def _counter_values(model):
    """Every buffer's value before a capture, to see what the forward changed in Python."""
    return [(t, t._data.copy()) for t in model.buffers()]


def _changed_counters(model, before, recorder):
    """The integer counters the forward incremented by one in Python; any other buffer
    changed outside an op is a graph break."""
    kernel_written = {id(v) for e in recorder.entries for v in e.params.values()}
    counters = []
    for t, old in before:
        if id(t._data) in kernel_written or (t._data.shape == old.shape and (t._data == old).all()):
            continue
        if t._data.ndim == 0 and t._data.dtype.kind == "i" and t._data == old + 1:
            if any(
                getattr(m, "momentum", 0) is None and t is getattr(m, "num_batches_tracked", None)
                for m in model.modules()
            ):
                recorder.graph_break("a BatchNorm with momentum=None computes its factor in Python")
            counters.append(t)
        else:
            recorder.graph_break(f"the forward changed a buffer of shape {tuple(t.shape)} in Python")
    return counters
