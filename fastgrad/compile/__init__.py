"""``fastgrad.compile(model)``: torch.compile's name and contract on fastgrad's ops.

The returned module behaves as the original (it holds it as ``_orig_mod``, as PyTorch's
does). Its first call for each input signature runs the model eagerly while recording
every op (compile/capture.py); later calls whose guards hold (compile/guards.py) replay
the recorded plan (compile/plan.py): the same Functions' forward and backward, without
the Python of the user's forward, the layers' argument checks, per-op Tensors or the
engine's graph sort. A failed guard captures anew. What cannot be captured runs eagerly,
counted in ``compile_stats``; ``fullgraph=True`` raises ``CaptureError`` instead.

Plans are cached per compiled module, at most ``cache_size_limit`` of them (the default,
8, is ``fastgrad.compile.cache_size_limit``, settable; or pass ``cache_size_limit=`` or
set the attribute on a compiled module); the least recently used one is dropped first.
See docs/fast-path.md.
"""

from collections import OrderedDict

from ..autograd import _anomaly, _capture
from ..nn.module import Module
from .capture import CaptureError, Recorder, watch_value_reads
from .guards import ModuleGuard, call_key, has_hooks

__all__ = ["CaptureError", "CompiledModule", "compile"]

_EAGER = None  # a cached "this signature runs eagerly" (after a graph break)
_STATE_RETRIES = 2


class CompiledModule(Module):
    """A module whose calls replay captured plans (see the package docstring)."""

    def __init__(self, model, fullgraph=False, cache_size_limit=None):
        super().__init__()
        self._orig_mod = model
        d = self.__dict__
        d["fullgraph"] = bool(fullgraph)
        d["cache_size_limit"] = compile.cache_size_limit if cache_size_limit is None else int(cache_size_limit)
        d["_plans"] = OrderedDict()  # call key -> [(ModuleGuard, Plan or _EAGER)]
        d["compile_stats"] = {"captures": 0, "replays": 0, "eager_calls": 0, "graph_breaks": []}

    def __getattr__(self, name):  # everything else is the original module's
        orig = self.__dict__.get("_orig_mod")
        if orig is None:
            raise AttributeError(name)
        return getattr(orig, name)

    def forward(self, *args, **kwargs):
        model = self._orig_mod
        stats = self.compile_stats
        key = None if (kwargs or _anomaly.enabled or _capture.recorder is not None) else call_key(args)
        if key is None:
            stats["eager_calls"] += 1
            return model(*args, **kwargs)
        cached = self._plans.get(key)
        if cached is not None:
            self._plans.move_to_end(key)
            for guard, plan in cached:
                if guard.holds():
                    if plan is _EAGER:
                        stats["eager_calls"] += 1
                        return model(*args)
                    stats["replays"] += 1
                    return plan.run(args)
        return self._capture(key, args)

    def _capture(self, key, args):
        model, stats = self._orig_mod, self.compile_stats
        guard = ModuleGuard(model)
        recorder = Recorder(model, args, self.fullgraph)
        if has_hooks(model):
            recorder.graph_break("a module has hooks registered")
            output = model(*args)
            counters = []
        else:
            counters_before = _counter_values(model)
            _capture.recorder = recorder
            try:
                with watch_value_reads():
                    output = model(*args)
            finally:
                _capture.recorder = None
            counters = _changed_counters(model, counters_before, recorder)
        plan = recorder.plan(output, guard, counters)
        retries = self.__dict__.setdefault("_retries", {})
        if plan is None and recorder.changed_state and retries.get(key, 0) < _STATE_RETRIES:
            # a forward that set module state on its first call (a cache) is captured
            # again on the next; one that does so on every call stays eager
            retries[key] = retries.get(key, 0) + 1
            stats["eager_calls"] += 1
            return output
        if plan is None:
            stats["eager_calls"] += 1
            if recorder.broken not in stats["graph_breaks"]:
                stats["graph_breaks"].append(recorder.broken)
        else:
            stats["captures"] += 1
        # plans whose guards fail now stay (train() and eval() take turns); the bound on
        # the cache drops the least recently used
        entries = self._plans.setdefault(key, [])
        entries.append((ModuleGuard(model) if plan is None else guard, plan if plan is not None else _EAGER))
        self._plans.move_to_end(key)
        while sum(len(v) for v in self._plans.values()) > max(1, self.cache_size_limit):
            oldest = next(iter(self._plans))
            self._plans[oldest].pop(0)
            if not self._plans[oldest]:
                del self._plans[oldest]
        return output

    def extra_repr(self):
        return f"fullgraph={self.fullgraph}, cache_size_limit={self.cache_size_limit}"


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


def compile(
    model=None,
    *,
    fullgraph=False,
    dynamic=None,
    backend=None,
    mode=None,
    options=None,
    disable=False,
    cache_size_limit=None,
):
    """As torch.compile for a Module: returns a CompiledModule (or ``model`` itself when
    ``disable``). ``dynamic``, ``backend``, ``mode`` and ``options`` are accepted for
    compatibility and change nothing. Used as a decorator without a model, returns one."""
    if model is None:
        return lambda m: compile(
            m,
            fullgraph=fullgraph,
            dynamic=dynamic,
            backend=backend,
            mode=mode,
            options=options,
            disable=disable,
            cache_size_limit=cache_size_limit,
        )
    if not isinstance(model, Module):
        raise TypeError(f"fastgrad.compile: expected a fastgrad.nn.Module, got {type(model).__name__}")
    if disable:
        return model
    return CompiledModule(model, fullgraph=fullgraph, cache_size_limit=cache_size_limit)


compile.cache_size_limit = 8  # plans kept per compiled module unless it is given its own
