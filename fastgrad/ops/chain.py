"""A chain of layers run as one differentiable op: convolutions, linear layers, ReLU, max
pooling and flattening, in any order, forward and backward in one graph node.

Why: on a small CNN at small batch sizes a training step is mostly bookkeeping: one
validated call, one graph node, one engine visit and a handful of temporary arrays per
layer. A ``Chain`` is planned once per input shape (every geometry checked and every
workspace size computed then) and afterwards runs the kernels back to back on plain
arrays: the graph holds one node for the whole chain, and backward walks the layers in
reverse without the engine. The values and gradients are those of the layer-by-layer ops
bit for bit: the same steps run the same kernels on the same arrays (the one reordering,
a ReLU's backward applied after the max pool that follows it, is exact; see MaxPoolStep).

The steps are the ops' own: ConvStep (ops/conv.py), LinearStep (ops/linear.py),
MaxPoolStep (ops/pool.py), ReluStep (ops/activation.py) and ReshapeStep here; the
layer-by-layer ops run the same steps one graph node each.

``fastgrad.nn.Sequential`` builds the plans (fastgrad/nn/layers/chained.py) and calls
``run_chain``; every first call for a new input shape goes through the layer-by-layer
path, which validates the input and raises the usual errors, so a plan only ever sees
inputs of a shape already checked.

Each step has ``forward(x, weights, keep, bufs)`` -> (out, saved) and
``backward(grad, weights, saved, need_x, need_weights, bufs)`` -> (grad_x, weight grads),
side by side; ``bufs`` holds the arena arrays the step may write (see ChainPlan) and
``saved`` what backward reads (None when no gradient is wanted). Steps keep no state of
their own between calls, so one plan serves any number of graphs and threads.
"""
import numpy as np

from ..autograd import Function


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
        self.out_shape = steps[-1].out_shape if steps else None
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
            bufs = {}
            for name, spec in step.buffers.items():
                if (name == "out" and s == last) or (name == "gx" and s == first):
                    continue
                shape, dtype = spec if isinstance(spec[-1], type) else (spec, self.dtype)
                bufs[name] = np.empty(shape, dtype)
            arena.append(bufs)
        return arena

    def give_back(self, arena):
        if len(self.spare) < self._KEEP_ARENAS:
            self.spare.append(arena)


class Chain(Function):
    """out = the chain's steps applied in order. Inputs: x, then every step's weights."""

    fresh_grads = True  # weight and input gradients are new arrays (never arena ones)

    def forward(self, x, *weights, plan):
        keep = True in self.needs_input_grad
        h = np.ascontiguousarray(x)
        arena = plan.take_arena()
        saved, i = [], 0
        for step, bufs in zip(plan.steps, arena):
            k = step.n_weights
            h, s = step.forward(h, weights[i:i + k], keep, bufs)
            saved.append(s)
            i += k
        if keep:
            self.plan, self.weights, self.saved, self.arena = plan, weights, saved, arena
        else:
            plan.give_back(arena)
        return h

    def backward(self, grad):
        needs, weights, steps = self.needs_input_grad, self.weights, self.plan.steps
        grads = [None] * len(needs)
        # the first step that any wanted gradient passes through: nothing before it runs
        first, i = len(steps), 0
        if needs[0]:
            first = 0
        else:
            for s, step in enumerate(steps):
                if True in needs[1 + i:1 + i + step.n_weights]:
                    first = s
                    break
                i += step.n_weights
        g = np.ascontiguousarray(grad, dtype=self.plan.dtype)
        i, arena = len(weights), self.arena
        for s in range(len(steps) - 1, first - 1, -1):
            step = steps[s]
            k = step.n_weights
            i -= k
            g, step_grads = step.backward(g, weights[i:i + k], self.saved[s], s > first or needs[0],
                                          needs[1 + i:1 + i + k], arena[s])
            grads[1 + i:1 + i + k] = step_grads
        grads[0] = g if needs[0] else None
        return tuple(grads)

    def release(self):
        arena, plan = self.__dict__.get("arena"), self.__dict__.get("plan")
        super().release()
        if arena is not None:  # nothing refers to its arrays any more
            plan.give_back(arena)


def run_chain(plan, input, weight_tensors):
    """Apply a planned chain to ``input`` (a Tensor of the planned shape and dtype)."""
    return Chain.apply(input, *weight_tensors, plan=plan)
