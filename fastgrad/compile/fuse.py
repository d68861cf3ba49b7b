"""Fusions a captured plan can make because it sees the whole forward: a ReLU whose only
input is a convolution's or a linear layer's output that nothing else reads becomes that
op's own fused ReLU (``relu=True``: bias and ReLU in the kernel's output pass, the
Steps' ReLU backward before the products), which saves a pass over the output and an
array. The values and gradients are the unfused ops' bit for bit (ReLU is exact, and
the fused Steps apply the same mask to the same gradient; tests/compile check it).
"""

from ..ops.activation import ReLU
from ..ops.conv import Conv2d, ConvStep
from ..ops.linear import Linear, LinearStep
from .plan import Entry


def _relu_step(step):
    """The Step of the same geometry with its ReLU on."""
    if isinstance(step, ConvStep):
        return ConvStep(
            step.x_shape, step.w_shape, step.n_weights == 2, step.params, step.out_shape[2:], True, step.n_threads
        )
    return LinearStep(step.x_shape, step.w_shape, step.n_weights == 2, True, step.n_threads)


def fuse_relus(entries, out_slot):
    """(entries with each fusable producer + ReLU pair made one entry, a map from old
    entry index to new index, None for a ReLU folded into its producer)."""
    producer, readers = {}, {}
    for i, e in enumerate(entries):
        producer[e.out] = i
        for k in e.ins:
            readers[k] = readers.get(k, 0) + 1
    fused = {}  # producer index -> the ReLU entry folded into it
    folded = set()
    for i, e in enumerate(entries):
        if e.cls is not ReLU or len(e.ins) != 1:
            continue
        k = e.ins[0]
        p = producer.get(k)
        if p is None or k == out_slot or readers[k] != 1:
            continue
        prod = entries[p]
        if prod.cls not in (Conv2d, Linear) or prod.params.get("relu") or "step" not in prod.params:
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
        if relu is not None:
            params = dict(e.params, relu=True, step=_relu_step(e.params["step"]))
            e = Entry(e.cls, e.ins, params, e.needs, relu.out, e.site)
        index[i] = len(out)
        out.append(e)
    return out, index
