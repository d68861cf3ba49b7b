"""Malformed calls straight to every kernel (see kernel_abuse.py), one child process per
kernel family: a crash (segfault, abort), a hang or a failed property fails the
family's test, with the kernel that was running and hypothesis' failing example."""

import pytest

from fastgrad import kernels
from isolated import run_group


@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_malformed_kernel_calls(family):
    outcome = run_group("kernel_abuse", family)
    print(outcome.statistics())  # shown with -rP (or -s)
    assert outcome.ok, outcome.explain()
