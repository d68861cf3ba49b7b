"""Faults under mpiexec -n 2: a rank that raises, exits or is killed in the middle of
training stops the whole job within bounded time (the subprocess timeout fails a hang),
and the error names the rank that failed."""

import re
import time

import pytest

import fastgrad
from fastgrad import distributed as dist


@pytest.mark.parametrize(
    "scenario, says",
    [
        ("raise", "rank 1 failed: ZeroDivisionError: rank 1 cannot go on"),
        ("exit", "rank 1 left the process group"),
    ],
)
def test_a_failed_rank_stops_the_others_with_an_error_naming_it(mpirun, scenario, says):
    start = time.monotonic()
    proc = mpirun(scenario, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    # rank 0 was waiting in DDP's allreduce for rank 1: it stops with an error naming rank 1
    assert "DistributedError: all_reduce on rank 0 cannot complete: " + says in proc.stderr, proc.stderr
    if scenario == "raise":  # and the failed rank reports its own traceback under its number
        assert "fastgrad.distributed: rank 1 of 2 failed:" in proc.stderr
        assert "ZeroDivisionError" in proc.stderr
    assert elapsed < 120


def test_a_killed_rank_ends_the_job_and_mpiexec_names_it(mpirun):
    proc = mpirun("kill", timeout=120)
    assert proc.returncode != 0
    pid = re.search(r"rank 1 is process (\d+)", proc.stdout).group(1)
    # a SIGKILLed rank cannot report; MPICH's mpiexec stops the others and names the dead process
    assert re.search(rf"PID {pid}\b", proc.stdout + proc.stderr), proc.stdout + proc.stderr


def test_without_mpiexec_the_world_is_one_process():
    pytest.importorskip("mpi4py")
    import os
    import subprocess
    import sys

    code = (
        "import fastgrad\nfrom fastgrad import distributed as dist\n"
        "dist.init_process_group()\n"
        "t = fastgrad.tensor([1.0, 2.0])\ndist.all_reduce(t)\n"
        "out = [fastgrad.zeros(2)]\ndist.all_gather(out, t)\ndist.broadcast(t, 0)\ndist.barrier()\n"
        "print(dist.get_rank(), dist.get_world_size(), t.tolist(), out[0].tolist())\n"
        "dist.destroy_process_group()\nprint(dist.is_initialized())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in dist.process_group.LAUNCHER_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["0 1 [1.0, 2.0] [1.0, 2.0]", "False"]


def test_before_init_the_calls_say_what_is_missing():
    if dist.is_initialized():
        pytest.skip("a process group is open in this process")
    with pytest.raises(ValueError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(ValueError, match="init_process_group"):
        dist.all_reduce(fastgrad.ones(2))
    with pytest.raises(ValueError, match="backend must be 'mpi'"):
        dist.init_process_group("nccl")
