"""A chain of layers run as one differentiable op: convolutions, linear layers, ReLU, max
pooling and flattening, in any order, forward and backward in one graph node.

Why: on a small CNN at small batch sizes a training step is mostly bookkeeping: one
validated call, one graph node, one engine visit and a handful of temporary arrays per
layer. A ``Chain`` is planned once per input shape (every geometry checked and every
workspace size computed then) and afterwards runs the kernels back to back on plain
arrays: the graph holds one node for the whole chain, and backward walks the layers
in reverse without the engine. The values and gradients are those of the layer-by-layer
ops bit for bit: the same kernels are called with the same arguments in the same order.

``fastgrad.nn.Sequential`` builds the plans (``plan_chain``) and calls ``run_chain``;
every first call for a new input shape goes through the layer-by-layer path, which
validates the input and raises the usual errors, so a plan only ever sees inputs of a
shape already checked.

Each step has ``forward(x, weights, keep)`` -> (out, saved) and
``backward(grad, weights, saved, need_x, need_weights)`` -> (grad_x, weight grads), side
by side. ``saved`` is what backward reads (None when no gradient is wanted); steps keep no
state of their own between calls, so one plan serves any number of graphs and threads.
"""
import math

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from .conv import conv_geometry, workspace, workspace_size
from .pool import max_pool_geometry


def _array(bufs, name, shape, dtype):
    """The arena's array ``name`` for this call, or a new one when the plan gives none
    (the chain's own output and input gradient leave the chain: they are always new)."""
    a = bufs.get(name)
    return np.empty(shape, dtype) if a is None else a


class ConvStep:
    """conv2d (+ bias) (then ReLU); weights: (weight[, bias])."""

    def __init__(self, x_shape, w_shape, has_bias, stride, padding, dilation, groups, relu,
                 n_threads):
        params, out_hw = conv_geometry("conv2d", x_shape, w_shape, stride, padding, dilation,
                                       groups)
        self.params, self.relu, self.n_threads = params, relu, n_threads
        self.n_weights = 2 if has_bias else 1
        self.x_shape, self.w_shape = x_shape, w_shape
        self.out_shape = (x_shape[0], w_shape[0]) + out_hw
        self.buffers = {"out": self.out_shape, "gx": x_shape}
        if relu:
            self.buffers["masked"] = self.out_shape
        self.pool_masks = False  # set when a max pool after it applies the ReLU's mask
        backend = kernels.backend
        self.ws_sizes = {kind: workspace_size(backend, kind, x_shape, w_shape, self.out_shape,
                                              params, n_threads)
                         for kind in ("forward", "backward_input", "backward_weight")}

    def forward(self, x, weights, keep, bufs):
        bias = weights[1] if self.n_weights == 2 else None
        out = _array(bufs, "out", self.out_shape, x.dtype)
        kernels.conv2d_forward(x, weights[0], bias, out, *self.params, self.relu,
                               workspace(self.ws_sizes["forward"], x.dtype), self.n_threads)
        return out, ((x, out) if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights, bufs):
        x, out = saved
        dtype, params, n_threads = x.dtype, self.params, self.n_threads
        if self.relu and not self.pool_masks:  # gradient flows where the output is positive
            masked = bufs["masked"]
            kernels.relu_backward(out, grad, masked, n_threads)
            grad = masked
        gx = None
        if need_x:
            gx = _array(bufs, "gx", self.x_shape, dtype)
            kernels.conv2d_backward_input(grad, weights[0], gx, *params,
                                          workspace(self.ws_sizes["backward_input"], dtype),
                                          n_threads)
        grads = [None] * self.n_weights
        if need_weights[0]:
            gw = grads[0] = np.empty(self.w_shape, dtype)
            kernels.conv2d_backward_weight(x, grad, gw, *params,
                                           workspace(self.ws_sizes["backward_weight"], dtype),
                                           n_threads)
        if self.n_weights == 2 and need_weights[1]:
            gb = grads[1] = np.empty(self.w_shape[0], dtype)
            kernels.conv2d_backward_bias(grad, gb, n_threads)
        return gx, grads


