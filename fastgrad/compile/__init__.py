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
set the attribute on a compiled module); the least recently used one is dropped first
(compile/cache.PlanCache, which a Sequential of fastgrad's layers also keeps for itself:
nn/layers/container.py). See docs/fast-path.md.
"""

from ..nn.module import Module
from .cache import PlanCache
from .capture import CaptureError

__all__ = ["CaptureError", "CompiledModule", "compile"]


def _call_module(model, args, kwargs):
    return model(*args, **kwargs)


class CompiledModule(Module):
    """A module whose calls replay captured plans (see the package docstring)."""

    def __init__(self, model, fullgraph=False, cache_size_limit=None, freezing=False):
        super().__init__()
        self._orig_mod = model
        limit = compile.cache_size_limit if cache_size_limit is None else cache_size_limit
        self.__dict__["_cache"] = PlanCache(model, _call_module, fullgraph, limit, freezing=freezing)

    def __getattr__(self, name):  # everything else is the original module's
        orig = self.__dict__.get("_orig_mod")
        if orig is None:
            raise AttributeError(name)
        return getattr(orig, name)

    def forward(self, *args, **kwargs):
        return self._cache.call(args, kwargs)

    @property
    def fullgraph(self):
        return self._cache.fullgraph

    @property
    def cache_size_limit(self):
        return self._cache.cache_size_limit

    @cache_size_limit.setter
    def cache_size_limit(self, value):
        self._cache.cache_size_limit = int(value)

    @property
    def compile_stats(self):
        """captures, replays, eager calls and the reasons of graph breaks, so far."""
        return self._cache.stats

    @property
    def _plans(self):
        return self._cache.plans

    def extra_repr(self):
        return f"fullgraph={self.fullgraph}, cache_size_limit={self.cache_size_limit}"


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
    ``disable``). ``options={"freezing": True}`` (PyTorch's inductor option of that name)
    takes the parameters as constants where a call computes no gradient: an eval-mode
    BatchNorm after a convolution is folded into it (compile/fuse.fold_batchnorms), which
    changes values by rounding, and a parameter changed in place afterwards is not seen
    (assigning a new array is). ``dynamic``, ``backend``, ``mode`` and other ``options``
    are accepted for compatibility and change nothing. Used as a decorator without a
    model, returns one."""
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
    freezing = bool(options.get("freezing", False)) if isinstance(options, dict) else False
    return CompiledModule(model, fullgraph=fullgraph, cache_size_limit=cache_size_limit, freezing=freezing)


compile.cache_size_limit = 8  # plans kept per compiled module unless it is given its own
