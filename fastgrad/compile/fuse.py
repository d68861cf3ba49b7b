"""Fusions a captured plan can make because it sees the whole forward: a ReLU whose only
input is an op's output that nothing else reads runs inside that op.

- Convolution, linear layer, batch normalization: the op's own fused ReLU (``relu=True``:
  the ReLU in the kernel's output pass; backward, the convolution's and linear layer's
  Steps apply the ReLU's mask before the products, and the batch normalization kernel
  masks the gradient as it reads it).
- The sum of two arrays of one shape and float dtype (a residual join): one AddReLU
  (ops/activation.py), the sum and its ReLU in one pass.

And a max pooling whose input is such a convolution's output, read by nothing else, takes
the ReLU's backward over (MaxPoolStep.take_relu_mask, ops/pool.py): the pooled gradient
is masked, a quarter of the output's size for 2x2 windows, instead of the convolution's.

Each saves a pass over the output and an array. The values and gradients are the unfused
ops' bit for bit (ReLU is exact, the sums are numpy's, and the fused kernels apply the
same mask to the same gradient; tests/compile, tests/kernels/test_norm.py and
tests/kernels/test_activation.py check it).
"""

import numpy as np

from ..ops.activation import AddReLU, ReLU
from ..ops.conv import Conv2d, ConvStep
from ..ops.elementwise import Add
from ..ops.linear import Linear, LinearStep
from ..ops.norm import BatchNorm
from ..ops.pool import MaxPool2d, MaxPoolStep
from .plan import Entry

FUSES_RELU = (Conv2d, Linear, BatchNorm)  # the ops whose kernels take relu=True


def _conv_step(step, relu, has_bias=None):
    """A new ConvStep of ``step``'s geometry with its ReLU on or off (and a bias or not)."""
    has_bias = step.n_weights == 2 if has_bias is None else has_bias
    return ConvStep(step.x_shape, step.w_shape, has_bias, step.params, step.out_shape[2:], relu, step.n_threads)


def _relu_step(step):
    """The Step of the same geometry with its ReLU on."""
    if isinstance(step, ConvStep):
        return _conv_step(step, True)
    return LinearStep(step.x_shape, step.w_shape, step.n_weights == 2, True, step.n_threads)


def _producers(entries, out_slot, cls):
    """(index, entry, producer index, producer) for each entry of class ``cls`` whose first
    input only it reads, written by one entry (the pairs a fusion may join)."""
    sole_producer = _sole_producer(entries, out_slot)
    for i, e in enumerate(entries):
        if e.cls is not cls or not e.ins:
            continue
        p = sole_producer(e.ins[0])
        if p is not None:
            yield i, e, p, entries[p]


def _same_float_arrays(meta, a, b):
    """Whether slots a and b hold arrays of one shape and float dtype (no broadcast);
    ``meta``: (shape, dtype) per slot."""
    (x_shape, x_dtype), (y_shape, y_dtype) = meta[a], meta[b]
    return x_shape == y_shape and x_dtype == y_dtype and x_dtype.kind == "f"


def _sole_producer(entries, out_slot):
    """A function of a slot: the index of the entry that wrote it when exactly one entry
    reads it and it is not the plan's output (its producer may then fuse with that
    reader), else None."""
    producer, readers = {}, {}
    for i, e in enumerate(entries):
        producer[e.out] = i
        for k in e.ins:
            readers[k] = readers.get(k, 0) + 1

    def sole(k):
        return producer.get(k) if k != out_slot and readers.get(k) == 1 else None

    return sole


def fuse_relus(entries, out_slot, meta):
    """(entries with each fusable producer + ReLU pair made one entry, a map from old
    entry index to new index, None for a ReLU folded into its producer). ``meta``: the
    (shape, dtype) of each slot's array (they decide whether an Add may fuse)."""
    fused = {}  # producer index -> the ReLU entry folded into it
    folded = set()
    for i, e, p, prod in _producers(entries, out_slot, ReLU):
        if len(e.ins) != 1:
            continue
        if prod.cls is Add:
            if not _same_float_arrays(meta, *prod.ins):
                continue
        elif prod.cls not in FUSES_RELU or prod.params.get("relu"):
            continue
        elif prod.cls is not BatchNorm and "step" not in prod.params:
            continue
        if e.needs != (prod.wants_grad,):
            continue
        fused[p], _ = e, folded.add(i)
    out, index = [], {}
    for i, e in enumerate(entries):
        if i in folded:
            index[i] = None
            continue
        relu = fused.get(i)
        if relu is not None and e.cls is Add:  # the residual join: one pass
            e = Entry(AddReLU, e.ins, {}, e.needs, relu.out, e.site)
        elif relu is not None:
            params = dict(e.params, relu=True)
            if "step" in params:
                params["step"] = _relu_step(params["step"])
            e = Entry(e.cls, e.ins, params, e.needs, relu.out, e.site)
        index[i] = len(out)
        out.append(e)
    return _pools_mask_relus(out, out_slot), index


