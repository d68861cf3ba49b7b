"""Enormous sizes (see enormous_cases.py), in a memory-capped child process per group:
functionals fed zero-stride views of 10**12 elements or enormous size arguments, layers
built with terabytes of parameters, kernels given enormous shapes or zero-size arrays
with enormous dimensions. Each must raise a clear error at once (or, for the zero-size
kernel calls, return at once): never a MemoryError, a hang or a crash."""

import pytest

from isolated import run_group


@pytest.mark.parametrize("group", ["functional", "layers", "kernels"])
def test_enormous_sizes(group):
    outcome = run_group("enormous_cases", group)
    print(outcome.statistics())  # shown with -rP (or -s)
    assert outcome.ok, outcome.explain()
