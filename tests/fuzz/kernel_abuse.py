"""Malformed calls straight to the kernels, compiled and reference alike.

Each example takes a valid call of one kernel (kernel_calls.SPECS) and breaks one
argument of it: its dtype, ndim, a size, its memory layout (strided, reversed,
Fortran-ordered, zero-stride broadcast), its writability, its type (a list, a scalar,
None), a scalar parameter (zero, negative, beyond 2**31, beyond int64, a float, NaN, a
string), a class index or pooling index out of range, an optimizer list that is short
or holds a bad array; or it makes an output alias an input.

What must hold for both twins:
  * a call broken in a way the kernel contract forbids raises ValueError, TypeError,
    IndexError or RuntimeError whose message names the kernel;
  * a raising call leaves every output and in-out array as it was (nothing is written
    before the checks pass) and never changes an input;
  * otherwise the twins agree: both raise (as above) or both return the same values;
  * and nothing crashes: these targets run in a child process (test_kernel_abuse.py).
"""

import math

import numpy as np
from hypothesis import find, given
from hypothesis import strategies as st

from fuzz_common import ALLOWED_ERRORS, DTYPES, compiled, family_of, reference, rng_of, seeds
from isolated import watchdog
from kernel_calls import SPECS

ARRAY_ROLES = ("in", "in?", "out", "out?", "target", "index")
OUTPUT_ROLES = ("out", "out?", "list_out")
WRONG_DTYPES = ["int64", "int32", "float16", "bool", "complex64", "object", "other float"]
INT_VALUES = [
    0,
    -1,
    -(2**31),
    2**31,
    2**31 + 1,
    2**63 - 1,
    2**63,
    2**70,
    1.5,
    2.0,
    math.nan,
    None,
    "2",
    True,
    np.int64(2),
    np.int32(1),
]
THREAD_VALUES = [0, -1, -(2**40), 1.5, None, "2", 2**70, np.int32(2), True, 2**40]
NUM_VALUES = [math.nan, math.inf, -math.inf, 0.0, -1.0, -1e30, "x", None, [0.1]]


SCALAR_KINDS = ("int", "threads", "num")
MUTATION_GROUPS = ("arrays", "scalars", "aliases")


def group_of(kind):
    return "scalars" if kind in SCALAR_KINDS else "aliases" if kind == "alias" else "arrays"


def mutations_for(roles, group):
    """(argument index, mutation kind) pairs that apply to a call with these roles:
    group "arrays" breaks arrays (and optimizer lists), "scalars" the other arguments,
    "aliases" makes an output share memory with an input."""
    out = []
    for i, role in enumerate(roles):
        if role in ARRAY_ROLES:
            out += [
                (i, k)
                for k in (
                    "dtype",
                    "ndim+",
                    "ndim-",
                    "size",
                    "empty",
                    "strided",
                    "reversed",
                    "fortran",
                    "broadcast",
                    "readonly",
                    "list",
                    "scalar",
                    "none",
                )
            ]
            if role in OUTPUT_ROLES:
                out.append((i, "alias"))
            if role in ("target", "index"):
                out.append((i, "value"))
        elif role in ("int1", "int0"):
            out.append((i, "int"))
        elif role == "threads":
            out.append((i, "threads"))
        elif role == "num":
            out.append((i, "num"))
        elif role == "ws":
            out += [(i, k) for k in ("size", "dtype", "ndim+", "strided", "readonly", "list")]
        elif role in ("list_in", "list_out"):
            out += [(i, k) for k in ("short list", "array for list", "element", "element none", "tuple")]
    return [(i, k) for i, k in out if group_of(k) == group]


def _non_float(a, choice):
    if choice == "other float":
        return a.astype(np.float64 if a.dtype == np.float32 else np.float32)
    if choice == "object":
        return a.astype(object)
    return a.astype(choice)


