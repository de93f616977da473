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

Keys become due in order of their due time; a due key waits only for a free worker. Urgent
keys (a ModelService the user just created or changed) go before every other due key (a
child that moved, the resync, the listing at start-up): during a burst of new objects their
Jobs come first and status catch-up after, as in controller-runtime's priority queue, where
the initial listing and resyncs wait behind real changes.
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
        # Two lanes of (due, seq, key): urgent keys first. An entry whose key was added again
        # earlier or in the other lane is stale and skipped when it comes up.
        self._heaps: tuple[list[tuple[float, int, K]], list[tuple[float, int, K]]] = ([], [])
        self._seq = itertools.count()
        self._due: dict[K, float] = {}  # waiting keys and when they are due
        self._urgent: set[K] = set()  # waiting (or running and due again) keys that are urgent
        self._not_before: dict[K, float] = {}  # keys in backoff and until when
        self._running: set[K] = set()
        self._again: dict[K, float] = {}  # added while running: due again afterwards
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(workers)
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ adding keys
    def add(self, key: K, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Reconcile ``key`` after ``delay`` seconds, or later if it is backing off; an
        ``urgent`` key goes before the others that are due."""
        due = self._clock() + max(0.0, delay)
        due = max(due, self._not_before.get(key, 0.0))
        if key in self._running:
            self._again[key] = min(due, self._again.get(key, due))
            if urgent:
                self._urgent.add(key)
            return
        current = self._due.get(key)
        was_urgent = key in self._urgent
        if current is not None and current <= due and (was_urgent or not urgent):
            return
        if current is not None:
            due = min(due, current)
        if urgent:
            self._urgent.add(key)
        self._due[key] = due
        heapq.heappush(self._heaps[0 if key in self._urgent else 1], (due, next(self._seq), key))
        self._wake.set()

    def forget(self, key: K) -> None:
        """``key`` is gone: drop its backoff and any pending run."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._urgent.discard(key)
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

    def _head(self, lane: int) -> tuple[float, int, K] | None:
        """The earliest live entry of ``lane`` (stale entries dropped on the way)."""
        heap = self._heaps[lane]
        while heap:
            due, _, key = heap[0]
            # Stale: superseded by an earlier add, moved to the urgent lane, or forgotten.
            if self._due.get(key) != due or (key in self._urgent) != (lane == 0):
                heapq.heappop(heap)
                continue
            return heap[0]
        return None

    async def _next_due(self) -> K:
        while True:
            now = self._clock()
            heads = (self._head(0), self._head(1))
            for lane, head in enumerate(heads):
                if head is not None and head[0] <= now:
                    heapq.heappop(self._heaps[lane])
                    key = head[2]
                    del self._due[key]
                    self._urgent.discard(key)
                    self._waited(now - head[0])
                    return key
            self._wake.clear()
            dues = [head[0] for head in heads if head is not None]
            timeout = (min(dues) - now) if dues else None
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
                urgent = key in self._urgent
                self._urgent.discard(key)
                self.add(key, again - self._clock(), urgent=urgent)
