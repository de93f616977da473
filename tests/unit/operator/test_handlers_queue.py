"""The kopf handlers only enqueue: changes at once, child events debounced, resync spread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import kopf
import pytest

from modelservice_operator import handlers
from modelservice_operator.cache import MODELSERVICE_INDEX, IndexSource
from modelservice_operator.names import LABEL_NAME
from modelservice_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit

Key = tuple[str, str]


class Runs:
    def __init__(self) -> None:
        self.at: dict[Key, list[float]] = defaultdict(list)

    async def __call__(self, key: Key) -> None:
        self.at[key].append(time.monotonic())


def _event(type_: str | None, rv: str) -> dict[str, object]:
    return {
        "type": type_,
        "object": {
            "kind": "ModelService",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv},
        },
    }


def memo_with(runs: Runs, known: set[Key]) -> kopf.Memo:
    """The memo as ``configure`` leaves it, with ``known`` ModelServices in the cache."""
    memo = kopf.Memo()
    queue: WorkQueue[Key] = WorkQueue(runs, workers=4)
    queue.start()
    memo["queue"] = queue
    memo["source"] = IndexSource({MODELSERVICE_INDEX: {key: {} for key in known}})
    memo["indexed"] = asyncio.Event()
    return memo


async def test_a_change_is_queued_at_once_and_child_events_coalesce() -> None:
    runs = Runs()
    memo = memo_with(runs, {("ns", "a")})
    try:
        start = time.monotonic()
        await handlers.on_modelservice_event(
            event=_event("ADDED", "1"), namespace="ns", name="a", memo=memo
        )
        await asyncio.sleep(0.05)
        assert len(runs.at[("ns", "a")]) == 1
        assert runs.at[("ns", "a")][0] - start < 0.05
        for _ in range(20):  # a rollout's burst of pod events
            await handlers.on_child_event(namespace="ns", labels={LABEL_NAME: "a"}, memo=memo)
        await handlers.on_child_event(namespace="ns", labels={LABEL_NAME: "b"}, memo=memo)
        await asyncio.sleep(handlers.CHILD_EVENT_DEBOUNCE_S + 0.2)
        assert len(runs.at[("ns", "a")]) == 2  # one more, not twenty
        assert ("ns", "b") not in runs.at  # not a ModelService this operator knows
    finally:
        await memo["queue"].stop()


async def test_the_echo_of_the_operators_own_status_write_is_not_queued() -> None:
    runs = Runs()
    memo = memo_with(runs, {("ns", "a")})
    source = memo["source"]
    try:
        ms = {"kind": "ModelService", "metadata": {"name": "a", "namespace": "ns"}}
        written = {**ms, "metadata": {**ms["metadata"], "resourceVersion": "7"}}
        source.written(
            "ModelService", {**ms, "metadata": {**ms["metadata"], "resourceVersion": "6"}}, written
        )
        await handlers.on_modelservice_event(
            event=_event("MODIFIED", "7"), namespace="ns", name="a", memo=memo
        )
        await asyncio.sleep(0.05)
        assert ("ns", "a") not in runs.at  # its own status write: nothing new
        await handlers.on_modelservice_event(
            event=_event("MODIFIED", "8"), namespace="ns", name="a", memo=memo
        )
        await asyncio.sleep(0.05)
        assert len(runs.at[("ns", "a")]) == 1  # someone else's change (a spec edit)
        await handlers.on_modelservice_event(
            event=_event(None, "8"), namespace="ns", name="a", memo=memo
        )
        await asyncio.sleep(0.05)
        assert len(runs.at[("ns", "a")]) == 2  # listed at startup (a resume)
    finally:
        await memo["queue"].stop()


async def test_the_echo_of_the_operators_own_child_write_is_not_queued() -> None:
    runs = Runs()
    memo = memo_with(runs, {("ns", "a")})
    labels = {LABEL_NAME: "a"}
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "a-predictor", "namespace": "ns", "labels": labels},
    }
    created = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": "4"}}
    moved = {**deployment, "metadata": {**deployment["metadata"], "resourceVersion": "5"}}
    memo["source"].written("Deployment", None, created)
    try:
        added = {"type": "ADDED", "object": created}
        await handlers.on_child_event(namespace="ns", labels=labels, memo=memo, event=added)
        await asyncio.sleep(handlers.CHILD_EVENT_DEBOUNCE_S + 0.1)
        assert ("ns", "a") not in runs.at  # the operator created it: nothing new
        status = {"type": "MODIFIED", "object": moved}  # the Deployment controller's update
        await handlers.on_child_event(namespace="ns", labels=labels, memo=memo, event=status)
        await asyncio.sleep(handlers.CHILD_EVENT_DEBOUNCE_S + 0.1)
        assert len(runs.at[("ns", "a")]) == 1
    finally:
        await memo["queue"].stop()


async def test_the_resync_spreads_every_known_key_over_the_interval() -> None:
    known = {("ns", f"ms-{i}") for i in range(5)}
    runs = Runs()
    memo = memo_with(runs, known)
    interval = 0.5
    memo["indexed"].set()
    task = asyncio.create_task(handlers._resync_forever(memo, interval))
    try:
        started = time.monotonic()
        deadline = started + 5.0  # generous: the machine may be loaded
        while len(runs.at) < 5 and time.monotonic() < deadline:  # noqa: ASYNC110 (a poll)
            await asyncio.sleep(0.01)
        first = sorted(times[0] - started for times in runs.at.values())
        assert len(first) == 5
        # Due at 0.5, 0.6, 0.7, 0.8, 0.9 s: spread, not a burst at 0.5 s.
        assert first[-1] - first[0] >= 0.3
        assert first[0] >= interval
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await memo["queue"].stop()


async def test_a_deleted_modelservice_leaves_the_queue() -> None:
    runs = Runs()
    memo = memo_with(runs, {("ns", "a")})
    try:
        memo["queue"].add(("ns", "a"), delay=0.3)
        await handlers.on_modelservice_event(
            event={"type": "DELETED"}, namespace="ns", name="a", memo=memo
        )
        await asyncio.sleep(0.5)
        assert ("ns", "a") not in runs.at  # forgotten before it was due
    finally:
        await memo["queue"].stop()


async def test_created_and_changed_modelservices_go_before_the_start_up_listing() -> None:
    order: list[Key] = []
    gate = asyncio.Event()

    async def process(key: Key) -> None:
        order.append(key)
        await gate.wait()

    memo = kopf.Memo()
    queue: WorkQueue[Key] = WorkQueue(process, workers=1)
    queue.start()
    memo["queue"] = queue
    memo["source"] = IndexSource({MODELSERVICE_INDEX: {}})
    memo["indexed"] = asyncio.Event()

    def event(type_: str | None, name: str) -> dict[str, object]:
        obj = {"kind": "ModelService", "metadata": {"name": name, "namespace": "ns"}}
        return {"type": type_, "object": obj}

    try:
        for name in ("listed-1", "listed-2", "listed-3"):  # kopf's listing: no event type
            await handlers.on_modelservice_event(
                event=event(None, name), namespace="ns", name=name, memo=memo
            )
        await asyncio.sleep(0.02)  # listed-1 runs and holds the one worker
        for type_, name in (("ADDED", "new"), ("MODIFIED", "changed")):
            await handlers.on_modelservice_event(
                event=event(type_, name), namespace="ns", name=name, memo=memo
            )
        gate.set()
        await asyncio.sleep(0.1)
        assert [name for _, name in order] == [
            "listed-1", "new", "changed", "listed-2", "listed-3"
        ]  # fmt: skip
    finally:
        await queue.stop()
