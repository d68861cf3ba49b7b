"""Enormous sizes: calls whose arrays would need terabytes must raise a clear error at
once (ValueError, TypeError, IndexError or RuntimeError naming the function), never a
MemoryError after trying to allocate, never a hang, never a crash.

The sizes reach the code three ways: views that occupy no memory (np.broadcast_to, so
an input of 10**12 elements costs nothing until something copies it), plain arguments
(padding, output_size, layer sizes, the shapes given to conv2d_workspace_size), and
zero-size arrays whose other dimensions are enormous (valid numpy arrays that a kernel
must handle without looping over or allocating for the empty product).

These targets run in a child process whose address space is capped at a few GB
(isolated.py), so any attempt to allocate the terabytes fails at once instead of
swapping the machine to death. Each call has a deadline: a Python loop over an enormous
empty dimension is interrupted by an alarm (a failure), a compiled one by the watchdog,
which ends the child (reported as a hang).
"""

import gc
import signal

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fastgrad
import fastgrad.nn as nn
import fastgrad.nn.functional as F
from fuzz_common import ALLOWED_ERRORS, DTYPES, compiled, family_of, reference
from isolated import watchdog

SECONDS_PER_CALL = 1  # a right answer takes microseconds


class Overtime(Exception):
    pass


def _alarm(signum, frame):
    raise Overtime(f"no answer after {SECONDS_PER_CALL} s")


huge = st.sampled_from([10**6, 3 * 10**6, 2**22 + 1])  # one dimension of a 10**12 input
enormous = st.sampled_from([10**7, 2**31 + 3, 10**9, 2**40])  # a size argument
dtypes = st.sampled_from(DTYPES)


