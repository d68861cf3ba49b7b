"""What every fuzz test shares: the hypothesis profiles, the two homes of each kernel,
random arrays, tolerances, geometry strategies, and the check that a bad call raises a
clear error.

Arrays are drawn from a numpy generator seeded by hypothesis (one integer), not element
by element: the shapes and parameters are what hypothesis explores and shrinks, and a
seed is enough to reproduce the values.
"""

import contextlib
import importlib

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from fastgrad import kernels

# --------------------------------------------------------------------------- profiles

CI_EXAMPLES = 12
LONG_EXAMPLES = 10_000


def register_profiles():
    """ "ci": a quick, reproducible run (derandomized: the same examples every time; no
    shrinking, so a known failure costs one example, not hundreds). "long": 10,000
    examples per test, random, failures shrunk to a minimal example."""
    common = dict(
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )
    settings.register_profile(
        "ci",
        max_examples=CI_EXAMPLES,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        **common,
    )
    settings.register_profile("long", max_examples=LONG_EXAMPLES, **common)


# --------------------------------------------------------------------------- kernels


def family_of(name):
    for family in kernels.FAMILIES:
        ref = importlib.import_module(f"fastgrad.reference.{family}")
        if name in ref.__all__:
            return family
    raise KeyError(name)


def reference(name):
    """The pure-Python kernel ``name``."""
    return getattr(importlib.import_module(f"fastgrad.reference.{family_of(name)}"), name)


def compiled_module(family):
    """The compiled module of a kernel family (the one fastgrad.kernels binds when the
    backend is compiled), or None when it is not built."""
    if kernels.backend == "compiled":
        ref = importlib.import_module(f"fastgrad.reference.{family}")
        return importlib.import_module(getattr(kernels, ref.__all__[0]).__module__)
    try:
        return importlib.import_module(f"fastgrad._ext._{family}")
    except ImportError:
        return None


def compiled(name):
    """The compiled kernel ``name``, or None when the compiled kernels are not built."""
    module = compiled_module(family_of(name))
    return None if module is None else getattr(module, name)


def both(name):
    """(compiled, reference) kernel ``name``; skips the test without compiled kernels."""
    import pytest

    comp = compiled(name)
    if comp is None:
        pytest.skip("compiled kernels not built")
    return comp, reference(name)


@contextlib.contextmanager
def backend(name):
    """Run the ops on the ``name`` kernels, then restore the backend that was bound."""
    previous = kernels.backend
    kernels.use_backend(name)
    try:
        yield
    finally:
        kernels.use_backend(previous)


def compiled_available():
    return compiled_module("conv") is not None


# --------------------------------------------------------------------------- arrays

DTYPES = (np.float32, np.float64)
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
threads = st.integers(1, 3)
# How values are drawn: "normal" N(0, 1); "ties" small integers (many equal values, for
# max-pooling ties and exact sums); "wide" magnitudes from 1e-3 to 1e3.
value_kinds = st.sampled_from(["normal", "ties", "wide"])


def rng_of(seed):
    return np.random.default_rng(seed)


def random_array(rng, shape, dtype, kind="normal"):
    if kind == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif kind == "wide":
        a = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, size=shape)
    else:
        a = rng.standard_normal(shape)
    return np.array(a, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)


def with_specials(rng, a, fraction=0.2):
    """A copy of ``a`` with some elements replaced by nan, +-inf, +-1e30, +-0.0."""
    a = a.copy()
    if a.size:
        specials = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0, 0.0], dtype=a.dtype)
        mask = rng.random(a.shape) < fraction
        a[mask] = rng.choice(specials, size=int(mask.sum()))
    return a


def sentinel(shape, dtype):
    """An output array full of NaN: a kernel that skips an element leaves a NaN behind."""
    return np.full(shape, np.nan, dtype=dtype)


def frozen(a, readonly):
    """``a`` made read-only when ``readonly`` (inputs are const: must still be accepted)."""
    if readonly and a is not None:
        a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- tolerances

