"""Shared test setup: the suite refuses to run silently on the wrong backend, child
Python processes import the fastgrad under test, and every test gets the same seed."""

import os

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels


def pytest_sessionstart(session):
    # Tests that start `python -c ...` or `python -m fastgrad` must test the same fastgrad
    # as this process (an installed one, or a work tree built in place), whatever their
    # working folder: put its parent folder first on the children's path.
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [home] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    wanted = os.environ.get("FASTGRAD_BACKEND", "compiled").strip().lower() or "compiled"
    if wanted == "compiled" and kernels.backend != "compiled":
        raise pytest.UsageError(
            "the compiled kernels did not load (" + str(kernels.load_error) + "); the tests run against "
            "them. Install with `pip install .` (a C compiler is needed), or set "
            "FASTGRAD_BACKEND=reference to test the pure-Python kernels on purpose."
        )


def pytest_report_header(config):
    return (
        f"fastgrad {fastgrad.__version__} from {os.path.dirname(fastgrad.__file__)}: "
        f"backend {kernels.backend}, variant {kernels.simd_variant}, threads {fastgrad.get_num_threads()}"
    )


@pytest.fixture(autouse=True)
def _seed():
    fastgrad.manual_seed(0)
    np.random.seed(0)
    yield