class LinearStep:
    """x @ weight.T (+ bias) (then ReLU) over the last dimension; weights: (weight[, bias])."""

    def __init__(self, x_shape, w_shape, has_bias, relu, n_threads):
        self.rows = math.prod(x_shape[:-1])
        self.x_shape, self.w_shape = x_shape, w_shape
        self.rows_shape = (self.rows, w_shape[1])
        self.out_rows_shape = (self.rows, w_shape[0])
        self.out_shape = tuple(x_shape[:-1]) + (w_shape[0],)
        self.relu, self.n_threads = relu, n_threads
        self.n_weights = 2 if has_bias else 1
        self.buffers = {"out": self.out_rows_shape, "gx": self.rows_shape}
        if relu:
            self.buffers["masked"] = self.out_rows_shape

    def forward(self, x, weights, keep, bufs):
        x2 = x.reshape(self.rows_shape)
        bias = weights[1] if self.n_weights == 2 else None
        out = _array(bufs, "out", self.out_rows_shape, x.dtype)
        kernels.linear_forward(x2, weights[0], bias, out, self.relu, self.n_threads)
        return out.reshape(self.out_shape), ((x2, out) if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights, bufs):
        x2, out = saved
        dtype, n_threads = x2.dtype, self.n_threads
        grad = grad.reshape(self.out_rows_shape)
        if self.relu:
            masked = bufs["masked"]
            kernels.relu_backward(out, grad, masked, n_threads)
            grad = masked
        gx = None
        if need_x:
            gx = _array(bufs, "gx", self.rows_shape, dtype)
            kernels.linear_backward_input(grad, weights[0], gx, n_threads)
            gx = gx.reshape(self.x_shape)
        grads = [None] * self.n_weights
        if need_weights[0]:
            gw = grads[0] = np.empty(self.w_shape, dtype)
            kernels.linear_backward_weight(x2, grad, gw, n_threads)
        if self.n_weights == 2 and need_weights[1]:
            gb = grads[1] = np.empty(self.w_shape[0], dtype)
            kernels.linear_backward_bias(grad, gb, n_threads)
        return gx, grads


class ReluStep:
    """max(x, 0) on its own (a ReLU that follows no convolution or linear layer)."""

    n_weights = 0

    def __init__(self, x_shape, n_threads):
        self.out_shape, self.n_threads = x_shape, n_threads
        self.buffers = {"out": x_shape, "gx": x_shape}

    def forward(self, x, weights, keep, bufs):
        out = _array(bufs, "out", self.out_shape, x.dtype)
        kernels.relu_forward(x, out, self.n_threads)
        return out, (out if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights, bufs):
        gx = _array(bufs, "gx", self.out_shape, grad.dtype)
        kernels.relu_backward(saved, grad, gx, self.n_threads)
        return gx, []


class MaxPoolStep:
    """2-d max pooling; saves the index of each maximum.

    After a convolution with a fused ReLU it also takes over that ReLU's backward
    (``mask_relu``): every pooled value is one of the ReLU's outputs, so "the output at
    the chosen index is positive" is "the pooled value is positive", and masking the
    pooled gradient before scattering it gives the same gradient bit for bit (each
    element is kept or zeroed whole) in a pass a quarter of the size, for 2x2 windows.
    """

    n_weights = 0

    def __init__(self, x_shape, kernel_size, stride, padding, dilation, ceil_mode, n_threads):
        self.params, out_hw = max_pool_geometry("max_pool2d", x_shape, kernel_size, stride,
                                                padding, dilation, ceil_mode)
        self.x_shape, self.out_shape = x_shape, tuple(x_shape[:2]) + out_hw
        self.n_threads = n_threads
        self.buffers = {"out": self.out_shape, "gx": x_shape, "indices": (self.out_shape, np.int64)}
        self.mask_relu = False

    def take_relu_mask(self, conv):
        """Apply the preceding ConvStep's ReLU backward here instead of there."""
        conv.pool_masks = self.mask_relu = True
        self.buffers["masked"] = self.out_shape

    def forward(self, x, weights, keep, bufs):
        out = _array(bufs, "out", self.out_shape, x.dtype)
        indices = bufs["indices"]
        kernels.max_pool2d_forward(x, out, indices, *self.params, self.n_threads)
        return out, ((indices, out) if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights, bufs):
        indices, out = saved
        if self.mask_relu:
            masked = bufs["masked"]
            kernels.relu_backward(out, grad, masked, self.n_threads)
            grad = masked
        gx = _array(bufs, "gx", self.x_shape, grad.dtype)
        kernels.max_pool2d_backward(grad, indices, gx, self.n_threads)
        return gx, []


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