def _break_array(a, kind, draw):
    """(new argument, whether the contract forbids it) for an array mutation."""
    if a is None:
        return None, False
    if kind == "dtype":
        choice = draw(
            st.sampled_from(
                WRONG_DTYPES if a.dtype.kind == "f" else ["int32", "float64", "float32", "uint64", "object"]
            )
        )
        return _non_float(a, choice), True
    if kind == "ndim+":
        return a.reshape(a.shape + (1,)).copy(), False
    if kind == "ndim-":
        return (a[0].copy() if a.ndim else a.reshape(1).copy()), False
    if kind in ("size", "empty") and a.ndim:
        axis = draw(st.integers(0, a.ndim - 1))
        shape = list(a.shape)
        shape[axis] = 0 if kind == "empty" else max(0, shape[axis] + draw(st.sampled_from([-1, 1, 2])))
        return np.resize(a, shape).astype(a.dtype), False
    axes = [d for d in range(a.ndim) if a.shape[d] >= 2]
    if kind in ("strided", "reversed", "fortran", "broadcast"):
        if kind == "strided" and a.ndim:
            axis = draw(st.integers(0, a.ndim - 1))
            big = np.repeat(a, 2, axis=axis)
            view = big[(slice(None),) * axis + (slice(None, None, 2),)]
        elif kind == "reversed" and axes:
            axis = draw(st.sampled_from(axes))
            view = np.flip(np.flip(a, axis).copy(), axis)
        elif kind == "fortran":
            view = np.asfortranarray(a)
        elif kind == "broadcast":
            view = np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim) if a.size else a, a.shape)
        else:
            return a, False
        return view, not view.flags.c_contiguous
    if kind == "readonly":
        ro = a.copy()
        ro.setflags(write=False)
        return ro, False  # forbidden only for outputs: decided by the caller
    if kind == "list":
        return a.tolist(), True
    if kind == "scalar":
        return 1.0, True
    return a, False


def _forbidden(new, forbidden, output):
    """A read-only array is also forbidden where the kernel writes."""
    read_only = isinstance(new, np.ndarray) and not new.flags.writeable
    return forbidden or (output and read_only)


def break_call(args, roles, i, kind, draw):
    """Apply one mutation to argument i; returns (args, must_raise, aliased)."""
    args = list(args)
    role, a = roles[i], args[i]
    if role != "ws":  # other sizes need other workspaces: let the kernel allocate its own
        args = [None if r == "ws" else x for x, r in zip(args, roles)]
    if role == "ws":  # a conv workspace: any size >= the one the compiled kernel asks
        if a is None:
            return args, False, False
        if kind == "size":
            args[i] = a[: draw(st.integers(0, a.size - 1))] if a.size else a
            return args, a.size > 0, False
        new, forbidden = _break_array(a, kind, draw)
        args[i] = new
        return args, _forbidden(new, forbidden, True), False
    if role in ARRAY_ROLES:
        if kind == "none":
            args[i] = None
            return args, not role.endswith("?"), False
        if kind == "alias":
            if a is None:
                return args, False, False
            same = [
                j
                for j, b in enumerate(args)
                if j != i
                and isinstance(b, np.ndarray)
                and roles[j] in ("in", "in?")
                and b.shape == a.shape
                and b.dtype == a.dtype
            ]
            if not same:
                return args, False, False
            args[i] = args[draw(st.sampled_from(same))]
            return args, False, True
        if kind == "value":
            bad = a.copy()
            if bad.size == 0:
                return args, False, False
            limit = 2**62
            if role == "target":
                n_classes = next(
                    b.shape[1]
                    for b, r in zip(args, roles)
                    if r in ("in", "out") and isinstance(b, np.ndarray) and b.ndim == 2
                )
                n_valid = n_classes
            else:
                n_valid = next(b.shape[2] * b.shape[3] for b, r in zip(args, roles) if r == "out")
            bad.reshape(-1)[draw(st.integers(0, bad.size - 1))] = draw(
                st.sampled_from([-1, n_valid, n_valid + 7, limit, -limit])
            )
            args[i] = bad
            return args, True, False
        new, forbidden = _break_array(a, kind, draw)
        args[i] = new
        return args, _forbidden(new, forbidden, role in OUTPUT_ROLES), False
    if kind == "int":
        value = draw(st.sampled_from(INT_VALUES))
        args[i] = value
        valid_types = isinstance(value, (int, np.integer))
        if not valid_types:
            return args, True, False  # floats, NaN, None, strings
        v = int(value)
        lowest = 1 if role == "int1" else 0
        return args, (v < lowest or v > 2**31), False
    if kind == "threads":
        value = draw(st.sampled_from(THREAD_VALUES))
        args[i] = value
        forbidden = not isinstance(value, (int, np.integer)) or int(value) < 1
        return args, forbidden, False
    if kind == "num":
        value = draw(st.sampled_from(NUM_VALUES))
        args[i] = value
        return args, isinstance(value, (str, list)) or value is None, False
    # optimizer lists
    arrays = list(a)
    if kind == "short list":
        args[i] = arrays[:-1]
        return args, True, False
    if kind == "array for list":
        args[i] = arrays[0]
        return args, True, False
    if kind == "tuple":
        args[i] = tuple(arrays)
        return args, False, False
    j = draw(st.integers(0, len(arrays) - 1))
    if kind == "element none":
        arrays[j] = None
        args[i] = arrays
        return args, True, False
    sub = draw(st.sampled_from(["dtype", "size", "strided", "reversed", "fortran", "readonly", "list", "ndim+"]))
    before = arrays[j].shape
    arrays[j], forbidden = _break_array(arrays[j], sub, draw)
    forbidden = _forbidden(arrays[j], forbidden, role == "list_out")
    if isinstance(arrays[j], np.ndarray) and arrays[j].shape != before:
        forbidden = True  # every role's array must have its parameter's shape
    args[i] = arrays
    return args, forbidden, False


