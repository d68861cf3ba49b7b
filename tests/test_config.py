"""show_config, threads, backend switching, determinism flag and flush-to-zero."""

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels


def test_show_config_reports_backend_and_threads(capsys):
    fastgrad.show_config()
    out = capsys.readouterr().out
    assert f"backend: {kernels.backend}" in out
    assert f"threads: {fastgrad.get_num_threads()}" in out
    assert "openmp" in out and "numpy" in out


def test_set_num_threads_validates():
    before = fastgrad.get_num_threads()
    try:
        fastgrad.set_num_threads(1)
        assert fastgrad.get_num_threads() == 1
        for bad in (0, -2, 1.5, "2", True):
            with pytest.raises(ValueError, match="set_num_threads"):
                fastgrad.set_num_threads(bad)
    finally:
        fastgrad.set_num_threads(before)


def test_use_backend_switches_every_kernel():
    start = kernels.backend
    try:
        kernels.use_backend("reference")
        assert kernels.accumulate.__module__ == "fastgrad.reference.engine"
        if start == "compiled":
            kernels.use_backend("compiled")
            assert kernels.accumulate.__module__ != "fastgrad.reference.engine"
    finally:
        kernels.use_backend(start)
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.use_backend("gpu")


def test_every_reference_kernel_has_a_compiled_twin():
    if kernels.backend != "compiled":
        pytest.skip("compiled kernels not in use")
    import importlib

    for family in kernels.FAMILIES:
        ref = importlib.import_module(f"fastgrad.reference.{family}")
        for name in ref.__all__:
            assert getattr(kernels, name).__module__.startswith("fastgrad._ext"), (family, name)


def test_deterministic_flag_round_trips():
    fastgrad.use_deterministic_algorithms(True)
    assert fastgrad.are_deterministic_algorithms_enabled()
    fastgrad.use_deterministic_algorithms(False)
    assert not fastgrad.are_deterministic_algorithms_enabled()


def test_flush_denormal_zeroes_denormals_in_kernels():
    if kernels.backend != "compiled":
        pytest.skip("needs the compiled kernels")
    tiny = np.array([1e-40], dtype=np.float32)  # a float32 denormal
    try:
        assert fastgrad.set_flush_denormal(True)
        dst = np.zeros(1, np.float32)
        kernels.accumulate(dst, tiny)
        assert dst[0] == 0.0  # read as zero
    finally:
        fastgrad.set_flush_denormal(False)
    dst = np.zeros(1, np.float32)
    kernels.accumulate(dst, tiny)
    assert dst[0] == tiny[0]  # kept when the mode is off


def _child_config(env_extra, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    code = (
        "import json, os, fastgrad; from fastgrad import _config;"
        "print(json.dumps([_config.config_dict().get('openmp wait policy'), os.environ.get('OMP_WAIT_POLICY')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_show_config_reports_the_openmp_wait_policy_of_the_environment(tmp_path):
    if not fastgrad.kernels.runtime or not fastgrad.kernels.runtime.openmp_enabled():
        pytest.skip("no OpenMP in this build")
    policy, env_after = _child_config({}, tmp_path)
    assert policy == "default (spin, then sleep)" and env_after is None
    policy, env_after = _child_config({"OMP_WAIT_POLICY": "PASSIVE"}, tmp_path)
    assert policy == "OMP_WAIT_POLICY=PASSIVE" and env_after == "PASSIVE"
    policy, _ = _child_config({"GOMP_SPINCOUNT": "1000"}, tmp_path)
    assert policy == "GOMP_SPINCOUNT=1000"
