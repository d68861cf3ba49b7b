"""Property-based fuzz tests of fastgrad's kernels, functionals, layers and optimizers.

Profiles (hypothesis):
  ci    the default: a few derandomized examples per test (the same ones every run);
        the whole directory runs in well under a minute on the compiled backend.
  long  10,000 examples per test:  python -m pytest tests/fuzz --hypothesis-profile=long

The shared strategies and checks live in fuzz_common.py next to this file; the tests
import it by name, so this directory is put on sys.path here (the suite imports test
files with --import-mode=importlib, which does not do that by itself).
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
