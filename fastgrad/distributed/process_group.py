"""The process group: which process this is (rank), how many there are (world size), and
what happens when one of them fails.

fastgrad runs data-parallel training over MPI through mpi4py: ``mpiexec -n N python ...``
starts the processes, ``init_process_group()`` joins them. Outside mpiexec the world is
one process (MPI's singleton start), so the same script runs alone unchanged.

Failure handling. MPI has no notion of a failed peer: a collective that waits for a rank
that is gone waits forever. fastgrad therefore keeps a second communicator for notices.
A rank that ends with an uncaught exception, or exits while the group is still open,
sends "failed: <the exception>" (or "left the process group") to every other rank. Every wait in
fastgrad.distributed polls its request and this notice channel, so a rank waiting in a
collective for a failed peer raises ``DistributedError`` naming that peer; its own
uncaught error then ends the job (``MPI_Abort``) once every rank has reported or a few
seconds have passed. A rank killed outright (SIGKILL) cannot send anything: mpiexec's
process manager then stops the others at once and names the dead process. Every wait also
has a deadline (``timeout``, 30 minutes by default as in PyTorch), after which it raises.
"""

import atexit
import datetime
import os
import sys
import time
import traceback

_NOTICE_TAG = 77
_NOTICE_GRACE = 2.0  # seconds a wait keeps testing after a peer's notice (it may have finished first)
_ABORT_GRACE = 5.0  # seconds a failing rank waits for the others' notices before MPI_Abort
_OUTPUT_GRACE = 1.0  # seconds between a failing rank's report and its MPI_Abort, at least
# An allreduce progresses only while both sides call into MPI, so a wait polls: without pause
# for _SPIN_SECONDS plus the time the message could take at _SPIN_BYTES_PER_SECOND (a peer
# arriving about now, or the data still moving), then napping _NAP_SECONDS between polls (a
# slow peer: on a busy machine the core is better given to it than spent polling for it),
# and after _NAP_AFTER (a peer evaluating or saving) _LONG_NAP_SECONDS.
_SPIN_SECONDS = 0.0002
_SPIN_BYTES_PER_SECOND = 1e9
_NAP_SECONDS = 0.00005
_NAP_AFTER = 1.0
_LONG_NAP_SECONDS = 0.001
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


class DistributedError(RuntimeError):
    """A collective could not complete: a peer failed or exited, or the deadline passed.
    ``rank`` is the rank that failed (None when unknown)."""

    def __init__(self, message, rank=None):
        super().__init__(message)
        self.rank = rank


def is_available():
    """True when the MPI backend can be used (mpi4py imports)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def launched_by_mpiexec():
    """True when this process was started by an MPI launcher (mpiexec / mpirun)."""
    return any(k in os.environ for k in LAUNCHER_ENV)


class _World:
    """The open process group: MPI's world communicator, a duplicate for notices, and what
    the notices said."""

    def __init__(self, MPI, timeout):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.notices = MPI.COMM_WORLD.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = timeout
        self.reported = {}  # rank -> what its notice said
        self.closed = False

    # ------------------------------------------------------------- notices
    def poll_notices(self):
        MPI = self.MPI
        status = MPI.Status()
        while self.notices.Iprobe(source=MPI.ANY_SOURCE, tag=_NOTICE_TAG, status=status):
            source = status.Get_source()
            self.reported[source] = self.notices.recv(source=source, tag=_NOTICE_TAG)
        return self.reported

    def tell_everyone(self, text):
        """Send ``text`` to every other rank (small messages: delivered without a receiver
        waiting for them)."""
        requests = []
        for dest in range(self.size):
            if dest != self.rank:
                try:
                    requests.append(self.notices.isend(text, dest=dest, tag=_NOTICE_TAG))
                except self.MPI.Exception:  # a peer already gone: still tell the others
                    continue
        return requests

    def wait_for_reports(self, ranks, seconds):
        """Poll until every rank in ``ranks`` has sent a notice, or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(r in self.poll_notices() for r in ranks):
                return True
            time.sleep(0.005)
        return False

    # ------------------------------------------------------------- waiting
    def wait(self, request, what, nbytes=0):
        """Wait for ``request`` (an MPI request over ``nbytes`` bytes), raising
        DistributedError if a peer failed or the deadline passes instead."""
        if request.Test():
            return
        start = time.monotonic()
        spin = _SPIN_SECONDS + nbytes / _SPIN_BYTES_PER_SECOND
        deadline = start + self.timeout.total_seconds()
        noticed_at = None
        polls, napping = 0, False
        while not request.Test():
            polls += 1
            if polls % 64 and not napping:
                continue  # while spinning, look at notices and the clock every 64 polls only
            now = time.monotonic()
            napping = now - start > spin
            if napping:
                time.sleep(_NAP_SECONDS if now - start < _NAP_AFTER else _LONG_NAP_SECONDS)
            if noticed_at is None and self.poll_notices():
                noticed_at = now
            if noticed_at is not None and now - noticed_at > _NOTICE_GRACE:
                source = min(self.reported)
                raise DistributedError(
                    f"{what} on rank {self.rank} cannot complete: rank {source} {self.reported[source]}", rank=source
                )
            if now > deadline:
                raise DistributedError(
                    f"{what} on rank {self.rank} did not complete within "
                    f"{self.timeout.total_seconds():g} s (timeout of init_process_group); "
                    "some rank stopped taking part in collectives"
                )

    # ------------------------------------------------------------- leaving
    def close(self):
        """Leave together: tell every rank this one is done and wait until all are (a
        failed peer's notice counts), so nobody exits while others wait in a collective."""
        if self.closed:
            return
        self.closed = True
        if self.size > 1:
            self.tell_everyone("left the process group (its program ended or called destroy_process_group)")
            others = [r for r in range(self.size) if r != self.rank]
            deadline = time.monotonic() + self.timeout.total_seconds()
            while not all(r in self.poll_notices() for r in others) and time.monotonic() < deadline:
                time.sleep(0.001)
        self.notices.Free()
        self.comm.Free()


