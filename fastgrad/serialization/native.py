"""fastgrad's own ``save`` format: one safetensors file, no pickle.

The arrays of the saved object are the file's tensors; the safetensors metadata holds one
entry, ``"fastgrad.save"``, a JSON document ``{"format", "version", "object"}`` whose
``object`` is the saved object with every array replaced by a reference:

* ``{"__tensor__": name, "class": "Tensor" | "Parameter", "requires_grad": bool}`` for a
  fastgrad Tensor, ``{"__array__": name}`` for a numpy array;
* ``{"__tuple__": [...]}``, ``{"__odict__": [[key, value], ...]}`` (OrderedDict),
  ``{"__items__": [[key, value], ...]}`` (a dict whose keys are not all plain strings,
  such as an optimizer's per-parameter state), ``{"__np__": dtype, "value": v}`` (numpy
  scalars), ``{"__bytes__": hex}``; lists, plain dicts, strings, numbers, booleans and None
  as themselves.

An object saved twice in one file (a tensor shared by two entries) is stored once and
comes back shared. Tensor names are the paths to them (``model.fc1.weight``), so the
file also reads with any safetensors tool.
"""

import json
from collections import OrderedDict

import numpy as np

from ..io import CheckpointError

FORMAT = "fastgrad.save"
VERSION = 1
METADATA_KEY = "fastgrad.save"
_TAGS = ("__tensor__", "__array__", "__tuple__", "__odict__", "__items__", "__np__", "__bytes__")


def encode(obj):
    """``(tree, arrays)``: the JSON-able description of ``obj`` and its arrays by name."""
    from ..tensor import Tensor

    arrays, names = {}, {}

    def array_name(value, path):
        if id(value) in names:
            return names[id(value)]
        name, n = path or "tensor", 1
        while name in arrays:
            n += 1
            name = f"{path}#{n}"
        arrays[name] = value.data if isinstance(value, Tensor) else value
        names[id(value)] = name
        return name

    def enc(value, path):
        if value is None or isinstance(value, (bool, str)) or type(value) in (int, float):
            return value
        if isinstance(value, Tensor):
            return {
                "__tensor__": array_name(value, path),
                "class": "Parameter" if type(value) is not Tensor else "Tensor",
                "requires_grad": bool(value.requires_grad),
            }
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise CheckpointError(f"fastgrad.save: cannot store an array of dtype {value.dtype} at {path!r}")
            return {"__array__": array_name(value, path)}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return {"__np__": value.dtype.name, "value": value.item()}
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": bytes(value).hex()}
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            items = [[enc(k, path), enc(v, f"{path}.{k}" if path else str(k))] for k, v in value.items()]
            if isinstance(value, OrderedDict):
                return {"__odict__": items}
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: v for (k, _), (_, v) in zip(value.items(), items)}
            return {"__items__": items}
        if isinstance(value, (int, float)):  # bool and int subclasses (IntEnum...) as plain numbers
            return int(value) if isinstance(value, int) else float(value)
        raise CheckpointError(
            f"fastgrad.save: cannot store a {type(value).__name__} at {path or 'the top'!r}: "
            "only tensors, arrays, numbers, strings, bytes, None, lists, tuples and dicts "
            "(save model.state_dict(), not the model)"
        )

    tree = enc(obj, "")
    return tree, arrays


def metadata_for(tree):
    return {METADATA_KEY: json.dumps({"format": FORMAT, "version": VERSION, "object": tree})}


def decode(metadata, arrays, where):
    """The object described by ``metadata[METADATA_KEY]``, its arrays taken from ``arrays``."""
    try:
        doc = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the fastgrad.save description is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "object" not in doc:
        raise CheckpointError(f"{where}: the fastgrad.save description lacks its format or object")
    if doc.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: fastgrad.save format version {doc.get('version')!r} is not "
            f"{VERSION}; a newer fastgrad wrote this file"
        )
    from ..nn import Parameter
    from ..tensor import Tensor

    made = {}

    def fail(what):
        raise CheckpointError(f"{where}: malformed fastgrad.save description: {what:.120}")

    def array(name):
        if not isinstance(name, str) or name not in arrays:
            fail(f"it refers to tensor {name!r}, which the file lacks")
        return arrays[name]

    def pairs(value):
        if not isinstance(value, list) or any(not isinstance(p, list) or len(p) != 2 for p in value):
            fail(f"expected a list of [key, value] pairs, got {value!r}")
        return [(dec(k), dec(v)) for k, v in value]

    def dec(value):
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        tag = next((t for t in _TAGS if t in value), None)
        if tag is None:
            return {k: dec(v) for k, v in value.items()}
        body = value[tag]
        if tag in ("__tensor__", "__array__"):
            key = (tag, body)
            if key not in made:
                data = array(body)
                if tag == "__array__":
                    made[key] = data
                elif value.get("class") == "Parameter":
                    made[key] = Parameter(Tensor._from_op(data, None), requires_grad=bool(value.get("requires_grad")))
                else:
                    t = made[key] = Tensor._from_op(data, None)
                    t.requires_grad = bool(value.get("requires_grad")) and data.dtype.kind == "f"
            return made[key]
        if tag == "__tuple__":
            if not isinstance(body, list):
                fail(f"a tuple must be a list, got {body!r}")
            return tuple(dec(v) for v in body)
        if tag == "__odict__":
            return OrderedDict(pairs(body))
        if tag == "__items__":
            out = {}
            for k, v in pairs(body):
                if isinstance(k, (list, dict)):
                    fail(f"unhashable key {k!r}")
                out[k] = v
            return out
        if tag == "__bytes__":
            try:
                return bytes.fromhex(body)
            except (TypeError, ValueError):
                fail(f"bad bytes {body!r}")
        try:  # __np__
            dtype = np.dtype(body)
            if dtype.kind not in "biuf":
                raise TypeError(dtype)
            return dtype.type(value["value"])
        except (TypeError, ValueError, KeyError, OverflowError):
            fail(f"bad numpy scalar {value!r}")

    try:
        return dec(doc["object"])
    except RecursionError:
        raise CheckpointError(f"{where}: the fastgrad.save description is nested too deeply") from None
