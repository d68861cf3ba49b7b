"""DataLoader worker processes (``num_workers > 0``), as PyTorch's: each worker is a forked
process that fetches and collates whole batches; the main process hands batch ``k`` to
worker ``k % num_workers``, keeps at most ``num_workers * prefetch_factor`` batches in
flight, and yields them in order, so the batches are exactly those of ``num_workers=0``.

Each worker limits fastgrad to one thread and seeds fastgrad's generator and Python's
``random`` with ``base_seed + worker_id`` (``base_seed`` drawn once per epoch in the main
process), so random transforms differ between workers and are reproducible under
``fastgrad.manual_seed``. ``get_worker_info()`` tells a dataset which worker runs it.

Workers need the ``fork`` start method (Linux, and other POSIX systems that offer it).
Where it is missing, the loader warns once and loads in the main process instead: the
batches are the same, only not loaded in parallel. An error in a worker is raised in the
main process with the worker's traceback; a worker that dies (killed, crashed) raises a
RuntimeError naming its pid and exit code instead of hanging.
"""

from __future__ import annotations

import queue
import random
import traceback
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from .. import _config

WorkerInfo = namedtuple("WorkerInfo", ["id", "num_workers", "seed", "dataset"])
_worker_info = None
_POLL_SECONDS = 1.0


def get_worker_info() -> WorkerInfo | None:
    """In a DataLoader worker: ``WorkerInfo(id, num_workers, seed, dataset)``; in the main
    process: None (as ``torch.utils.data.get_worker_info``)."""
    return _worker_info


def fork_available() -> bool:
    import multiprocessing  # here, not at import: most scripts never start workers

    return "fork" in multiprocessing.get_all_start_methods()


class _Failure:
    """An exception raised in a worker, carried to the main process as its type and text."""

    def __init__(self, exc: BaseException, worker_id: int) -> None:
        self.exc_type = type(exc)
        self.text = (
            f"Caught {type(exc).__name__} in DataLoader worker process {worker_id}.\nOriginal {traceback.format_exc()}"
        )

    def reraise(self) -> NoReturn:
        try:
            exc = self.exc_type(self.text)
        except Exception:  # an exception type that cannot be made from one message
            exc = RuntimeError(self.text)
        raise exc


def _worker_loop(
    fetch: Callable[[Any], Any],
    dataset: Any,
    index_queue: Any,
    result_queue: Any,
    worker_id: int,
    num_workers: int,
    seed: int,
    init_fn: Callable[[int], Any] | None,
) -> None:
    global _worker_info
    _config.set_num_threads(1)
    _config.manual_seed(seed)
    random.seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    try:
        if init_fn is not None:
            init_fn(worker_id)
    except Exception as exc:
        result_queue.put((None, None, _Failure(exc, worker_id)))
        return
    while True:
        task = index_queue.get()
        if task is None:
            return
        key, indices = task
        try:
            result_queue.put((key, fetch(indices), None))
        except Exception as exc:
            result_queue.put((key, None, _Failure(exc, worker_id)))


class WorkerPool:
    """``num_workers`` forked processes fetching batches with ``fetch(indices)``."""

    def __init__(
        self,
        fetch: Callable[[Any], Any],
        dataset: Any,
        num_workers: int,
        base_seed: int,
        worker_init_fn: Callable[[int], Any] | None,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.result_queue = ctx.Queue()
        self.index_queues, self.workers = [], []
        for wid in range(num_workers):
            iq = ctx.Queue()
            w = ctx.Process(
                target=_worker_loop,
                daemon=True,
                args=(
                    fetch,
                    dataset,
                    iq,
                    self.result_queue,
                    wid,
                    num_workers,
                    (base_seed + wid) & ((1 << 64) - 1),
                    worker_init_fn,
                ),
            )
            w.start()
            self.index_queues.append(iq)
            self.workers.append(w)
        self.run_id = 0

    def run(self, batches: Sequence[np.ndarray], prefetch_factor: int, timeout: float) -> Iterator[Any]:
        """Yield the fetched batch of every index array in ``batches``, in order."""
        self.run_id += 1
        run, n = self.run_id, len(self.workers)
        sent, ready, limit = 0, {}, n * prefetch_factor

        def send() -> None:
            nonlocal sent
            self.index_queues[sent % n].put(((run, sent), batches[sent]))
            sent += 1

        while sent < min(limit, len(batches)):
            send()
        for k in range(len(batches)):
            waited = 0.0
            while k not in ready:
                try:
                    key, batch, failure = self.result_queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    waited += _POLL_SECONDS
                    self._check_alive()
                    if timeout and waited >= timeout:
                        raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
                    continue
                if failure is not None and key is None:
                    failure.reraise()  # worker_init_fn failed
                if key[0] == run:  # results of an abandoned earlier epoch are dropped
                    ready[key[1]] = (batch, failure)
            batch, failure = ready.pop(k)
            if failure is not None:
                failure.reraise()
            if sent < len(batches):
                send()
            yield batch

    def _check_alive(self) -> None:
        for w in self.workers:
            if w.exitcode is not None:
                raise RuntimeError(f"DataLoader worker (pid {w.pid}) exited unexpectedly with exit code {w.exitcode}")

    def close(self) -> None:
        for iq, w in zip(self.index_queues, self.workers):
            if w.exitcode is None:
                try:
                    iq.put(None)
                except (OSError, ValueError):
                    pass
        for w in self.workers:
            w.join(timeout=5)
            if w.exitcode is None:
                w.terminate()
                w.join(timeout=5)
        for q in self.index_queues + [self.result_queue]:
            q.cancel_join_thread()
            q.close()
        self.workers = []
