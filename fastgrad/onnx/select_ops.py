"""ONNX forms of selection by a mask and of table lookups: where / masked_fill
(fastgrad.ops.select) -> Where, embedding (fastgrad.ops.embedding) -> Gather.

The condition of a where and the indices of an embedding are arrays the forward holds,
not inputs of its node: they are written as constants (and checked, through
``table.holds``, not to change with the input's values), except indices that are an
integer input of the graph, which stay that input.
"""

import numpy as np

from ..ops import embedding, select
from .table import holds, maps


def where_condition(node):
    """The bool condition (broadcast to the output's shape) of a Where node."""
    return node.condition


@holds(select.Where)
def _where_held(node):
    return [where_condition(node)]


@maps(select.Where)
def where(g, node, x, out):
    return g.op("Where", [g.const(np.ascontiguousarray(where_condition(node)), "condition"), x[0], x[1]])


def embedding_indices(node):
    """The int64 indices an Embedding node looked its weight's rows up with."""
    return node.indices


@holds(embedding.Embedding)
def _embedding_held(node):
    return [embedding_indices(node)]


@maps(embedding.Embedding)
def embedding_op(g, node, x, out):
    indices = np.asarray(embedding_indices(node))
    name = g.integer_input(indices)
    if name is None:
        name = g.const(indices.astype(np.int64), "indices")
    # the output's leading axes are the indices' (a dynamic batch of them stays dynamic)
    return g.note(g.op("Gather", [x[0], name], axis=0), out.shape, g.dyn.get(name, {}))
