"""Run a tests/distributed/workers.py scenario under ``mpiexec -n 2``, with a timeout so that
a hang fails the test instead of hanging the suite; skip where MPI is not installed."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

WORKERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers.py")


def find_mpiexec():
    """The mpiexec beside this Python (a venv with the mpich wheel), else the one on PATH."""
    here = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


def skip_reason():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'fastgrad[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec on PATH or beside this Python (pip install 'fastgrad[mpi]' brings MPICH's)"
    return None


@pytest.fixture
def mpirun(tmp_path):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)

    def run(scenario, n=2, timeout=180, env=None, args=None):
        cmd = [find_mpiexec(), "-n", str(n), sys.executable] + (args or [WORKERS, scenario, str(tmp_path)])
        full_env = dict(os.environ, **(env or {}))
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=tmp_path, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"mpiexec -n {n} {scenario} did not finish within {timeout} s (a hang):\n{exc.stdout}\n{exc.stderr}"
            )

    run.out = tmp_path
    return run


@pytest.fixture(scope="session")
def workers():
    """workers.py as a module: the tests run its training code in this process as the oracle."""
    spec = importlib.util.spec_from_file_location("distributed_workers", WORKERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
