"""A chain of layers run as one differentiable op: convolutions, linear layers, ReLU, max
pooling and flattening, in any order, forward and backward in one graph node.

Why: on a small CNN at small batch sizes a training step is mostly bookkeeping: one
validated call, one graph node, one engine visit and a handful of temporary arrays per
layer. A ``Chain`` is planned once per input shape (every geometry checked and every
workspace size computed then) and afterwards runs the kernels back to back on plain
arrays: the graph holds one node for the whole chain, and backward walks the layers in
reverse without the engine. After the first run (and first backward) of a plan, the
kernel calls the steps made are replayed instead of the steps (ops/replay.py): one
Python call per kernel call. The values and gradients are those of the layer-by-layer
ops bit for bit: the same steps run the same kernels on the same arrays (the one
reordering, a ReLU's backward applied after the max pool that follows it, is exact; see
MaxPoolStep).

The steps are the ops' own: ConvStep (ops/conv.py), LinearStep (ops/linear.py),
MaxPoolStep (ops/pool.py), ReluStep (ops/activation.py) and ReshapeStep here; the
layer-by-layer ops run the same steps one graph node each.

``fastgrad.nn.Sequential`` builds the plans (fastgrad/nn/layers/chained.py) and calls
``run_chain``; every first call for a new input shape goes through the layer-by-layer
path, which validates the input and raises the usual errors, so a plan only ever sees
inputs of a shape already checked.

Each step has ``forward(x, weights, keep, bufs)`` -> (out, saved) and
``backward(grad, weights, saved, need_x, need_weights, bufs)`` -> (grad_x, weight grads),
side by side; ``bufs`` (a StepBuffers) holds the arena arrays the step may write (see
ChainPlan), makes the arrays it hands out (``bufs.new``) and names the kernels it calls
(``bufs.kernels``); ``saved`` is what backward reads (None when no gradient is wanted).
Steps keep no state of their own between calls, so one plan serves any number of graphs
and threads.
"""

import contextlib

import numpy as np

from ..autograd import Function
from ._util import StepBuffers
from .conv import workspace
from .replay import Program, Recorder, Slots, Untraceable


class ReshapeStep:
    """A reshape of a C-contiguous array (Flatten): no data moves either way."""

    n_weights = 0
    buffers = {}

    def __init__(self, x_shape, out_shape):
        self.x_shape, self.out_shape = x_shape, out_shape

    def forward(self, x, weights, keep, bufs):
        return x.reshape(self.out_shape), None

    def backward(self, grad, weights, saved, need_x, need_weights, bufs):
        return grad.reshape(self.x_shape), []


class Arena:
    """The arrays one chain call writes and throws away: a StepBuffers per step, and the
    same arrays as one list (``arrays``, in an order every arena of a plan shares), which
    is what a replayed program reads them from."""

    __slots__ = ("bufs", "arrays")

    def __init__(self, bufs):
        self.bufs = bufs
        self.arrays = [a for b in bufs for a in b.values()]


class Traced:
    """A chain's forward program, and its backward program once a backward was traced."""

    __slots__ = ("forward", "backward")

    def __init__(self, forward):
        self.forward, self.backward = forward, None


class ChainPlan:
    """The steps of a chain for one input shape, dtype and thread count, and a few
    arenas: per step, the arrays a call writes and throws away (intermediate outputs,
    saved indices, gradients passed between steps). A call takes an arena and gives it
    back when its graph is released, so a training loop reuses the same memory every
    step instead of asking the allocator for fresh pages (their first touch costs as much
    as a pass over them). The chain's output and the gradients it returns are never
    arena arrays: they outlive the call."""

    _KEEP_ARENAS = 2  # spare arenas kept: more only matter when graphs pile up

    def __init__(self, steps, dtype):
        self.steps, self.dtype = steps, dtype
        # per needs_input_grad pattern: a Traced, or False when the chain's calls cannot
        # be replayed (it then always runs its steps)
        self.programs = {}
        self.out_shape = steps[-1].out_shape if steps else None
        # the largest workspace any step asks for: taken once per call, so that every
        # kernel call of a traced run sees the same array
        self.ws_size = max((size for step in steps for size in getattr(step, "ws_sizes", {}).values()), default=0)
        self.spare = []

    def take_arena(self):
        try:
            return self.spare.pop()
        except IndexError:
            pass
        # the last step that writes an output and the first that writes an input
        # gradient hand theirs out of the chain (a Flatten around them is only a view)
        writers = [s for s, step in enumerate(self.steps) if step.buffers]
        last, first = (writers[-1], writers[0]) if writers else (-1, -1)
        arena = []
        for s, step in enumerate(self.steps):
            bufs = StepBuffers()
            for name, spec in step.buffers.items():
                if (name == "out" and s == last) or (name == "gx" and s == first):
                    continue
                shape, dtype = spec if isinstance(spec[-1], type) else (spec, self.dtype)
                bufs[name] = np.empty(shape, dtype)
            arena.append(bufs)
        return Arena(arena)

    def give_back(self, arena):
        if len(self.spare) < self._KEEP_ARENAS:
            self.spare.append(arena)


