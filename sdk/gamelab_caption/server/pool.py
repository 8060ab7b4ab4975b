"""A bounded inference pool: a fixed number of worker threads behind a fixed-size queue.

ONNX Runtime releases the GIL while it runs, so threads give real parallelism. The bound is
what keeps a burst of uploads from queueing without limit: once every worker is busy and the
queue is full, ``submit`` refuses at once and the server answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolFull(RuntimeError):
    """Every worker is busy and the queue is full; try again later."""


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class InferencePool:
    """Run blocking calls on ``workers`` threads, with at most ``queue_size`` more waiting.

    Args:
        workers: threads running calls at the same time (>= 1).
        queue_size: calls accepted beyond those running (>= 0).

    Raises:
        ValueError: a size is out of range.
    """

    def __init__(self, workers: int, queue_size: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.workers = workers
        self.capacity = workers + queue_size
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        """Calls running or waiting now."""
        return self._in_use

    def reserve(self) -> Reservation:
        """Take a slot now, for a call submitted later (after reading its upload, say).

        Raises:
            PoolFull: no free slot.
        """
        if not self._slots.acquire(blocking=False):
            raise PoolFull(f"all {self.capacity} inference slots are taken")
        with self._lock:
            self._in_use += 1
        return Reservation(self)

    def submit(self, function: Callable[..., T], *args) -> Future[T]:
        """Queue ``function(*args)``; the slot is freed when it finishes, even if nobody waits.

        Raises:
            PoolFull: no free slot.
        """
        return self.reserve().submit(function, *args)

    async def run(self, function: Callable[..., T], *args) -> T:
        """``submit`` and await the result from the event loop."""
        return await asyncio.wrap_future(self.submit(function, *args))

    def shutdown(self) -> None:
        """Drop waiting calls and stop the threads once the running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _release(self, _future: Future | None) -> None:
        with self._lock:
            self._in_use -= 1
        self._slots.release()


class Reservation:
    """A slot taken by ``InferencePool.reserve``: used by one ``submit``, else released.

    Use it as a context manager: leaving the block without submitting frees the slot.
    """

    def __init__(self, pool: InferencePool):
        self._pool = pool
        self._done = False

    def submit(self, function: Callable[..., T], *args) -> Future[T]:
        """Queue ``function(*args)`` in this slot; the slot is freed when it finishes."""
        if self._done:
            raise RuntimeError("this reservation was already used or released")
        self._done = True
        try:
            future = self._pool._executor.submit(function, *args)
        except BaseException:
            self._pool._release(None)
            raise
        future.add_done_callback(self._pool._release)
        return future

    async def run(self, function: Callable[..., T], *args) -> T:
        return await asyncio.wrap_future(self.submit(function, *args))

    def release(self) -> None:
        """Free the slot unless a call took it."""
        if not self._done:
            self._done = True
            self._pool._release(None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_exc) -> None:
        self.release()
