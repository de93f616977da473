"""Events in the background: a reconcile never waits for the API to record one.

Like client-go's event recorder, the running operator hands each Event to a bounded queue
that one task posts, in order; the reconcile's worker moves on to the next ModelService at
once instead of spending two of its five round-trips on Events (a new ModelService's
``TrainingStarted`` and its first Ready change). Events are best effort: when the queue is
full (a burst the API server is too slow for), new ones are dropped and logged.

:class:`DeferredEvents` is the kube client the work queue's reconciles use: its ``event``
goes to the sink, every other call goes straight to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

__all__ = ["DeferredEvents", "EventPoster", "EventSink"]

log = logging.getLogger(__name__)

Event = tuple[dict[str, Any], str, str, str]


class EventPoster(Protocol):
    """What posts one Event (:class:`kube.Kube` does)."""

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def _reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``owner`` an Event names, copied: the caller's dict may change later."""
    meta = owner.get("metadata") or {}
    ref: dict[str, Any] = {
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        }
    }
    for key in ("apiVersion", "kind"):
        if key in owner:
            ref[key] = owner[key]
    return ref


class EventSink:
    """Posts Events one at a time, in the order they were emitted, at most ``limit`` waiting."""

    def __init__(self, poster: EventPoster, limit: int = 1000) -> None:
        self._poster = poster
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=limit)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        """Start posting (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._post_forever(), name="events")

    def emit(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one Event about ``owner``; drop it when the queue is full."""
        try:
            self._queue.put_nowait((_reference(owner), type_, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1
            # The first drop of a burst and every hundredth: one line per lost Event was
            # 1,700 warnings when 1,000 new ModelServices waited for their claims.
            if self.dropped % 100 == 1:
                name = (owner.get("metadata") or {}).get("name")
                log.warning(
                    "event %s on %s dropped: %d Events wait (%d dropped so far)",
                    reason,
                    name,
                    self._queue.qsize(),
                    self.dropped,
                )

    def pending(self) -> int:
        """Events waiting to be posted."""
        return self._queue.qsize()

    async def _post_forever(self) -> None:
        while True:
            owner, type_, reason, message = await self._queue.get()
            try:
                await self._poster.event(owner, type_, reason, message)
            except Exception:  # best effort: a failed Event never stops the next ones
                log.exception("cannot record event %s", reason)
            finally:
                self._queue.task_done()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Post what waits (for at most ``drain_s``), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


class DeferredEvents:
    """``kube`` for a reconcile, with its Events handed to ``sink`` instead of awaited."""

    def __init__(self, kube: Any, sink: EventSink) -> None:
        self._kube = kube
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue the Event; the sink posts it."""
        self._sink.emit(owner, type_, reason, message)
