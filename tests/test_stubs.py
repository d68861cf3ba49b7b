"""fastgrad/_ext/*.pyi, the stubs editors and type checkers read for the compiled kernels,
name every function of each compiled module with its exact parameters and defaults, and
the pure-Python twins in fastgrad/reference have the same signatures; fastgrad/kernels.pyi
re-exports them under the names fastgrad.kernels binds at run time."""

import ast
import importlib
import inspect
import os

import pytest

import fastgrad
from fastgrad import kernels

STUBS = os.path.join(os.path.dirname(fastgrad.__file__), "_ext")
MODULES = [f"_{family}" for family in kernels.FAMILIES] + ["_runtime"]


def stub_signatures(module):
    """{name: [(parameter, default source or None)]} of the stub ``module``.pyi."""
    with open(os.path.join(STUBS, f"{module}.pyi")) as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + node.args.defaults
            out[node.name] = [(a.arg, None if d is None else ast.literal_eval(d)) for a, d in zip(args, defaults)]
    return out


def runtime_signature(fn):
    return [
        (p.name, None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(fn).parameters.values()
    ]


@pytest.mark.parametrize("module", MODULES)
def test_stubs_match_the_compiled_modules(module):
    compiled = pytest.importorskip(f"fastgrad._ext.{module}", reason="compiled kernels not built")
    functions = {
        name: fn
        for name, fn in vars(compiled).items()
        if callable(fn)
        and not name.startswith("__")
        and getattr(fn, "__module__", None) == compiled.__name__
        and not isinstance(fn, type)
    }
    stubs = stub_signatures(module)
    assert sorted(stubs) == sorted(functions)
    for name, fn in functions.items():
        assert stubs[name] == runtime_signature(fn), name


@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_reference_twins_have_the_stubbed_signatures(family):
    reference = importlib.import_module(f"fastgrad.reference.{family}")
    stubs = stub_signatures(f"_{family}")
    for name in reference.__all__:
        assert stubs[name] == runtime_signature(getattr(reference, name)), name


def kernels_stub():
    with open(os.path.join(os.path.dirname(kernels.__file__), "kernels.pyi")) as f:
        return ast.parse(f.read())


def test_kernels_stub_reexports_every_kernel_from_its_family():
    """kernels.pyi names each family's kernels, imported from that family's stub under
    their own names, so ``kernels.conv2d_forward`` resolves to its signature."""
    reexported = {}
    for node in kernels_stub().body:
        if isinstance(node, ast.ImportFrom) and node.module.startswith("fastgrad._ext._"):
            for alias in node.names:
                assert alias.asname == alias.name, f"{alias.name} must be re-exported as itself"
                assert alias.name not in reexported, f"{alias.name} imported twice"
                reexported[alias.name] = node.module
    expected = {
        name: f"fastgrad._ext._{family}"
        for family in kernels.FAMILIES
        for name in importlib.import_module(f"fastgrad.reference.{family}").__all__
    }
    assert reexported == expected


def test_kernels_stub_declares_the_switch():
    """The module's own functions are in the stub with their parameters, and its public
    module attributes are declared."""
    tree = kernels_stub()
    functions = {n.name: [a.arg for a in n.args.args] for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = {
        name: [p for p in inspect.signature(fn).parameters]
        for name, fn in vars(kernels).items()
        if inspect.isfunction(fn) and fn.__module__ == kernels.__name__ and not name.startswith("_")
    }
    assert functions == public
    declared = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    attributes = {
        name
        for name, value in vars(kernels).items()
        if name == "runtime" or (not name.startswith("_") and not callable(value) and not inspect.ismodule(value))
    }
    assert declared == attributes