RTOL = {np.dtype(np.float32): 3e-5, np.dtype(np.float64): 1e-11}


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    """|actual - expected| <= rtol * (|expected| + scale), NaN where NaN, same shape.

    ``scale`` bounds the rounding error of a sum: the sum of the magnitudes of its terms
    (a dot product of length K of values near 1 has scale ~K)."""
    rtol = RTOL[np.dtype(dtype)]
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * max(float(scale), 1e-30), equal_nan=True, err_msg=what
    )


def magnitude(*arrays):
    """The product over ``arrays`` of their largest finite |value| (1 for empty ones)."""
    product = 1.0
    for a in arrays:
        if a is None:
            continue
        values = np.abs(np.asarray(a, dtype=np.float64)).ravel()
        values = values[np.isfinite(values)]
        product *= float(values.max()) if values.size and values.max() > 0 else 1.0
    return product


# --------------------------------------------------------------------------- errors

ALLOWED_ERRORS = (ValueError, TypeError, IndexError, RuntimeError)


def expect_error(name, fn, *args, **kwargs):
    """Call ``fn``; it must raise one of ALLOWED_ERRORS whose message contains ``name``
    (a string, or a tuple of strings of which one must appear). Returns the exception."""
    names = (name,) if isinstance(name, str) else tuple(name)
    try:
        fn(*args, **kwargs)
    except ALLOWED_ERRORS as exc:
        message = str(exc)
        assert any(n.lower() in message.lower() for n in names), (
            f"the error does not name {' or '.join(names)}: {type(exc).__name__}: {message}"
        )
        return exc
    except BaseException as exc:  # MemoryError, OverflowError, SystemError, ...
        raise AssertionError(
            f"{names[0]} raised {type(exc).__name__} ({exc}), expected one of "
            f"{[e.__name__ for e in ALLOWED_ERRORS]} naming it"
        ) from exc
    raise AssertionError(f"{names[0]} accepted an invalid call")


@contextlib.contextmanager
def kernels_forbidden():
    """Within the block, any call of a fastgrad.kernels function fails the test: an
    invalid call must be refused before a kernel runs."""
    saved = {}
    for family in kernels.FAMILIES:
        for name in importlib.import_module(f"fastgrad.reference.{family}").__all__:
            if family == "engine":
                continue  # the autograd engine, not an op's kernel

            def forbidden(*args, _name=name, **kwargs):
                raise AssertionError(f"kernel {_name} ran: the invalid call was not refused first")

            saved[name] = getattr(kernels, name)
            setattr(kernels, name, forbidden)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(kernels, name, fn)


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("error", exception) for one call (for twin comparisons)."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classified by same_outcome
        return "error", exc


def same_outcome(name, comp_result, ref_result):
    """Both twins returned (True), or both raised an allowed error naming the kernel
    (False); anything else fails."""
    kinds = (comp_result[0], ref_result[0])
    if kinds == ("ok", "ok"):
        return True
    if kinds == ("error", "error"):
        for side, (_, exc) in (("compiled", comp_result), ("reference", ref_result)):
            assert isinstance(exc, ALLOWED_ERRORS), f"{side} {name} raised {type(exc).__name__}: {exc}"
            assert name in str(exc), f"{side} {name}: the error does not name it: {exc}"
        return False
    texts = [repr(r[1]) if r[0] == "error" else "returned" for r in (comp_result, ref_result)]
    raise AssertionError(f"{name}: the twins disagree: compiled {texts[0]}, reference {texts[1]}")


# --------------------------------------------------------------------------- geometry


def conv_out(n, pad_total, dil, k, stride):
    """Output length of a convolution over n inputs with pad_total padding in all."""
    return (n + pad_total - dil * (k - 1) - 1) // stride + 1


