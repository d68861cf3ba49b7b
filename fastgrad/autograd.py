"""Reverse-mode automatic differentiation: Function nodes, grad mode, the backward
driver, and gradcheck.

The graph is built as code runs (define-by-run). Every differentiable operation is a
``Function`` subclass whose ``forward`` maps numpy arrays to a numpy array and whose
``backward`` maps the gradient of that output to one gradient per input (or None).
``Function.apply`` runs ``forward`` and, when some input needs a gradient, records the
node on the output tensor (``tensor._ctx``).

``backward`` orders the nodes reachable from the output (an iterative depth-first
search, so a 10,000-op chain needs no recursion) and hands the order to the
chain-rule accumulation loop, ``kernels.backward_walk``: compiled or pure Python,
chosen by ``fastgrad.kernels``.
"""

import contextlib
import os
import threading
import traceback

import numpy as np

from . import hooks, kernels

# --------------------------------------------------------------------------- grad mode


class _GradMode(threading.local):
    enabled = True  # per thread, as in PyTorch: no_grad in one thread never affects another


_grad_mode = _GradMode()


def is_grad_enabled():
    return _grad_mode.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn graph recording on or off, inside a ``with`` block or a decorated function."""

    def __init__(self, mode=True):
        self.mode = bool(mode)
        self.prev = []

    def __enter__(self):
        self.prev.append(_grad_mode.enabled)
        _grad_mode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.prev.pop()
        return False


class no_grad(set_grad_enabled):
    """Disable graph recording, as torch.no_grad: ``with no_grad():``, ``@no_grad()``
    or ``@no_grad``."""

    def __new__(cls, func=None):
        self = super().__new__(cls)
        if callable(func):  # used bare, as @no_grad
            self.__init__()
            return self(func)
        return self

    def __init__(self, func=None):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


# --------------------------------------------------------------------------- capture


class _Capture(threading.local):
    # a fastgrad.compile recorder while it captures a forward on this thread, else None:
    # Function.apply tells it every op it runs
    recorder = None
    # whether the backward running on this thread keeps its graph (read by a replayed
    # plan, whose inner nodes are released as the walk passes them)
    retain_graph = False


_capture = _Capture()


# --------------------------------------------------------------------------- Function


class Function:
    """One node of the graph. Subclasses define ``forward`` and ``backward`` side by side.

    ``forward(self, *arrays, **params)`` returns the output array and saves on ``self``
    what ``backward`` will need. ``backward(self, grad)`` returns a tuple with one entry
    per input: its gradient (same shape and dtype as the input) or None.
    ``self.needs_input_grad[i]`` says whether input i wants a gradient, so work for
    inputs that need none can be skipped.

    A plan of ``fastgrad.compile`` replays ``forward`` and ``backward`` of the same class
    on its own arrays (fastgrad/compile/plan.py): whatever forward needs that depends on
    array values or random state is made in forward, never by the op's wrapper.
    """

    # Engine state (read and written by kernels.backward_walk):
    #   parents     the input Tensors, in forward's argument order
    #   grad_out    the gradient gathered so far for this node's output, or None
    #   grad_owned  True once grad_out is an array this node may add into in place
    #   freed       True after a backward without retain_graph released saved state
    #   fresh_grads True when every array backward returns is newly allocated and kept
    #               nowhere else, so a leaf's .grad may be that array itself (no copy)
    #   grad_hooks  the output tensor's hooks (fastgrad.hooks.TensorHooks: register_hook,
    #               retain_grad), run on grad_out before backward; None when it has none
    grad_out = None
    grad_hooks = None
    fresh_grads = False
    takes_step = False  # forward accepts step= (its Step object, reused by a replayed plan)
    # forward and backward write arrays only through fastgrad.kernels and arrays from the
    # buffer pool, so a compiled plan may replay their traced kernel calls instead
    # (fastgrad/compile/program.py); numpy writing into an array would escape a trace
    replays_kernels = False
    grad_owned = False
    freed = False
    parents = ()
    needs_input_grad = ()

    @classmethod
    def apply(cls, *tensors, **params):
        fn = cls()
        # the slots, not the properties: this runs once per op of every step
        if _grad_mode.enabled:
            needs = tuple([t._requires_grad for t in tensors])
            requires_grad = True in needs
        else:
            needs = (False,) * len(tensors)
            requires_grad = False
        fn.needs_input_grad = needs
        out = fn.forward(*[t._data for t in tensors], **params)
        if _anomaly.enabled:
            _check_forward(fn, tensors, out)
        if requires_grad:
            fn.parents = tensors
            result = _tensor_cls._from_op(out, fn)
        else:
            result = _tensor_cls._from_op(out, None)
        recorder = _capture.recorder
        if recorder is not None:
            recorder.op(fn, tensors, params, needs, result)
        return result

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop saved arrays and inputs once backward is done (no retain_graph)."""
        self.__dict__.clear()
        self.parents = ()
        self.freed = True

    @classmethod
    def name(cls):
        return cls.__name__

    def __repr__(self):
        return f"<{self.name()}Backward>"


