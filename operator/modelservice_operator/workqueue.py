"""The queue every reconcile goes through: deduplicated, delayed, bounded, backed off.

Every reason to reconcile a ModelService (created, changed, resumed, a child moved, the
periodic resync) adds its key here instead of reconciling in place. The queue guarantees:

- at most ``workers`` reconciles run at once (the API server and the operator's memory see
  a bounded load, whatever the number of objects or events);
- one key is never reconciled twice at the same time, and adding a key that already waits
  or runs costs nothing (a key added while it runs runs once more afterwards, so no change
  is lost);
- a key whose reconcile failed waits its own backoff (exponential with jitter, at least the
  API's ``Retry-After``), during which it is not retried even when added again; every other
  key keeps flowing, so one broken object never delays the others.

Keys become due in order of their due time; a due key waits only for a free worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from .backoff import Backoff, BackoffPolicy

__all__ = ["WorkQueue"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Run ``process(key)`` for added keys, ``workers`` at a time, backing off failures."""

    def __init__(
        self,
        process: Callable[[K], Awaitable[object]],
        *,
        workers: int,
        policy: BackoffPolicy | None = None,
        retry_after: Callable[[BaseException], float | None] = lambda _exc: None,
        expected: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        waited: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        if workers < 1:
            raise ValueError("a queue needs at least one worker")
        self._process = process
        self._workers = workers
        self._retry_after = retry_after
        # Expected failures (API errors) are logged in one line, anything else with its trace.
        self._expected = expected
        self._clock = clock
        # Told how long each key waited for a worker once due: the operator's saturation.
        self._waited = waited
        self.backoff: Backoff[K] = Backoff(policy or BackoffPolicy())
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._due: dict[K, float] = {}  # waiting keys and when they are due
        self._not_before: dict[K, float] = {}  # keys in backoff and until when
        self._running: set[K] = set()
        self._again: dict[K, float] = {}  # added while running: due again afterwards
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(workers)
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ adding keys
    def add(self, key: K, delay: float = 0.0) -> None:
        """Reconcile ``key`` after ``delay`` seconds, or later if it is backing off."""
        due = self._clock() + max(0.0, delay)
        due = max(due, self._not_before.get(key, 0.0))
        if key in self._running:
            self._again[key] = min(due, self._again.get(key, due))
            return
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._wake.set()

    def forget(self, key: K) -> None:
        """``key`` is gone: drop its backoff and any pending run."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._not_before.pop(key, None)
        self.backoff.succeeded(key)

    # ------------------------------------------------------------------ state, for tests
    @property
    def running(self) -> frozenset[K]:
        """Keys being reconciled now."""
        return frozenset(self._running)

    def pending(self) -> int:
        """Keys waiting to run (due or not)."""
        return len(self._due) + len(self._again)

    def backing_off(self, key: K) -> float:
        """Seconds until ``key`` may run again (0 when it is not backing off)."""
        return max(0.0, self._not_before.get(key, 0.0) - self._clock())

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start dispatching (in the running event loop)."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="workqueue")

    async def stop(self) -> None:
        """Stop dispatching and cancel the reconciles in flight."""
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatcher = None

    async def _next_due(self) -> K:
        while True:
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded by an earlier add, or forgotten
                    heapq.heappop(self._heap)
                    continue
                wait = due - self._clock()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    self._waited(-wait)
                    return key
                break
            self._wake.clear()
            timeout = (self._heap[0][0] - self._clock()) if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                key = await self._next_due()
            except BaseException:
                self._slots.release()
                raise
            self._running.add(key)
            task = asyncio.create_task(self._run(key), name=f"reconcile {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K) -> None:
        try:
            await self._process(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = self.backoff.failed(key, self._retry_after(exc))
            self._not_before[key] = self._clock() + delay
            attempts = self.backoff.failures(key)
            if isinstance(exc, self._expected):
                log.warning(
                    "reconcile of %s failed (%d in a row), retry in %.1fs: %s",
                    key,
                    attempts,
                    delay,
                    exc,
                )
            else:
                log.exception(
                    "reconcile of %s crashed (%d in a row), retry in %.1fs", key, attempts, delay
                )
            self._again[key] = min(self._not_before[key], self._again.get(key, float("inf")))
        else:
            self.backoff.succeeded(key)
            self._not_before.pop(key, None)
        finally:
            self._running.discard(key)
            self._slots.release()
            again = self._again.pop(key, None)
            if again is not None:
                self.add(key, again - self._clock())
