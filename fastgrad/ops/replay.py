"""A chain's kernel calls, traced on their first run and replayed afterwards.

A planned chain (ops/chain.py) makes the same kernel calls on every step of a training
loop: the same kernels, on the arrays of the same arena, with the same geometry. Only a
few arguments change from call to call: the input, the incoming gradient, the weights
(a parameter's data may be replaced), the arrays handed out of the chain (its output and
the weight gradients, new on every call) and the calling thread's workspace. A
``Program`` is the list of kernel calls of one traced run with those arguments marked as
slots; replaying it fills the slots and makes the calls one after another, without the
steps' Python (arena lookups, reshapes, the bookkeeping of which gradient goes where).

Tracing runs the steps as usual with a ``Recorder`` standing in for ``fastgrad.kernels``
(the steps call kernels through ``StepBuffers.kernels``), so a traced run computes what
it always did. Each argument of each call is then placed: an array of the arena (or a
view into one) stays as it is; the input, a weight, the workspace or the incoming
gradient (or a reshaped view of one) becomes that slot; an array that owns its memory
and none of those is an array the run made, which every replay makes anew with the same
shape and dtype. Anything that fits none of these (or a kernel that returned a value)
leaves the chain without a program: it keeps running its steps. Replayed calls still
pass through each kernel's own argument checks.
"""
import numpy as np

from .. import kernels


class Recorder:
    """Stands in for ``fastgrad.kernels`` during a traced run: runs every kernel called
    through it and notes (kernel, arguments, result)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        kernel = getattr(kernels, name)
        calls = self.calls

        def call(*args):
            result = kernel(*args)
            calls.append((kernel, args, result))
            return result

        return call


class Untraceable(Exception):
    """A traced run made a call a Program cannot replay."""


def _span(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


class Slots:
    """What a traced run's arrays are: slot numbers for the arrays given to every run (and
    for those the run makes), and the arena's arrays, which stay."""

    def __init__(self, given, fixed):
        self.known = []   # (array, slot): given and made arrays, in slot order
        self.made = []    # (slot, shape, dtype) of the arrays each replay makes anew
        self.count = 0
        spans = []
        for a in given:
            if isinstance(a, np.ndarray):
                if a.size == 0:
                    raise Untraceable("an empty array")
                spans.append(_span(a))
                self.known.append((a, self.count))
            self.count += 1
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:  # two given arrays share memory: a slot could not tell them apart
                raise Untraceable("given arrays overlap")
        self.fixed = [_span(a) for a in fixed]

    def place(self, a):
        """(slot, shape to view it as, or None), or None for an argument that stays."""
        if not isinstance(a, np.ndarray):
            return None
        for known, slot in self.known:
            if a is known:
                return slot, None
        start, end = _span(a)
        for known, slot in self.known:
            if (_span(known) == (start, end) and a.dtype == known.dtype
                    and a.flags.c_contiguous and known.flags.c_contiguous):
                return slot, (None if a.shape == known.shape else a.shape)
        for f_start, f_end in self.fixed:
            if f_start <= start and end <= f_end:
                return None
        if a.base is None and a.size:  # made by the run
            slot = self.count
            self.count += 1
            self.known.append((a, slot))
            self.made.append((slot, a.shape, a.dtype))
            return slot, None
        raise Untraceable(f"an argument of shape {a.shape} of unknown origin")


class Program:
    """Kernel calls to replay, as one straight-line Python function.

    The function is written out once (its text is kept in ``source``), so that a replay
    costs one Python call per kernel call and nothing else: the slots are its local
    variables, the arena's arrays and the kernels its globals, and the arrays each run
    makes are made at its top (``made``: (slot, shape, dtype))."""

    def __init__(self, calls, slots, results):
        names = {"empty": np.empty}

        def constant(a):
            if a is None or type(a) in (bool, int):
                return repr(a)  # exact, and read as fast as a name
            name = getattr(a, "__name__", None)  # a kernel: by its name, for the reader
            if not (isinstance(name, str) and name.isidentifier() and names.get(name, a) is a):
                name = f"c{len(names)}"
            names[name] = a
            return name

        def expression(a):
            where = slots.place(a)
            if where is None:
                return constant(a)
            slot, shape = where
            return f"s{slot}" if shape is None else f"s{slot}.reshape({constant(shape)})"

        lines = []
        for kernel, args, result in calls:
            if result is not None:
                raise Untraceable(f"{kernel.__name__} returned a value")
            lines.append(f"{constant(kernel)}({', '.join(expression(a) for a in args)})")
        returned = [expression(r) for r in results]
        self.made = slots.made
        self.given = slots.count - len(slots.made)  # slots filled by the caller
        given = "".join(f"s{i}, " for i in range(self.given))
        made = [f"s{slot} = empty({constant(shape)}, {constant(dtype)})"
                for slot, shape, dtype in self.made]
        self.source = "\n    ".join(
            [f"def run(values):", f"{given} = values" if given else "pass", *made, *lines,
             f"values.extend(({''.join(f's{slot}, ' for slot, _, _ in self.made)}))",
             f"return [{', '.join(returned)}]"])
        exec(compile(self.source, "<fastgrad chain program>", "exec"), names)
        # the traced run's arrays that change from run to run are slots, never names:
        # the program holds on to no run's input, output or gradients
        self.run = names.pop("run")  # its globals must not hold it: no reference cycle

    @staticmethod
    def values(slots):
        """The traced run's own slot values (given and made), in slot order."""
        values = [None] * slots.count
        for a, slot in slots.known:
            values[slot] = a
        return values
