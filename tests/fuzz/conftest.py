"""Property-based fuzz tests of fastgrad's kernels, functionals, layers and optimizers.

Profiles (hypothesis):
  ci    the default: 12 derandomized examples per test (the same ones every run, no
        shrinking); the directory takes well under a minute on the compiled backend.
  long  10,000 random examples per test, failures shrunk to a minimal example:
            python -m pytest tests/fuzz --hypothesis-profile=long

Files:
  fuzz_common.py     profiles, kernel lookup (compiled / reference), arrays, tolerances,
                     conv and pooling geometry strategies, error checks
  fuzz_api.py        one functional or layer call run on both backends and in PyTorch,
                     on views of leaf tensors (negative, zero and odd strides)
  kernel_calls.py    a valid call of every kernel, with the role of each argument
  kernel_abuse.py    malformed kernel calls built from those
  enormous_cases.py  calls that would need terabytes
  isolated.py        runs the last two in a memory-capped child process that may crash
  test_*.py          the tests

The tests import those modules by name, so this directory is put on sys.path here (the
suite imports test files with --import-mode=importlib, which does not do that itself).
"""

import os
import sys

from hypothesis import settings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fuzz_common  # noqa: E402

fuzz_common.register_profiles()


def pytest_configure(config):
    # --hypothesis-profile=NAME (hypothesis' pytest plugin) wins; otherwise the quick one
    if not config.getoption("--hypothesis-profile", default=None):
        settings.load_profile("ci")


# test file -> the module whose targets it runs in child processes (see isolated.py)
_ISOLATED = {"test_kernel_abuse.py": "kernel_abuse", "test_enormous.py": "enormous_cases"}


def pytest_collection_modifyitems(session, config, items):
    """Run the isolated tests last: their children, started below, work meanwhile."""
    items.sort(key=lambda item: os.path.basename(str(item.path)) in _ISOLATED)  # stable


def pytest_collection_finish(session):
    """Start the child processes of the selected isolated tests now, so that they run
    while the in-process tests do (the tests then only wait for their results). Only the
    groups of the selected tests (their parameter: a kernel family, ...) are run."""
    import isolated

    if session.config.option.collectonly:
        return
    groups = {}
    for item in session.items:
        filename = os.path.basename(str(item.path))
        if filename in _ISOLATED:
            callspec = getattr(item, "callspec", None)
            groups.setdefault(filename, set()).update(callspec.params.values() if callspec else ())
    for filename, chosen in groups.items():
        isolated.start(_ISOLATED[filename], chosen)