_tensor_cls = None  # set by fastgrad.tensor, which imports this module


# --------------------------------------------------------------------------- backward


def topological_order(root):
    """The Function nodes reachable from ``root``, each before all nodes it depends on."""
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if fn in visited:
            continue
        visited.add(fn)
        stack.append((fn, True))
        for parent in fn.parents:
            node = parent._ctx
            if node is not None and node not in visited:
                stack.append((node, False))
    order.reverse()
    return order


_SCALAR_ONES = {np.dtype(np.float32): np.ones((), np.float32), np.dtype(np.float64): np.ones((), np.float64)}
for _one in _SCALAR_ONES.values():
    _one.flags.writeable = False  # shared by every backward() of a scalar: read only


def _ones(data):
    """The seed gradient of a one-element output: ones of its shape and dtype."""
    one = _SCALAR_ONES.get(data.dtype) if data.ndim == 0 else None
    return np.ones(data.shape, data.dtype) if one is None else one


def backward(tensor, gradient=None, retain_graph=False):
    """Accumulate d(tensor)/d(leaf) into every leaf's ``.grad`` (``Tensor.backward``)."""
    data = tensor.data
    if data.dtype.kind != "f":
        raise RuntimeError(f"backward: only floating point tensors have gradients; got dtype {data.dtype}")
    if not tensor.requires_grad:
        raise RuntimeError(
            "backward: the tensor does not require grad and has no grad_fn "
            "(was it computed under no_grad, or from tensors without requires_grad=True?)"
        )
    if gradient is None:
        if data.size != 1:
            raise RuntimeError(
                f"backward: grad can be implicitly created only for scalar outputs; "
                f"got a tensor of shape {tuple(data.shape)}: pass gradient="
            )
        grad = _ones(data)
    else:
        grad = np.asarray(getattr(gradient, "data", gradient))
        if grad.shape != data.shape:
            raise ValueError(
                f"backward: gradient has shape {tuple(grad.shape)}, but the tensor has shape {tuple(data.shape)}"
            )
        if grad.dtype != data.dtype:
            raise TypeError(f"backward: gradient has dtype {grad.dtype}, the tensor {data.dtype}")
    root = tensor._ctx
    if root is None:  # a leaf: its own gradient is the seed
        if tensor._hooks is not None:
            grad = tensor._hooks.apply(grad)
        if tensor.grad is None:
            tensor.grad = _tensor_cls._from_op(np.array(grad, order="C", copy=True), None)
        else:
            kernels.accumulate(tensor.grad.data, np.ascontiguousarray(grad))
        if tensor._hooks is not None and tensor._hooks.post_accumulate:
            hooks.run_post_accumulate_grad_hooks(tensor)
        return
    if root.freed:
        raise RuntimeError(
            f"backward through {root.name()} a second time: the graph was freed "
            "by the first backward; pass retain_graph=True to the first call"
        )
    order = topological_order(root)
    if _anomaly.enabled:
        for fn in order:
            fn.backward = _checked_backward(fn)
    root.grad_out = grad
    root.grad_owned = False
    retained, _capture.retain_graph = _capture.retain_graph, bool(retain_graph)
    try:
        if hooks.live_post_accumulate.n:
            _walk_calling_post_accumulate_grad_hooks(order, bool(retain_graph))
        else:
            kernels.backward_walk(order, _tensor_cls, bool(retain_graph))
    except BaseException:
        hooks.discard_pending()
        raise
    finally:  # leave no half-gathered gradient behind if a backward raised
        _capture.retain_graph = retained
        for fn in order:
            fn.grad_out = None
    hooks.flush_leaves()  # hooked leaves got their contributions gathered: run their hooks once


# --------------------------------------------------------------------------- post-accumulate-grad hooks
#
# The chain-rule loop (kernels.backward_walk, compiled or pure Python) knows nothing of hooks.
# A leaf's .grad is final once the last node of the order that takes the leaf as an input has
# run, and the walk over consecutive slices of the order is the same walk as over the whole
# order (its state lives on the nodes). So while some leaf has hooks, backward runs the walk in
# slices that end at those last nodes and calls the leaves' hooks between the slices
# (DistributedDataParallel starts a bucket's allreduce there, while the rest of backward runs).


