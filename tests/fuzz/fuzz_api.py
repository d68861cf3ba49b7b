"""Running one public fastgrad call three ways and comparing: on the compiled kernels,
on the reference kernels, and in PyTorch (when installed).

A call takes float inputs that are VIEWS of leaf tensors: flipped (negative strides),
transposed, strided slices, or expanded (zero strides), built with fastgrad's own view
ops so that gradients flow back through them to the leaves. PyTorch builds the same
views (torch.flip for the negative strides it does not have). Each output is contracted
with a fixed random cotangent and backpropagated; outputs and leaf gradients are
compared.
"""

import warnings

import numpy as np
from hypothesis import strategies as st

import fastgrad
from fuzz_common import ALLOWED_ERRORS, RTOL, backend, compiled_available, random_array

try:
    import torch
except ImportError:  # the PyTorch comparisons are skipped, the rest still runs
    torch = None

# --------------------------------------------------------------------------- views


class View:
    """A chain of view ops from a leaf to a tensor of a wanted shape."""

    def __init__(self, ops):
        self.ops = ops  # applied in order to the leaf

    def leaf_shape(self, shape):
        shape = list(shape)
        for op in reversed(self.ops):
            kind, axis = op[0], op[1]
            if kind == "transpose":
                shape[axis], shape[op[2]] = shape[op[2]], shape[axis]
            elif kind == "step":
                shape[axis] = op[3] + shape[axis] * op[2]  # offset + length * step
            elif kind == "expand":
                shape[axis] = 1
        return tuple(shape)

    def apply(self, t, framework):
        for op in self.ops:
            kind, axis = op[0], op[1]
            index = [slice(None)] * t.ndim
            if kind == "flip":
                if framework == "torch":
                    t = t.flip(axis)
                else:
                    index[axis] = slice(None, None, -1)
                    t = t[tuple(index)]
            elif kind == "transpose":
                t = t.transpose(axis, op[2])
            elif kind == "step":
                index[axis] = slice(op[3], None, op[2])
                t = t[tuple(index)]
            elif kind == "expand":
                shape = list(t.shape)
                shape[axis] = op[2]
                t = t.expand(*shape)
        return t

    def __repr__(self):
        return f"View({self.ops})"


VIEW_KINDS = ("flip", "transpose", "step", "expand")


@st.composite
def views(draw, shape, kinds=VIEW_KINDS):
    """A random chain of at most two view ops whose result has ``shape``. Ops are drawn
    from the last one back to the leaf, so each knows the shape it must produce."""
    ndim = len(shape)
    ops = []
    out_shape = list(shape)  # what the op being drawn must produce
    for _ in range(draw(st.integers(0, 2)) if ndim else 0):
        kind = draw(st.sampled_from(kinds))
        axis = draw(st.integers(0, ndim - 1))
        if kind == "transpose" and ndim >= 2:
            other = draw(st.integers(0, ndim - 1).filter(lambda a: a != axis))
            op = ("transpose", axis, other)
        elif kind == "step":
            op = ("step", axis, draw(st.integers(2, 3)), draw(st.integers(0, 1)))
        elif kind == "expand":
            op = ("expand", axis, out_shape[axis])
        else:
            op = ("flip", axis)
        ops.insert(0, op)
        out_shape = list(View([op]).leaf_shape(out_shape))
    return View(ops)


# --------------------------------------------------------------------------- running


class Arg:
    """A float input of the call: the values of its leaf and the view taken of it."""

    def __init__(self, values, view=None, grad=True, torch_contiguous=False):
        self.view = view or View([])
        self.leaf = values  # an array of the view's leaf shape
        self.grad = grad
        # hand PyTorch a contiguous copy of the view (where PyTorch mishandles strides)
        self.torch_contiguous = torch_contiguous


def make_arg(rng, shape, dtype, view, kind="normal", grad=True):
    return Arg(random_array(rng, view.leaf_shape(shape), dtype, kind), view, grad)