def _pools_mask_relus(entries, out_slot):
    """The entries with each max pooling after a convolution's fused ReLU (whose output
    only the pooling reads) applying that ReLU's backward: both get Steps of their own."""
    entries = list(entries)
    for i, e, p, conv in _producers(entries, out_slot, MaxPool2d):
        if "step" not in e.params or e.params.get("indices") is not None:
            continue
        step = conv.params.get("step")
        if conv.cls is not Conv2d or not conv.params.get("relu") or step is None or step.pool_masks:
            continue
        if e.needs != (conv.wants_grad,):
            continue
        conv_step = _conv_step(step, True)
        pool = e.params["step"]
        pool_step = MaxPoolStep(pool.x_shape, pool.params, pool.out_shape[2:], pool.n_threads)
        pool_step.take_relu_mask(conv_step)
        entries[p] = Entry(conv.cls, conv.ins, dict(conv.params, step=conv_step), conv.needs, conv.out, conv.site)
        entries[i] = Entry(e.cls, e.ins, dict(e.params, step=pool_step), e.needs, e.out, e.site)
    return entries


def fold_batchnorms(entries, out_slot, constant_of, new_constant):
    """With ``freezing`` (parameters taken as constants, as torch.compile's
    ``options={"freezing": True}``), in a plan that computes no gradient: each eval-mode
    BatchNorm whose input is a convolution's output that nothing else reads is folded
    into that convolution, whose weights become w * g / sqrt(var + eps) per output channel
    and whose bias (b - mean) * g / sqrt(var + eps) + beta (in float64, then the weights'
    dtype): one convolution instead of a convolution and a pass over its output. The
    values change by rounding only (tests/compile/test_compile.py bounds the change).

    ``constant_of(slot)``: the array a boundary slot holds (a parameter's), or None when
    the slot is not one; ``new_constant(array)``: the slot of a new constant."""
    folded, replaced = set(), {}
    for i, e, p, conv in _producers(entries, out_slot, BatchNorm):
        if e.params["use_batch_stats"] or e.wants_grad:
            continue
        step = conv.params.get("step")
        if conv.cls is not Conv2d or step is None or conv.params.get("relu") or conv.wants_grad:
            continue
        arrays = [constant_of(k) for k in conv.ins[1:] + e.ins[1:]]
        if any(a is None for a in arrays):
            continue  # a weight computed in the forward: not a constant
        w, b = arrays[0], (arrays[1] if len(conv.ins) == 3 else None)
        affine = arrays[len(conv.ins) - 1 :]
        gamma = affine[0] if e.params["has_weight"] else None
        beta = affine[-1] if e.params["has_bias"] else None
        p64 = np.float64
        scale = 1.0 / np.sqrt(e.params["running_var"].astype(p64) + e.params["eps"])
        if gamma is not None:
            scale = scale * gamma.astype(p64)
        shift = -e.params["running_mean"].astype(p64) * scale
        if b is not None:
            shift = shift + b.astype(p64) * scale
        if beta is not None:
            shift = shift + beta.astype(p64)
        w_slot = new_constant((w.astype(p64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype))
        b_slot = new_constant(shift.astype(w.dtype))
        relu = bool(e.params.get("relu"))
        params = dict(conv.params, relu=relu, step=_conv_step(step, relu, has_bias=True))
        replaced[p] = Entry(Conv2d, [conv.ins[0], w_slot, b_slot], params, (False,) * 3, e.out, conv.site)
        folded.add(i)
    if not folded:
        return entries
    return [replaced.get(i, e) for i, e in enumerate(entries) if i not in folded]