def _walk_calling_post_accumulate_grad_hooks(order, retain_graph):
    last_use = {}  # id(leaf) -> (position after the last node that feeds it, leaf)
    for i, fn in enumerate(order):
        for parent in fn.parents:
            if parent._ctx is None and parent._hooks is not None and parent._hooks.post_accumulate:
                last_use[id(parent)] = (i + 1, parent)
    ready_after = {}
    for end, leaf in last_use.values():
        ready_after.setdefault(end, []).append(leaf)
    start = 0
    for end in sorted(ready_after):
        kernels.backward_walk(order[start:end], _tensor_cls, retain_graph)
        start = end
        for leaf in ready_after[end]:
            hooks.flush_leaf(leaf)  # its register_hook hooks run before .grad is final
            if leaf.grad is not None:  # no gradient reached it in this pass: no call, as in PyTorch
                hooks.run_post_accumulate_grad_hooks(leaf)
    if start < len(order):
        kernels.backward_walk(order[start:], _tensor_cls, retain_graph)


# --------------------------------------------------------------------------- anomaly mode


class AnomalyError(RuntimeError):
    """A forward or backward pass produced a NaN or an infinity (under detect_anomaly)."""


class _AnomalyMode(threading.local):
    enabled = False


_anomaly = _AnomalyMode()
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_line():
    """The innermost stack frame outside fastgrad: the user's line that made the op."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "<unknown>"


def _describe_inputs(arrays):
    return ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in arrays)


def _nonfinite(a):
    return a is not None and a.dtype.kind == "f" and not np.isfinite(a).all()


def _check_forward(fn, tensors, out):
    site = _user_line()
    fn.anomaly_site = site  # kept for the backward check
    if _nonfinite(out):
        raise AnomalyError(
            f"{fn.name()} produced a non-finite value in its forward pass: inputs "
            f"[{_describe_inputs([t.data for t in tensors])}], output {tuple(out.shape)}; "
            f"created at {site}"
        )


def _checked_backward(fn):
    op_backward = type(fn).backward
    site = fn.__dict__.get("anomaly_site", "<made before detect_anomaly was enabled>")

    def backward(grad):
        shapes = _describe_inputs([p.data for p in fn.parents])
        grads = op_backward(fn, grad)
        for i, g in enumerate(grads):
            if _nonfinite(g):
                raise AnomalyError(
                    f"{fn.name()} produced a non-finite gradient for input {i} in its "
                    f"backward pass: inputs [{shapes}], incoming gradient "
                    f"{tuple(grad.shape)}; the op was created at {site}"
                )
        return grads

    return backward


class detect_anomaly(contextlib.ContextDecorator):
    """Raise at the first NaN or infinity produced by a forward or backward pass, naming the
    operation, its input shapes and the line of user code that created it. Slow: for
    debugging only (every op's output is scanned)."""

    def __init__(self, check_nan=True):
        self.check = bool(check_nan)
        self.prev = []

    def __enter__(self):
        self.prev.append(_anomaly.enabled)
        _anomaly.enabled = self.check
        return self

    def __exit__(self, *exc):
        _anomaly.enabled = self.prev.pop()
        return False


def set_detect_anomaly(mode):
    _anomaly.enabled = bool(mode)


def is_anomaly_enabled():
    return _anomaly.enabled


# --------------------------------------------------------------------------- gradcheck


class GradcheckError(RuntimeError):
    pass


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Compare the engine's gradients of ``fn(*inputs)`` with central finite differences.

    Runs in float64 on copies of ``inputs`` (the ones with requires_grad=True are
    checked). The output is contracted with a fixed random tensor ``v`` so that one
    backward gives ``v^T J``; each input element is then perturbed by ``eps`` in both
    directions. Returns True, or raises GradcheckError naming the input, the worst
    element, and both values (returns False when ``raise_exception`` is False).
    """
    Tensor = _tensor_cls
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    xs = []
    for t in inputs:
        if isinstance(t, Tensor) and t.data.dtype.kind == "f":
            xs.append(Tensor(t.data.astype(np.float64), requires_grad=t.requires_grad))
        else:
            xs.append(t)
    checked = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    with enable_grad():
        out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    v = np.random.default_rng(seed).standard_normal(out.shape)
    if out.requires_grad:
        (out * Tensor(v)).sum().backward()

    def objective():
        with no_grad():
            return float(np.sum(fn(*xs).data.astype(np.float64) * v))

    for i in checked:
        x = xs[i]
        analytic = x.grad.data if x.grad is not None else np.zeros_like(x.data)
        numeric = np.zeros_like(x.data)
        flat, num = x.data.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            f_plus = objective()
            flat[j] = orig - eps
            f_minus = objective()
            flat[j] = orig
            num[j] = (f_plus - f_minus) / (2 * eps)
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if err.size and err.max() > 0:
            worst = np.unravel_index(int(np.argmax(err)), err.shape)
            msg = (
                f"gradcheck: input {i} (shape {tuple(x.shape)}): gradient mismatch at index "
                f"{tuple(int(k) for k in worst)}: analytic {analytic[worst]!r}, numeric "
                f"{numeric[worst]!r} (atol={atol}, rtol={rtol})"
            )
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
