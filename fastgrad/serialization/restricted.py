"""Reading pickle streams without running anything from them.

A pickle is a program: its GLOBAL and STACK_GLOBAL opcodes import any callable by name and
REDUCE calls it, which is how a file runs ``os.system``. fastgrad reads the pickles other
tools write (PyTorch checkpoints, the CIFAR-10 python batches) in two passes:

1. ``scan`` walks the opcodes with ``pickletools.genops`` (which parses, never executes)
   before anything is built. Every global the stream names must be in the caller's
   allow-list, every opcode must be one plain data needs, and every length the stream
   declares must be backed by bytes actually present. A refused global is named in the
   error. STACK_GLOBAL takes its module and name from the stack: the scan accepts it only
   when both are strings it can see pushed (directly or through the memo) right before,
   and refuses it otherwise, as "a global it cannot name".
2. ``RestrictedUnpickler`` then builds the objects. Its ``find_class`` returns only
   fastgrad's own stand-ins for the allowed names, never the named object itself, so the
   allow-list is enforced a second time, and ``check_tree`` confirms that the result holds
   nothing but the types the caller accepts.
"""

import io
import pickle
import pickletools
from collections import OrderedDict

from ..io import CheckpointError

# Opcodes that build objects without any allow-list (instances, copyreg extensions,
# out-of-band buffers): never needed by the files fastgrad reads.
_REFUSED_OPCODES = {
    "INST",
    "OBJ",
    "NEWOBJ",
    "NEWOBJ_EX",
    "EXT1",
    "EXT2",
    "EXT4",
    "NEXT_BUFFER",
    "READONLY_BUFFER",
    "PERSID",
}
_STRING_PUSHES = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_UNKNOWN = object()


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle stream that fastgrad refuses to load: it names a global outside the
    allow-list, uses an opcode plain data never needs, or is malformed."""


def scan(data, allowed, where, persistent_ids=False):
    """Check the pickle ``data`` (bytes) before it is loaded: see the module docstring.
    ``allowed`` is a collection of ``(module, name)`` pairs. Returns the set of globals
    the stream names."""
    found = set()
    recent = []  # what the last opcodes pushed, while it is known exactly (str or _UNKNOWN)
    memo = {}
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _REFUSED_OPCODES or (name == "BINPERSID" and not persistent_ids):
                raise UnsafePickleError(
                    f"{where}: refused: the pickle uses opcode {name} at byte {pos}, "
                    "which plain data (tensors, numbers, strings, containers) never needs"
                )
            if name in _STRING_PUSHES:
                recent.append(arg if isinstance(arg, str) else _UNKNOWN)
            elif name in _MEMO_GETS:
                recent.append(memo.get(arg, _UNKNOWN))
            elif name in _MEMO_PUTS or name == "MEMOIZE":
                if name != "MEMOIZE" and arg > len(data):
                    # a pickler numbers memo slots from 0; a huge index would make the
                    # unpickler grow its memo table to that size
                    raise UnsafePickleError(
                        f"{where}: malformed pickle: memo index {arg} at byte {pos} in a {len(data)}-byte stream"
                    )
                memo[arg if name != "MEMOIZE" else len(memo)] = recent[-1] if recent else _UNKNOWN
            elif name == "DUP":
                recent.append(recent[-1] if recent else _UNKNOWN)
            elif name == "FRAME":
                if arg > len(data) - pos:
                    raise UnsafePickleError(
                        f"{where}: malformed pickle: a frame of {arg} bytes at byte {pos} "
                        f"runs past the end of the {len(data)}-byte stream"
                    )
            elif name == "PROTO":
                pass  # no effect on the stack
            else:
                if name == "GLOBAL":
                    module, _, attr = arg.partition(" ")
                    _check_global(module, attr, allowed, where, pos)
                    found.add((module, attr))
                elif name == "STACK_GLOBAL":
                    if len(recent) < 2 or _UNKNOWN in recent[-2:]:
                        raise UnsafePickleError(
                            f"{where}: refused: STACK_GLOBAL at byte {pos} takes a global "
                            "whose name cannot be read before loading"
                        )
                    module, attr = recent[-2], recent[-1]
                    _check_global(module, attr, allowed, where, pos)
                    found.add((module, attr))
                recent = []
    except UnsafePickleError:
        raise
    except Exception as exc:  # genops: truncated stream, bad opcode, lengths past the end
        raise UnsafePickleError(f"{where}: malformed pickle stream: {exc}") from None
    return found


def _check_global(module, attr, allowed, where, pos):
    if (module, attr) not in allowed:
        raise UnsafePickleError(
            f"{where}: refused: the pickle calls global {module}.{attr} (byte {pos}), "
            "which is not a tensor, storage or plain container; fastgrad never runs "
            "code from a file"
        )


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose globals are ``stand_ins[(module, name)]`` and nothing else;
    ``persistent_load`` is the given function (or refused)."""

    def __init__(self, file, stand_ins, where, persistent_load=None, **kwargs):
        super().__init__(file, **kwargs)
        self._stand_ins = stand_ins
        self._where = where
        self._persistent = persistent_load

    def find_class(self, module, name):
        try:
            return self._stand_ins[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{self._where}: refused: global {module}.{name}") from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"{self._where}: refused: the pickle refers to persistent id {pid!r:.80}")
        return self._persistent(pid)


def load(data, stand_ins, where, persistent_load=None, **kwargs):
    """Scan, then load, the pickle ``data``; errors become UnsafePickleError (a refused
    global, opcode or a malformed stream); CheckpointError from the stand-ins passes through."""
    scan(data, stand_ins, where, persistent_ids=persistent_load is not None)
    unpickler = RestrictedUnpickler(io.BytesIO(data), stand_ins, where, persistent_load, **kwargs)
    try:
        return unpickler.load()
    except (UnsafePickleError, CheckpointError):
        raise
    except Exception as exc:  # a stream that parses but does not build: bad stack use, wrong arguments
        raise UnsafePickleError(f"{where}: malformed pickle: {type(exc).__name__}: {exc}") from None


def check_tree(obj, accept, where):
    """Walk ``obj`` (iteratively; shared objects once) and raise UnsafePickleError unless
    every node passes ``accept(node)``, which returns the node's children (a list) or None
    to refuse it."""
    stack, seen = [obj], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = accept(node)
        if children is None:
            raise UnsafePickleError(
                f"{where}: refused: the file holds a {type(node).__name__}, which is not "
                "a tensor, number, string or container"
            )
        stack.extend(children)


def plain_children(node):
    """Children of a plain container, [] for an atom, None for anything else."""
    if node is None or type(node) in (bool, int, float, complex, str, bytes):
        return []
    if type(node) in (list, tuple, set, frozenset):
        return list(node)
    if type(node) in (dict, OrderedDict):  # an OrderedDict's attributes too (a state dict's _metadata)
        return [x for kv in node.items() for x in kv] + list(getattr(node, "__dict__", {}).values())
    return None