def _run_fastgrad(call, args, cotangent_seed):
    leaves = [fastgrad.tensor(a.leaf, dtype=a.leaf.dtype, requires_grad=a.grad) for a in args]
    inputs = [a.view.apply(t, "fastgrad") for a, t in zip(args, leaves)]
    out = call(*inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    arrays = [np.array(o.data) for o in outs]
    loss = None
    rng = np.random.default_rng(cotangent_seed)
    for o, a in zip(outs, arrays):
        if a.dtype.kind == "f" and o.requires_grad:
            term = (o * fastgrad.tensor(rng.standard_normal(a.shape), dtype=a.dtype)).sum()
            loss = term if loss is None else loss + term
    if loss is not None:
        loss.backward()
    grads = [None if t.grad is None else np.array(t.grad.data) for t in leaves]
    return arrays, grads


class TorchBackwardError(Exception):
    """PyTorch's own backward failed (e.g. nll_loss2d's backward rejects non-contiguous
    gradients): there is nothing to compare with, and nothing fastgrad must reject."""


def _run_torch(call, args, cotangent_seed):
    leaves = [torch.tensor(a.leaf, requires_grad=a.grad) for a in args]
    inputs = [a.view.apply(t, "torch") for a, t in zip(args, leaves)]
    inputs = [t.contiguous() if a.torch_contiguous else t for a, t in zip(args, inputs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "padding='same' ... may require a copy"
        out = call(*inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    arrays = [o.detach().numpy().copy() for o in outs]
    loss = None
    rng = np.random.default_rng(cotangent_seed)
    for o, a in zip(outs, arrays):
        if a.dtype.kind == "f" and o.requires_grad:
            term = (o * torch.tensor(rng.standard_normal(a.shape), dtype=o.dtype)).sum()
            loss = term if loss is None else loss + term
    if loss is not None:
        try:
            loss.backward()
        except RuntimeError as exc:
            raise TorchBackwardError(str(exc)) from exc
    grads = [None if t.grad is None else t.grad.numpy().copy() for t in leaves]
    return arrays, grads


def attempt(run, call, args, seed):
    try:
        return "ok", run(call, args, seed)
    except Exception as exc:  # noqa: BLE001 - compared by check_call
        return "error", exc


def check_call(
    name, fastgrad_call, torch_call, args, dtype, scale=1.0, torch_rtol=None, cotangent_seed=0, torch_rejects=None
):
    """Run ``fastgrad_call`` on the compiled and the reference kernels and
    ``torch_call`` in PyTorch (None: skip it), on views of the same leaves; compare.

    The compiled and reference runs must agree (both raise, or the same values); PyTorch
    must agree too, except that an error is only required of fastgrad when PyTorch
    raises. Errors must be of the allowed types and name ``name``.

    ``torch_rejects`` is the test's own statement of PyTorch's rule for this call: None
    when PyTorch accepts it, else the documented reason PyTorch rejects it. It is the
    oracle for rejections when PyTorch is not installed (fastgrad must then reject the
    call too), and PyTorch, when installed, must agree with it both ways, so a rule the
    test lacks shows up as a failure on a machine with PyTorch, not as a wrong
    rejection on one without.
    """
    results = {}
    if compiled_available():
        with backend("compiled"):
            results["compiled"] = attempt(_run_fastgrad, fastgrad_call, args, cotangent_seed)
    with backend("reference"):
        results["reference"] = attempt(_run_fastgrad, fastgrad_call, args, cotangent_seed)
    if torch is not None and torch_call is not None:
        results["torch"] = attempt(_run_torch, torch_call, args, cotangent_seed)
        if isinstance(results["torch"][1], TorchBackwardError):
            del results["torch"]
    for side in ("compiled", "reference"):
        if side in results and results[side][0] == "error":
            exc = results[side][1]
            if not isinstance(exc, ALLOWED_ERRORS) or name not in str(exc):
                raise AssertionError(f"{name} on the {side} kernels raised {type(exc).__name__}: {exc}") from exc
    kinds = {side: r[0] for side, r in results.items()}
    if "torch" in kinds:
        torch_error = results["torch"][1] if kinds["torch"] == "error" else None
        assert (torch_error is None) == (torch_rejects is None), (
            f"{name}: the test's rule says PyTorch {'rejects' if torch_rejects else 'accepts'} "
            f"this call ({torch_rejects or 'no rule applies'}), PyTorch "
            + (f"rejects it: {torch_error}" if torch_error else "accepts it")
        )
    if torch_rejects is not None:
        for side in ("compiled", "reference"):
            assert kinds.get(side, "error") == "error", (
                f"{name}: PyTorch rejects this call ({torch_rejects}), fastgrad on the {side} kernels accepts it"
            )
        return
    for side in ("compiled", "reference"):
        if kinds.get(side) == "error":
            raise AssertionError(
                f"{name} on the {side} kernels rejects a valid call: {results[side][1]!r}"
            ) from results[side][1]
    expected = results["reference"][1]
    rtol = RTOL[np.dtype(dtype)]
    if "compiled" in results:
        _compare(name, "compiled", "reference", results["compiled"][1], expected, rtol, scale)
    if "torch" in results:
        t_rtol = torch_rtol or {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}[np.dtype(dtype)]
        _compare(name, "fastgrad", "torch", expected, results["torch"][1], t_rtol, scale)
    return expected


def _compare(name, a_name, b_name, a, b, rtol, scale):
    (a_outs, a_grads), (b_outs, b_grads) = a, b
    assert len(a_outs) == len(b_outs), f"{name}: {len(a_outs)} outputs vs {len(b_outs)}"
    for i, (x, y) in enumerate(zip(a_outs, b_outs)):
        what = f"{name} output {i}: {a_name} vs {b_name}"
        assert x.shape == y.shape, f"{what}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind != "f" or y.dtype.kind != "f":
            np.testing.assert_array_equal(x, y, err_msg=what)
        else:
            assert x.dtype == y.dtype, f"{what}: dtype {x.dtype} vs {y.dtype}"
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)
    for i, (x, y) in enumerate(zip(a_grads, b_grads)):
        what = f"{name} gradient of input {i}: {a_name} vs {b_name}"
        if x is None or y is None:
            assert (x is None or not np.any(x)) and (y is None or not np.any(y)), f"{what}: one side has no gradient"
            continue
        assert x.shape == y.shape, f"{what}: shape {x.shape} vs {y.shape}"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)


# --------------------------------------------------------------------------- modules


def _module_dtype(lib, dtype):
    if lib is fastgrad.nn:
        return np.dtype(dtype)
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def _run_module(lib, build, state, args, call, modes, dtype, seed):
    """Build a module, load ``state``, run it once per mode in ``modes`` ("train" or
    "eval") on views of fresh leaves, backpropagate a random cotangent each time.
    Returns [(outputs, input grads, parameter grads, state after)] per run."""
    module = build(lib, _module_dtype(lib, dtype))
    if lib is fastgrad.nn:
        module.load_state_dict(state)
    else:
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    run = _run_fastgrad if lib is fastgrad.nn else _run_torch
    records = []
    for step, mode in enumerate(modes):
        module.train(mode == "train")
        for p in module.parameters():
            p.grad = None
        outs, grads = run(lambda *inputs: call(module, *inputs), args, seed + step)
        param_grads = {
            name: (None if p.grad is None else np.array(p.grad.data if lib is fastgrad.nn else p.grad.numpy()))
            for name, p in module.named_parameters()
        }
        after = {k: np.array(v if lib is fastgrad.nn else v.numpy()) for k, v in module.state_dict().items()}
        records.append((outs, grads, param_grads, after))
    return records


def check_module(name, build, args, dtype, scale=1.0, call=None, modes=("train",), seed=0):
    """A layer (``build(lib, dtype)`` with lib fastgrad.nn or torch.nn) on the compiled
    kernels, the reference kernels and in PyTorch, from the same initial state: outputs,
    input and parameter gradients and the state after each run must agree."""
    call = call or (lambda module, *inputs: module(*inputs))
    state = build(fastgrad.nn, np.dtype(dtype)).state_dict()
    results = {}
    sides = (["compiled"] if compiled_available() else []) + ["reference"]
    for side in sides:
        with backend(side):
            results[side] = _run_module(fastgrad.nn, build, state, args, call, modes, dtype, seed)
    if torch is not None:
        results["torch"] = _run_module(torch.nn, build, state, args, call, modes, dtype, seed)
    rtol = RTOL[np.dtype(dtype)]
    t_rtol = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}[np.dtype(dtype)]
    expected = results["reference"]
    for other, tol in (("compiled", rtol), ("torch", t_rtol)):
        if other not in results:
            continue
        for step, (a, b) in enumerate(zip(results[other], expected)):
            what = f"{name} ({modes[step]} run {step}): {other} vs reference"
            _compare(what, other, "reference", a[:2], b[:2], tol, scale)
            for part, label in ((2, "gradient of"), (3, "state")):
                assert a[part].keys() == b[part].keys(), f"{what}: {label} entries differ"
                for key in b[part]:
                    x, y = a[part][key], b[part][key]
                    if x is None or y is None:
                        assert x is None and y is None, f"{what}: {label} {key}: one is None"
                        continue
                    np.testing.assert_allclose(
                        x, y, rtol=tol, atol=tol * scale, equal_nan=True, err_msg=f"{what}: {label} {key}"
                    )
