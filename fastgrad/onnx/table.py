"""The table of ONNX mappings: Function class -> the small function that writes its ONNX
form. ``@maps(SomeFunction)`` adds an entry; ``fastgrad/onnx/__init__.py`` says how to
write one."""

import numpy as np

MAPPINGS = {}


def maps(*function_classes):
    """Register the decorated function as the ONNX form of ``function_classes``."""

    def register(fn):
        for cls in function_classes:
            if cls in MAPPINGS:
                raise ValueError(f"{cls.__name__} is mapped twice ({MAPPINGS[cls].__name__}, {fn.__name__})")
            MAPPINGS[cls] = fn
        return fn

    return register


def broadcast_dyn(g, inputs, out_ndim):
    """The dynamic axes of an op's output that lines its inputs up from the right (numpy
    broadcasting, and every op that keeps its input's rank)."""
    dyn = {}
    for name in inputs:
        if not name or name not in g.dyn:
            continue
        shift = out_ndim - len(g.shapes[name])
        for axis, symbol in g.dyn[name].items():
            dyn.setdefault(axis + shift, symbol)
    return dyn


# Arrays an op's forward holds outside its inputs (a where's condition, an embedding's
# indices): the export writes them as constants, so they are checked, like the
# constants among the inputs, not to change with the input's values.
HELD_ARRAYS = {}


def holds(*function_classes):
    """Register the decorated ``node -> [array, ...]`` as the arrays ``function_classes`` hold."""

    def register(fn):
        for cls in function_classes:
            HELD_ARRAYS[cls] = fn
        return fn

    return register


def held_arrays(node):
    accessor = HELD_ARRAYS.get(type(node))
    return [] if accessor is None else [np.asarray(a) for a in accessor(node)]