def expect_quick_error(name, fn, *args, allow_success=False, **kwargs):
    """``fn(*args)`` must raise an allowed error naming ``name`` (or, with
    allow_success, return) within SECONDS_PER_CALL; a MemoryError fails, and so does a
    hang (in a compiled loop: the watchdog ends the child, isolated.py reports it)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    gc.disable()  # the alarm's exception must not land in a garbage-collector callback
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CALL)
    try:
        with watchdog(SECONDS_PER_CALL + 0.5):
            fn(*args, **kwargs)
    except Overtime as exc:
        raise AssertionError(f"{name}: {exc} (a loop over an enormous empty dimension?)") from None
    except ALLOWED_ERRORS as exc:
        assert name in str(exc), f"{name}: the error does not name it: {type(exc).__name__}: {exc}"
        return
    except BaseException as exc:  # MemoryError, OverflowError, ...
        raise AssertionError(
            f"{name} raised {type(exc).__name__} ({exc}) instead of a clear error before allocating"
        ) from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        gc.enable()
    assert allow_success, f"{name} accepted a call that needs terabytes"


def view(shape, dtype):
    """A float tensor of ``shape`` that occupies one element of memory."""
    return fastgrad.from_numpy(np.broadcast_to(np.ones((), dtype), shape))


def small(shape, dtype):
    return fastgrad.tensor(np.ones(shape, dtype), dtype=dtype)


# --------------------------------------------------------------------------- functionals


@given(dtype=dtypes, big=huge, where=st.sampled_from(["image", "batch", "padding", "channels"]), relu=st.booleans())
def conv2d(dtype, big, where, relu):
    fn = F.conv2d_relu if relu else F.conv2d
    name = fn.__name__
    if where == "image":  # input (1, 1, big, big)
        expect_quick_error(name, fn, view((1, 1, big, big), dtype), small((2, 1, 3, 3), dtype))
    elif where == "batch":  # input (big**2 / 100, 1, 10, 10)
        expect_quick_error(name, fn, view((big * big // 100, 1, 10, 10), dtype), small((1, 1, 1, 1), dtype))
    elif where == "padding":  # a 4 x 4 image padded to big x big
        expect_quick_error(name, fn, small((1, 1, 4, 4), dtype), small((1, 1, 1, 1), dtype), padding=big // 2)
    else:  # weight (big**2 // 9, 1, 3, 3): as many output channels
        expect_quick_error(name, fn, small((1, 1, 8, 8), dtype), view((big * big // 9, 1, 3, 3), dtype))


@given(dtype=dtypes, big=huge, out_features=st.integers(1, 4), relu=st.booleans())
def linear(dtype, big, out_features, relu):
    fn = F.linear_relu if relu else F.linear
    expect_quick_error(fn.__name__, fn, view((big, big), dtype), small((out_features, big), dtype))


@given(dtype=dtypes, big=huge, kind=st.sampled_from(["max", "avg", "adaptive", "adaptive size"]))
def pooling(dtype, big, kind):
    x = view((1, 1, big, big), dtype)
    if kind == "max":
        expect_quick_error("max_pool2d", F.max_pool2d, x, 2)
    elif kind == "avg":
        expect_quick_error("avg_pool2d", F.avg_pool2d, x, 2)
    elif kind == "adaptive":
        expect_quick_error("adaptive_avg_pool2d", F.adaptive_avg_pool2d, x, 3)
    else:  # a small input averaged into an enormous output
        expect_quick_error("adaptive_avg_pool2d", F.adaptive_avg_pool2d, small((1, 1, 4, 4), dtype), big)


@given(
    dtype=dtypes,
    big=huge,
    name=st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout"]),
)
def activations(dtype, big, name):
    x = view((big, big), dtype)
    kwargs = {"dim": 1} if "softmax" in name else {}
    expect_quick_error(name, getattr(F, name), x, **kwargs)


@given(
    dtype=dtypes,
    big=huge,
    name=st.sampled_from(["cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"]),
)
def losses(dtype, big, name):
    x = view((big, big), dtype)
    if name in ("cross_entropy", "nll_loss"):
        target = fastgrad.from_numpy(np.broadcast_to(np.zeros((), np.int64), (big,)))
    else:
        target = view((big, big), dtype)
    expect_quick_error(name, getattr(F, name), x, target)


@given(dtype=dtypes, big=huge, training=st.booleans())
def batch_norm(dtype, big, training):
    x = view((big, 2, big), dtype)
    mean, var = small((2,), dtype), small((2,), dtype)
    expect_quick_error("batch_norm", F.batch_norm, x, mean, var, training=training)


# --------------------------------------------------------------------------- layers


@given(
    size=enormous,
    layer=st.sampled_from(["Conv2d in", "Conv2d out", "Conv2d kernel", "Linear", "BatchNorm1d", "BatchNorm2d"]),
)
def layer_construction(size, layer):
    """Parameters of terabytes: refused with a clear error, not a MemoryError."""
    builds = {
        "Conv2d in": lambda: nn.Conv2d(size, 1000, 3),
        "Conv2d out": lambda: nn.Conv2d(1000, size, 3),
        "Conv2d kernel": lambda: nn.Conv2d(1, 1, (size, size)),
        "Linear": lambda: nn.Linear(size, size),
        "BatchNorm1d": lambda: nn.BatchNorm1d(size * 1000),
        "BatchNorm2d": lambda: nn.BatchNorm2d(size * 1000),
    }
    expect_quick_error(layer.split()[0], builds[layer])


# --------------------------------------------------------------------------- kernels


@given(
    side=st.sampled_from([2 * 10**5, 3 * 10**5 + 1, 10**6]),
    channels=st.integers(1, 8),
    kind=st.sampled_from(["forward", "backward_input", "backward_weight"]),
)
def conv2d_workspace_size(side, channels, kind):
    """The workspace of a convolution over side x side images (4e10 pixels and more)
    would take terabytes: asked for its size, the kernel must refuse at once (or name a
    size below a terabyte), not spend minutes planning it and return a size the caller
    then fails to allocate."""
    x, w = (2, channels, side, side), (8, channels, 3, 3)
    y = (2, 8, side - 2, side - 2)
    for kernel in (compiled("conv2d_workspace_size"), reference("conv2d_workspace_size")):
        if kernel is None:
            continue
        with watchdog(SECONDS_PER_CALL + 0.5):
            try:
                size = kernel(kind, x, w, y, 1, 1, 0, 0, 1, 1, 1, 1)
            except ALLOWED_ERRORS as exc:
                assert "conv2d_workspace_size" in str(exc), f"the error does not name it: {exc}"
                continue
        assert size * 8 < 2**40, (
            f"conv2d_workspace_size{(kind, x, w, y)} = {size} elements "
            f"({size * 4 / 2**40:.1f} TiB of float32): should raise"
        )


def _empty(shape, dtype):
    """A zero-size array of ``shape`` (numpy allows enormous other dimensions)."""
    return np.empty(shape, dtype)


def _zero_size_calls(big, dtype):
    """(kernel, arguments) of calls on zero-size arrays with an enormous dimension; the
    other arrays are small. Each must be answered at once."""
    e, z, i64 = (lambda *s: _empty(s, dtype)), (lambda *s: np.zeros(s, dtype)), (lambda *s: np.empty(s, np.int64))
    n = 1
    return [
        ("relu_forward", (e(0, big), e(0, big), n)),
        ("relu_backward", (e(big, 0), e(big, 0), e(big, 0), n)),
        ("leaky_relu_forward", (e(0, big), e(0, big), 0.1, n)),
        ("sigmoid_backward", (e(0, big), e(0, big), e(0, big), n)),
        ("tanh_forward", (e(big, 0), e(big, 0), n)),
        ("softmax_forward", (e(0, big), e(0, big), n)),
        ("softmax_forward", (e(big, 0), e(big, 0), n)),
        ("log_softmax_backward", (e(big, 0), e(big, 0), e(big, 0), n)),
        (
            "conv2d_forward",
            (e(0, 1, big, big), z(2, 1, 3, 3), None, e(0, 2, big - 2, big - 2), 1, 1, 0, 0, 1, 1, 1, False, None, n),
        ),
        (
            "conv2d_backward_input",
            (e(0, 2, big - 2, big - 2), z(2, 1, 3, 3), e(0, 1, big, big), 1, 1, 0, 0, 1, 1, 1, None, n),
        ),
        (
            "conv2d_backward_weight",
            (e(0, 1, big, big), e(0, 2, big - 2, big - 2), z(2, 1, 3, 3), 1, 1, 0, 0, 1, 1, 1, None, n),
        ),
        ("conv2d_backward_bias", (e(0, 2, big, big), z(2), n)),
        (
            "max_pool2d_forward",
            (e(0, 1, big, big), e(0, 1, big // 2, big // 2), i64(0, 1, big // 2, big // 2), 2, 2, 2, 2, 0, 0, 1, 1, n),
        ),
        ("max_pool2d_backward", (e(0, 1, 2, 2), i64(0, 1, 2, 2), e(0, 1, big, big), n)),
        ("avg_pool2d_forward", (e(1, 1, 0, big), z(1, 1, 3, 3), 2, 2, 2, 2, 0, 0, True, None, n)),
        ("avg_pool2d_backward", (z(1, 1, 3, 3), e(1, 1, big, 0), 2, 2, 2, 2, 0, 0, True, None, n)),
        ("adaptive_avg_pool2d_forward", (e(0, 1, big, big), e(0, 1, 3, 3), n)),
        ("adaptive_avg_pool2d_backward", (e(1, 1, 0, 3), e(1, 1, big, 0), n)),
        ("adaptive_avg_pool2d_backward", (e(0, 1, 3, 3), e(0, 1, big, big), n)),
        ("linear_forward", (e(0, big), e(0, big), None, z(0, 0), False, n)),
        ("linear_backward_weight", (e(big, 0), e(big, 0), e(0, 0), n)),
        ("linear_backward_input", (e(0, big), e(big, 0), e(0, 0), n)),
        ("cross_entropy_forward", (e(0, big), i64(0), None, -100, 0.0, True, e(0), e(0, big), n)),
        ("nll_loss_backward", (i64(0), None, -100, e(0), e(0, big), n)),
        ("mse_loss_forward", (e(0, big), e(0, big), e(0, big), None, n)),
        ("binary_cross_entropy_with_logits_forward", (e(0, big), e(0, big), None, None, 1.0, None, None, n)),
        ("batch_norm_forward_eval", (e(0, 2, big), None, None, z(2), z(2) + 1, 1e-5, e(0, 2, big), z(2), n)),
        ("batch_norm_backward", (e(0, 2, big), e(0, 2, big), None, z(2), z(2) + 1, True, e(0, 2, big), z(2), z(2), n)),
        ("sgd_step", ([e(0, big)], [e(0, big)], [e(0, big)], 0.1, 0.9, 0.0, 0.0, False, False, False, n)),
        ("accumulate", (e(big, 0), e(big, 0))),
    ]


def _zero_size_target(index, twin):
    # the largest keeps two such dimensions within numpy's limit (size * 8 < 2**63)
    @given(big=st.sampled_from([2**20, 10**6 + 3, 2**28]), dtype=dtypes)
    def run(big, dtype):
        name, args = _zero_size_calls(big, dtype)[index]
        kernel = compiled(name) if twin == "compiled" else reference(name)
        if kernel is not None:
            expect_quick_error(name, kernel, *args, allow_success=True)

    return run


FUNCTIONALS = {
    "conv2d": conv2d,
    "linear": linear,
    "pooling": pooling,
    "activations": activations,
    "losses": losses,
    "batch_norm": batch_norm,
}


GROUPS = ("functional", "layers", "kernels")


def targets(group):
    """The hypothesis tests of a group: "functional", "layers" or "kernels"."""
    if group == "functional":
        return dict(FUNCTIONALS)
    if group == "layers":
        return {"layer_construction": layer_construction}
    found = {"conv2d_workspace_size": conv2d_workspace_size}
    for index, (name, _) in enumerate(_zero_size_calls(2**20, np.float32)):
        for twin in ("compiled", "reference"):
            found[f"{name} ({twin}) on zero-size arrays #{index}"] = _zero_size_target(index, twin)
    assert all(family_of(name.split()[0]) for name in found)
    return found
