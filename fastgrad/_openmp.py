"""The OpenMP wait policy of fastgrad's kernels, chosen before they load libgomp.

libgomp's default lets a thread that finished its share of a parallel region spin for a
while before it sleeps. On an otherwise idle machine that saves a wake-up per region; on
a machine where anything else runs, the spinning threads take the very cores the next
region waits for. Measured on a 2-core machine with one other busy process: a LeNet-5
training step at batch 64 on 2 threads took about 150 ms with the default policy and
3.5 ms with OMP_WAIT_POLICY=PASSIVE (threads sleep as soon as they are idle).

libgomp reads the policy once, when it loads: ``passive_unless_chosen`` sets
OMP_WAIT_POLICY=PASSIVE around the import of the compiled modules, unless the user chose
a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment), and restores the
environment afterwards, so child processes and other libraries see it unchanged.
``policy()`` says what the kernels got.
"""
import contextlib
import os

_USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_chosen = None  # what the compiled modules were loaded with


@contextlib.contextmanager
def passive_unless_chosen():
    global _chosen
    user = {name: os.environ[name] for name in _USER_VARIABLES if name in os.environ}
    if user:
        _chosen = ", ".join(f"{k}={v}" for k, v in user.items()) + " (from the environment)"
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        del os.environ["OMP_WAIT_POLICY"]
    _chosen = "OMP_WAIT_POLICY=PASSIVE (fastgrad's default; set OMP_WAIT_POLICY to choose)"


def policy():
    """The wait policy the compiled kernels' OpenMP runtime was loaded with (None before)."""
    return _chosen
