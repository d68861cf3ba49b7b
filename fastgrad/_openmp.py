"""What OpenMP wait policy fastgrad's kernels run with, for show_config.

libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it loads. Its default lets a
thread that finished its share of a parallel region spin for a while before sleeping,
which is what a training step wants on an otherwise idle machine: the next region starts
a few microseconds later and finds its threads awake. On a machine shared with other busy
processes, sleeping at once (OMP_WAIT_POLICY=PASSIVE) frees the cores instead. Measured
on a 2-core machine, LeNet-5 training at batch 64 on 2 threads: idle, 30,000 images/s
with the default against 15,000 with PASSIVE; beside one busy process, 8,500 against
18,000. fastgrad leaves the choice to the environment (README, "Threads").
"""

import os

_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def policy():
    """The wait policy the OpenMP runtime reads from this process's environment."""
    chosen = [f"{name}={os.environ[name]}" for name in _VARIABLES if name in os.environ]
    return ", ".join(chosen) if chosen else "default (spin, then sleep)"