def _arrays_of(args, roles, wanted):
    """(position, array) of every array in arguments with a role in ``wanted``."""
    found = []
    for i, (a, role) in enumerate(zip(args, roles)):
        if role not in wanted:
            continue
        items = a if isinstance(a, (list, tuple)) and role.startswith("list") else [a]
        for j, item in enumerate(items):
            if isinstance(item, np.ndarray):
                found.append(((i, j), item))
    return found


SECONDS_PER_CALL = 20  # the calls are tiny: a call this slow is stuck


def _run(kernel, args, roles):
    """Call the kernel; return (("ok", value) or ("error", exception), input snapshot)."""
    before_in = [(pos, a.copy()) for pos, a in _arrays_of(args, roles, ("in", "in?", "list_in"))]
    try:
        with watchdog(SECONDS_PER_CALL):
            result = ("ok", kernel(*args))
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        result = ("error", exc)
    return result, before_in


def _same_array(a, b):
    """Equal values (NaN equal to NaN) for arrays of any dtype, objects included."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    return all(x == y or (x != x and y != y) for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist()))


def _snapshot(args, roles):
    return [(pos, a.copy()) for pos, a in _arrays_of(args, roles, OUTPUT_ROLES)]


def check_abuse(name, group, dtype, seed, data):
    geometry_strategy, build = SPECS[name]
    geometry = data.draw(geometry_strategy, label="geometry")
    args, roles = build(geometry, np.dtype(dtype), rng_of(seed))
    i, kind = data.draw(st.sampled_from(mutations_for(roles, group)), label="mutation")
    # draw the mutation's own choices once, then apply them to two identical calls
    choices = []

    def recorder(strategy):
        value = data.draw(strategy)
        choices.append(value)
        return value

    broken, must_raise, aliased = break_call(args, roles, i, kind, recorder)
    replay = iter(choices)
    twin_args, _ = build(geometry, np.dtype(dtype), rng_of(seed))
    twin_broken, _, _ = break_call(twin_args, roles, i, kind, lambda s: next(replay))
    what = f"{name} with argument {i} ({roles[i]}) broken by {kind!r}"
    # the reference ignores the workspace's length: only the compiled kernel must refuse
    compiled_only = roles[i] == "ws" and kind == "size"
    outcomes = {}
    for side, kernel, call_args in (("compiled", compiled(name), broken), ("reference", reference(name), twin_broken)):
        if kernel is None or (compiled_only and side == "reference"):
            continue
        snapshot = _snapshot(call_args, roles)
        result, before_in = _run(kernel, call_args, roles)
        outcomes[side] = (result, call_args)
        if result[0] == "error":
            exc = result[1]
            assert isinstance(exc, ALLOWED_ERRORS), f"{what}: {side} raised {type(exc).__name__}: {exc}"
            assert name in str(exc), f"{what}: {side}'s error does not name the kernel: {exc}"
            for (pos, saved), (_, now) in zip(snapshot, _arrays_of(call_args, roles, OUTPUT_ROLES)):
                assert _same_array(saved, now), f"{what}: {side} raised ({exc}) after writing into argument {pos}"
        elif must_raise:
            raise AssertionError(f"{what}: {side} accepted the call")
        if not aliased:
            for (pos, saved), (_, now) in zip(before_in, _arrays_of(call_args, roles, ("in", "in?", "list_in"))):
                assert _same_array(saved, now), f"{what}: {side} changed input argument {pos}"
    if len(outcomes) == 2:
        (comp, comp_args), (ref, ref_args) = outcomes["compiled"], outcomes["reference"]
        assert comp[0] == ref[0], (
            f"{what}: the twins disagree: compiled {comp[0]} ({comp[1]!r}), reference {ref[0]} ({ref[1]!r})"
        )
        if comp[0] == "ok":
            _same_results(name, what, comp, ref, comp_args, ref_args, roles)


# kernels whose twins return different values by design (the reference needs no workspace)
RESULTS_DIFFER = {"conv2d_workspace_size"}


def _same_results(name, what, comp, ref, comp_args, ref_args, roles):
    if name in RESULTS_DIFFER:
        return
    if isinstance(ref[1], (int, float, tuple)) and not isinstance(ref[1], bool):
        np.testing.assert_allclose(
            np.asarray(comp[1], dtype=float),
            np.asarray(ref[1], dtype=float),
            rtol=1e-4,
            atol=1e-4,
            equal_nan=True,
            err_msg=what,
        )
    for (pos, a), (_, b) in zip(_arrays_of(comp_args, roles, OUTPUT_ROLES), _arrays_of(ref_args, roles, OUTPUT_ROLES)):
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            np.testing.assert_allclose(
                a,
                b,
                rtol=1e-4,
                atol=1e-4 * (1 + np.nanmax(np.abs(b), initial=0)),
                equal_nan=True,
                err_msg=f"{what}: argument {pos}",
            )
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: argument {pos}")


def target(name, group):
    """The hypothesis test of kernel ``name`` with its ``group`` of arguments broken."""

    @given(dtype=st.sampled_from(DTYPES), seed=seeds, data=st.data())
    def abuse(dtype, seed, data):
        check_abuse(name, group, dtype, seed, data)

    abuse.__name__ = f"abuse_{name}_{group}"
    return abuse


GROUPS = tuple(sorted({family_of(name) for name in SPECS}))  # kernel families (isolated.py)


def targets(family):
    """{"kernel group": hypothesis test} for every kernel of ``family`` and group of
    mutations (run by isolated.py in a child process). The groups are separate targets
    so that a failure in one does not stop the fuzzing of the others."""
    found = {}
    for name, (geometry, build) in SPECS.items():
        if family_of(name) != family:
            continue
        smallest = find(geometry, lambda _: True)  # roles do not depend on the sizes
        roles = build(smallest, np.dtype(np.float32), rng_of(0))[1]
        for group in MUTATION_GROUPS:
            if mutations_for(roles, group):
                found[f"{name} {group}"] = target(name, group)
    return found