_world = None
_previous_excepthook = None


def _world_or_raise():
    if _world is None:
        raise ValueError("Default process group has not been initialized, please make sure to call init_process_group.")
    return _world


def init_process_group(backend="mpi", init_method=None, timeout=None, world_size=-1, rank=-1):
    """Join the processes started by mpiexec (or make a world of one without it).

    backend: "mpi" (the only one). init_method: unused (MPI's launcher connects the
    processes). world_size, rank: if given, must agree with MPI's. timeout: a
    ``datetime.timedelta`` (default 30 minutes): the longest any collective may wait.
    """
    global _world, _previous_excepthook
    if backend not in (None, "mpi"):
        raise ValueError(f"init_process_group: backend must be 'mpi' (fastgrad's only backend), got {backend!r}")
    if _world is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if not isinstance(timeout, datetime.timedelta) or timeout.total_seconds() <= 0:
        raise ValueError(f"init_process_group: timeout must be a positive datetime.timedelta, got {timeout!r}")
    if not is_available():
        raise RuntimeError(
            "init_process_group: the MPI backend needs mpi4py and an MPI library: pip install 'fastgrad[mpi]'"
        )
    from mpi4py import MPI

    world = _World(MPI, timeout)
    for name, given, actual in (("world_size", world_size, world.size), ("rank", rank, world.rank)):
        if given not in (-1, None) and given != actual:
            world.comm.Free()
            world.notices.Free()
            raise ValueError(f"init_process_group: {name}={given} but MPI says {actual}")
    _world = world
    if world.size > 1:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _fail_job


def destroy_process_group(group=None):
    """Leave the process group (collective: every rank calls it)."""
    global _world
    world = _world_or_raise()
    world.close()
    _world = None
    if sys.excepthook is _fail_job:
        sys.excepthook = _previous_excepthook


def is_initialized():
    return _world is not None


def get_rank(group=None):
    return _world_or_raise().rank


def get_world_size(group=None):
    return _world_or_raise().size


def get_backend(group=None):
    _world_or_raise()
    return "mpi"


def current_world():
    """The open process group (for fastgrad.distributed's collectives)."""
    return _world_or_raise()


def _fail_job(exc_type, exc, tb):
    """sys.excepthook while a group of more than one rank is open: report the error with
    this rank's number, tell every other rank, and end the whole job, so no rank is left
    waiting in a collective for this one."""
    world = _world
    if world is None or world.closed:
        (_previous_excepthook or sys.__excepthook__)(exc_type, exc, tb)
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    summary = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    sys.stderr.write(f"fastgrad.distributed: rank {world.rank} of {world.size} failed:\n{text}")
    sys.stderr.write(f"fastgrad.distributed: rank {world.rank} stops the job (MPI_Abort)\n")
    sys.stderr.flush()
    reported_at = time.monotonic()
    world.tell_everyone(f"failed: {summary}")
    others = [r for r in range(world.size) if r != world.rank]
    world.wait_for_reports(others, _ABORT_GRACE)
    # the launcher forwards each rank's output through pipes that MPI_Abort tears down: give
    # it time to pass this rank's message on first
    time.sleep(max(0.0, _OUTPUT_GRACE - (time.monotonic() - reported_at)))
    world.MPI.COMM_WORLD.Abort(1)


@atexit.register
def _exit_notice():
    """A rank that exits with the group open leaves it first (see _World.close), so its
    peers learn that it is gone instead of waiting for it."""
    if _world is not None and not _world.closed:
        _world.close()