class ConvCase:
    """One convolution: shapes, the kernels' scalar arguments and the functional's."""

    def __init__(self, n, groups, cg, m, h, w, kh, kw, stride, dil, pad, extra, same):
        c, co = cg * groups, m * groups
        self.x_shape, self.w_shape = (n, c, h, w), (co, cg, kh, kw)
        ho = conv_out(h, 2 * pad[0] + extra[0], dil[0], kh, stride[0])
        wo = conv_out(w, 2 * pad[1] + extra[1], dil[1], kw, stride[1])
        self.y_shape = (n, co, ho, wo)
        self.params = (stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], groups)
        self.stride, self.dilation, self.groups = stride, dil, groups
        self.padding = "same" if same else pad  # as conv2d takes it
        self.depth = cg * kh * kw  # the length of each output's dot product
        self.fan_out = m * kh * kw  # outputs each input element feeds

    def __repr__(self):
        return (
            f"ConvCase(x={self.x_shape}, w={self.w_shape}, y={self.y_shape}, "
            f"params={self.params}, padding={self.padding!r})"
        )


@st.composite
def conv_cases(draw, max_batch=2, min_batch=0, allow_extra=True):
    """Valid convolutions, small enough for the reference kernels: groups, dilation,
    strides, explicit or 'same' padding (with its extra bottom/right row for an even
    extent; ``allow_extra`` also adds that row to explicit padding, which the kernels
    accept), non-square images and kernels, batch 0, 1 or 2."""
    groups = draw(st.integers(1, 3))
    cg, m = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    same = draw(st.booleans())
    if same:
        stride = (1, 1)
        pad = (dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2)
        extra = (dil[0] * (kh - 1) % 2, dil[1] * (kw - 1) % 2)
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        extra = (draw(st.integers(0, 1)), draw(st.integers(0, 1))) if allow_extra else (0, 0)
    sizes = []
    for k, d, p, e in ((kh, dil[0], pad[0], extra[0]), (kw, dil[1], pad[1], extra[1])):
        smallest = max(1, d * (k - 1) + 1 - 2 * p - e)  # the kernel must fit the padded input
        sizes.append(draw(st.integers(smallest, smallest + 5)))
    n = draw(st.integers(min_batch, max_batch))
    return ConvCase(n, groups, cg, m, sizes[0], sizes[1], kh, kw, stride, dil, pad, extra, same)


def pool_out(size, k, stride, pad, dil, ceil_mode):
    """PyTorch's pooling output length (with ceil_mode the last window must start inside
    the input or its left padding)."""
    numerator = size + 2 * pad - dil * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    o = numerator // stride + 1
    if ceil_mode and (o - 1) * stride >= size + pad:
        o -= 1
    return o


class PoolCase:
    """One pooling window geometry over an (N, C, H, W) input."""

    def __init__(self, x_shape, kernel, stride, pad, dil, ceil_mode):
        self.x_shape, self.kernel, self.stride = x_shape, kernel, stride
        self.pad, self.dil, self.ceil_mode = pad, dil, ceil_mode
        self.out_hw = tuple(pool_out(x_shape[2 + a], kernel[a], stride[a], pad[a], dil[a], ceil_mode) for a in range(2))
        self.y_shape = x_shape[:2] + self.out_hw

    def __repr__(self):
        return (
            f"PoolCase(x={self.x_shape}, kernel={self.kernel}, stride={self.stride}, "
            f"pad={self.pad}, dil={self.dil}, ceil_mode={self.ceil_mode}, y={self.y_shape})"
        )


@st.composite
def pool_cases(draw, dilation=True, max_batch=2, min_batch=0, pad_limit="half"):
    """Pooling windows PyTorch accepts: padding at most half the kernel (``pad_limit``
    "kernel" allows up to the whole kernel, as the kernels do), strides, dilation,
    ceil_mode; the padded input holds at least one window."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    limit = [k // 2 if pad_limit == "half" else k for k in kernel]
    pad = (draw(st.integers(0, limit[0])), draw(st.integers(0, limit[1])))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    hw = []
    for a in range(2):
        smallest = max(1, dil[a] * (kernel[a] - 1) + 1 - 2 * pad[a])
        hw.append(draw(st.integers(smallest, smallest + 5)))
    n, c = draw(st.integers(min_batch, max_batch)), draw(st.integers(1, 3))
    return PoolCase((n, c, hw[0], hw[1]), kernel, stride, pad, dil, ceil_mode)
