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
reshaped view of one) becomes that arena position, so that one program serves every
arena of the plan; the input, a weight, the workspace or the incoming gradient (or a
reshaped view of one) becomes that slot; an array the steps asked ``StepBuffers.new`` for
is one the run made, which every replay makes anew with the same shape and dtype.
Anything that fits none of these (or a kernel that returned a value) leaves the chain
without a program: it keeps running its steps. Replayed calls still pass through each
kernel's own argument checks.
"""

import re

import numpy as np

from .. import kernels


class Recorder:
    """Stands in for ``fastgrad.kernels`` during a traced run: runs every kernel called
    through it and notes (kernel, arguments, result)."""

    def __init__(self):
        self.calls = []
        self.made = []  # the arrays the steps asked StepBuffers.new for, in order

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
    """Where a traced run's arrays come from: slot numbers for the arrays given to every
    run (and for those the run makes), and positions in the arena's list of arrays."""

    def __init__(self, given, arena, made):
        self.known = []  # (array, slot): given and made arrays, in slot order
        self.made = []  # (slot, shape, dtype) of the arrays each replay makes anew
        self.count = 0
        spans = []
        for a in given:
            if isinstance(a, np.ndarray):
                if a.size == 0:
                    raise Untraceable("an empty array")
                spans.append(_span(a))
                self.known.append((a, self.count))
            self.count += 1
        for a in made:
            if a.size == 0:
                raise Untraceable("an empty array")
            spans.append(_span(a))
            self.known.append((a, self.count))
            self.made.append((self.count, a.shape, a.dtype))
            self.count += 1
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:  # two given arrays share memory: a slot could not tell them apart
                raise Untraceable("given arrays overlap")
        self.arena = arena

    def place(self, a):
        """Where ``a`` comes from: ("slot", number, shape to view it as or None), ("arena",
        position, shape or None), or None for an argument that is not an array."""
        if not isinstance(a, np.ndarray):
            return None
        for known, slot in self.known:
            if a is known:
                return "slot", slot, None
        for k, known in enumerate(self.arena):
            if a is known:
                return "arena", k, None
        span = _span(a)
        for kind, pairs in (("slot", self.known), ("arena", [(b, k) for k, b in enumerate(self.arena)])):
            for known, k in pairs:
                if (
                    _span(known) == span
                    and a.dtype == known.dtype
                    and a.flags.c_contiguous
                    and known.flags.c_contiguous
                ):
                    return kind, k, (None if a.shape == known.shape else a.shape)
        # not given, not made by the run, not the arena's: an array a replay could not
        # find again (say, one a step keeps), so the chain keeps running its steps
        raise Untraceable(f"an argument of shape {a.shape} of unknown origin")


_TAKEN = {"run", "values", "arena", "empty"}  # the names a program's text itself uses
_GENERATED = re.compile(r"[sacv][0-9]+")  # and its slots, arena arrays, constants, views


class Program:
    """Kernel calls to replay, as one straight-line Python function ``run(values, arena)``.

    The function is written out once (its text is kept in ``source``), so that a replay
    costs one Python call per kernel call and little else: the slots and the arena's
    arrays are its local variables, the kernels and the other constants its globals, and
    the arrays each run makes are made at its top (``made``: (slot, shape, dtype)). It
    returns ``results`` rebuilt from the run's arrays (nested tuples and lists of arrays,
    or None), and appends the arrays it made to ``values``."""

    def __init__(self, calls, slots, results):
        names = {"empty": np.empty}

        def constant(a):
            if a is None or type(a) in (bool, int):
                return repr(a)  # exact, and read as fast as a name
            name = getattr(a, "__name__", None)  # a kernel: by its name, for the reader
            if not (
                isinstance(name, str)
                and name.isidentifier()
                and names.get(name, a) is a
                and name not in _TAKEN
                and not _GENERATED.fullmatch(name)
            ):
                name = f"c{len(names)}"
            names[name] = a
            return name

        lines, views = [], {}

        def expression(a):
            if isinstance(a, (tuple, list)):
                items = "".join(f"{expression(b)}, " for b in a)
                return f"({items})" if isinstance(a, tuple) else f"[{items}]"
            where = slots.place(a)
            if where is None:
                return constant(a)
            kind, k, shape = where
            name = f"{'s' if kind == 'slot' else 'a'}{k}"
            if shape is None:
                return name
            view = views.get((name, shape))
            if view is None:  # each reshaped view made once per run, where first needed
                view = views[name, shape] = f"v{len(views)}"
                lines.append(f"{view} = {name}.reshape({constant(shape)})")
            return view

        for kernel, args, result in calls:
            if result is not None:
                raise Untraceable(f"{kernel.__name__} returned a value")
            call = f"{constant(kernel)}({', '.join(expression(a) for a in args)})"
            lines.append(call)
        returned = expression(list(results))
        self.made = slots.made
        self.given = slots.count - len(slots.made)  # slots filled by the caller
        unpack = [
            f"{''.join(f'{p}{i}, ' for i in range(n))} = {src}"
            for p, n, src in (("s", self.given, "values"), ("a", len(slots.arena), "arena"))
            if n
        ]
        made = [f"s{slot} = empty({constant(shape)}, {constant(dtype)})" for slot, shape, dtype in self.made]
        self.source = "\n    ".join(
            [
                "def run(values, arena):",
                *unpack,
                *made,
                *lines,
                f"values.extend(({''.join(f's{slot}, ' for slot, _, _ in self.made)}))",
                f"return {returned}",
            ]
        )
        exec(compile(self.source, "<fastgrad chain program>", "exec"), names)
        # the traced run's arrays that change from run to run are slots or arena arrays,
        # never names: the program holds on to no run's input, output, gradients or arena
        self.run = names.pop("run")  # its globals must not hold it: no reference cycle

    @staticmethod
    def values(slots):
        """The traced run's own slot values (given and made), in slot order."""
        values = [None] * slots.count
        for a, slot in slots.known:
            values[slot] = a
        return values
