"""Events in the background: in order, never awaited by the reconcile, dropped when full."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from modelservice_operator.events import DeferredEvents, EventSink

pytestmark = pytest.mark.unit


class SlowPoster:
    """Posts an Event in ``delay_s`` (once ``gate`` is open, when there is one); the first
    ``fail`` posts raise. ``peak`` is the most posts ever in progress at once."""

    def __init__(
        self, delay_s: float = 0.0, fail: int = 0, gate: asyncio.Event | None = None
    ) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.gate = gate
        self.posted: list[tuple[str, str, str]] = []
        self.owners: list[dict[str, Any]] = []
        self.stamps: list[datetime | None] = []
        self.active = 0
        self.peak = 0

    async def event(
        self,
        owner: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay_s)
        finally:
            self.active -= 1
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API down")
        self.posted.append((type_, reason, message))
        self.owners.append(owner)
        self.stamps.append(at)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> str:
        return f"{namespace}/{name}"


def _ms(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": "ml", "uid": "u1", "resourceVersion": "3"},
        "spec": {"big": "x" * 100},
    }


async def test_the_reconcile_does_not_wait_and_events_post_in_order() -> None:
    gate = asyncio.Event()  # no post can finish until the reconcile is done
    poster = SlowPoster(gate=gate)
    sink = EventSink(poster)
    sink.start()
    writer = DeferredEvents(poster, sink)
    try:
        for reason in ("TrainingStarted", "JobPending", "Promoted"):
            # Returns while the posts are held: queued, not awaited (else this times out).
            await asyncio.wait_for(writer.event(_ms("digits"), "Normal", reason, reason.lower()), 5)
        assert poster.posted == []
        gate.set()
        # Every other call goes straight to the client.
        assert await writer.patch_status("ml", "digits", {}) == "ml/digits"
        await sink.stop()
        assert [p[1] for p in poster.posted] == ["TrainingStarted", "JobPending", "Promoted"]
        # Only the reference an Event needs is kept, not the whole object.
        assert poster.owners[0]["metadata"] == {
            "name": "digits",
            "namespace": "ml",
            "uid": "u1",
            "resourceVersion": "3",
        }
        assert "spec" not in poster.owners[0]
    finally:
        await sink.stop()


async def test_a_failed_post_does_not_stop_the_next_ones() -> None:
    poster = SlowPoster(fail=1)
    sink = EventSink(poster)
    sink.start()
    sink.emit(_ms("a"), "Normal", "First", "lost")
    sink.emit(_ms("a"), "Normal", "Second", "posted")
    await sink.stop()
    assert [p[1] for p in poster.posted] == ["Second"]


async def test_objects_post_in_parallel_each_in_order_stamped_when_emitted() -> None:
    poster = SlowPoster(delay_s=0.2)
    sink = EventSink(poster, posters=4)
    sink.start()
    emitted = datetime.now(UTC)
    names = [f"ms-{index}" for index in range(16)]
    for name in names:
        for reason in ("TrainingStarted", "Promoted"):
            sink.emit(_ms(name), "Normal", reason, name)
    await sink.stop(drain_s=30)
    assert len(poster.posted) == 32
    # Four posters at once, each with its share of the objects (4 of the 16 each here).
    assert poster.peak == 4
    for name in names:
        assert [reason for _, reason, said in poster.posted if said == name] == [
            "TrainingStarted",
            "Promoted",
        ]
    # Stamped when emitted, not when posted (the last ones were posted seconds later).
    assert all(at is not None and (at - emitted).total_seconds() < 0.5 for at in poster.stamps)


async def test_a_full_queue_drops_new_events(caplog: pytest.LogCaptureFixture) -> None:
    poster = SlowPoster(delay_s=10)
    sink = EventSink(poster, limit=2, posters=1)  # not started: nothing drains
    with caplog.at_level(logging.WARNING, logger="modelservice_operator.events"):
        for index in range(205):
            sink.emit(_ms("a"), "Normal", f"R{index}", "m")
    assert sink.pending() == 2
    assert sink.dropped == 203
    # Said at the first drop and every hundredth, not 203 times.
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 3
    assert said[-1].endswith("(201 dropped so far)")