class Chain(Function):
    """out = the chain's steps applied in order. Inputs: x, then every step's weights.

    The first call of a plan (for a pattern of wanted gradients) runs the steps and
    traces their kernel calls, and so does its first backward; later calls, on any of
    the plan's arenas, replay them (ops/replay.py)."""

    fresh_grads = True  # weight and input gradients are new arrays (never arena ones)

    def forward(self, x, *weights, plan):
        needs = self.needs_input_grad
        keep = True in needs
        h = np.ascontiguousarray(x)
        arena = plan.take_arena()
        values = [h, *weights, workspace(plan.ws_size, plan.dtype)]
        traced = plan.programs.get(needs)
        if traced:
            h, saved = traced.forward.run(values, arena.arrays)
        else:
            h, saved = self._run_steps(values, keep, plan, arena, traced is None)
        if keep:
            self.plan, self.weights, self.arena = plan, weights, arena
            self.values, self.saved = values, saved
            # backward replays (or traces) the programs this forward's slots came from,
            # even if another thread has traced the plan anew since
            self.traced = traced if traced is not None else plan.programs.get(needs)
        else:
            plan.give_back(arena)
        return h

    def _run_steps(self, values, keep, plan, arena, trace):
        """Run the steps, tracing their calls when ``trace``; (output, saved per step)."""
        h, weights = values[0], values[1:-1]
        with _recording(arena, trace) as recorder:
            saved, i = [], 0
            for step, bufs in zip(plan.steps, arena.bufs):
                k = step.n_weights
                h, s = step.forward(h, weights[i : i + k], keep, bufs)
                saved.append(s)
                i += k
        if recorder is not None:
            program, slots = _program(recorder, values, arena, [h, saved])
            plan.programs[self.needs_input_grad] = Traced(program) if program else False
            if program:
                values[:] = Program.values(slots)  # the arrays the run made join its slots
        return h, saved

    def backward(self, grad):
        needs, plan, arena = self.needs_input_grad, self.plan, self.arena
        g = np.ascontiguousarray(grad, dtype=plan.dtype)
        # the forward's slots, less its workspace (this thread brings its own)
        given = self.values[:]
        given[len(self.weights) + 1] = None
        given += [workspace(plan.ws_size, plan.dtype), g]
        traced = self.traced
        if traced and traced.backward is not None:
            return tuple(traced.backward.run(given, arena.arrays))
        # a traced forward whose backward is not traced yet: trace it now
        with _recording(arena, bool(traced)) as recorder:
            grads = self._backward_steps(g)
        if recorder is not None:
            program, _ = _program(recorder, given, arena, grads)
            if program:
                traced.backward = program
            else:
                plan.programs[needs] = False
        return tuple(grads)

    def _backward_steps(self, g):
        needs, weights, steps = self.needs_input_grad, self.weights, self.plan.steps
        grads = [None] * len(needs)
        # the first step that any wanted gradient passes through: nothing before it runs
        first, i = len(steps), 0
        if needs[0]:
            first = 0
        else:
            for s, step in enumerate(steps):
                if True in needs[1 + i : 1 + i + step.n_weights]:
                    first = s
                    break
                i += step.n_weights
        i, bufs = len(weights), self.arena.bufs
        for s in range(len(steps) - 1, first - 1, -1):
            step = steps[s]
            k = step.n_weights
            i -= k
            g, step_grads = step.backward(
                g, weights[i : i + k], self.saved[s], s > first or needs[0], needs[1 + i : 1 + i + k], bufs[s]
            )
            grads[1 + i : 1 + i + k] = step_grads
        grads[0] = g if needs[0] else None
        return grads

    def release(self):
        arena, plan = self.__dict__.get("arena"), self.__dict__.get("plan")
        super().release()
        if arena is not None:  # nothing refers to its arrays any more
            plan.give_back(arena)

    def __del__(self):
        # a graph dropped without a backward (say, a loss computed for logging): nothing
        # else refers to its arena's arrays, so a later call may have them
        arena = self.__dict__.get("arena")
        if arena is not None:
            self.__dict__["plan"].give_back(arena)


@contextlib.contextmanager
def _recording(arena, trace):
    """While the block runs, the arena's steps call their kernels through a new Recorder,
    which is yielded, when ``trace``; otherwise nothing changes and None is yielded."""
    if not trace:
        yield None
        return
    recorder = Recorder()
    for bufs in arena.bufs:
        bufs.kernels = recorder
    try:
        yield recorder
    finally:
        for bufs in arena.bufs:
            del bufs.kernels  # back to StepBuffers.kernels, fastgrad.kernels


def _program(recorder, given, arena, results):
    """(the Program of a traced run, its Slots), or (None, None) when its calls cannot be
    replayed."""
    try:
        slots = Slots(given, arena.arrays, recorder.made)
        return Program(recorder.calls, slots, results), slots
    except Untraceable:
        return None, None


def run_chain(plan, input, weight_tensors):
    """Apply a planned chain to ``input`` (a Tensor of the planned shape and dtype)."""
    return Chain.apply(input, *weight_tensors, plan=plan)
