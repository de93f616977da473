"""The reconcile queue: bounded, deduplicated, and a failing key backs off alone."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from modelservice_operator.backoff import BackoffPolicy
from modelservice_operator.kube import ApiError
from modelservice_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit

NO_JITTER = BackoffPolicy(base_s=0.1, max_s=1.0, jitter=0)


class Recorder:
    """A process function that records when each key ran and how many ran at once."""

    def __init__(
        self, work_s: float = 0.0, fail: Callable[[str, int], Exception | None] = lambda *_: None
    ) -> None:
        self.work_s = work_s
        self.fail = fail
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.now_running = 0
        self.most_running = 0

    async def __call__(self, key: str) -> None:
        self.starts[key].append(time.monotonic())
        self.now_running += 1
        self.most_running = max(self.most_running, self.now_running)
        try:
            await asyncio.sleep(self.work_s)
            exc = self.fail(key, len(self.starts[key]))
            if exc is not None:
                raise exc
        finally:
            self.now_running -= 1


def queue_for(process: Callable[[str], Awaitable[None]], workers: int = 4) -> WorkQueue[str]:
    queue: WorkQueue[str] = WorkQueue(
        process,
        workers=workers,
        policy=NO_JITTER,
        retry_after=lambda exc: exc.retry_after if isinstance(exc, ApiError) else None,
        expected=(ApiError,),
    )
    queue.start()
    return queue


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_at_most_workers_run_at_once_and_each_key_once() -> None:
    record = Recorder(work_s=0.03)
    queue = queue_for(record, workers=3)
    try:
        for index in range(20):
            queue.add(f"ms-{index}")
        await until(lambda: len(record.starts) == 20 and not queue.running)
        assert record.most_running == 3
        assert all(len(times) == 1 for times in record.starts.values())
    finally:
        await queue.stop()


async def test_a_key_added_while_waiting_or_running_costs_at_most_one_more_run() -> None:
    gate = asyncio.Event()

    async def slow(key: str) -> None:
        runs.append(key)
        await gate.wait()

    runs: list[str] = []
    queue = queue_for(slow, workers=2)
    try:
        for _ in range(5):
            queue.add("a", delay=0.05)
        await until(lambda: runs == ["a"])
        for _ in range(5):  # while it runs: remembered once, never run in parallel
            queue.add("a")
        await asyncio.sleep(0.05)
        assert runs == ["a"]
        assert queue.running == {"a"}
        gate.set()
        await until(lambda: len(runs) == 2 and not queue.running)
        await asyncio.sleep(0.05)
        assert runs == ["a", "a"]
    finally:
        await queue.stop()


async def test_a_delayed_add_waits_and_an_earlier_add_wins() -> None:
    record = Recorder()
    queue = queue_for(record)
    try:
        start = time.monotonic()
        queue.add("late", delay=0.2)
        queue.add("soon", delay=0.2)
        queue.add("soon", delay=0.0)
        await until(lambda: "late" in record.starts)
        assert record.starts["late"][0] - start >= 0.2
        assert record.starts["soon"][0] - start < 0.1
        assert len(record.starts["soon"]) == 1
    finally:
        await queue.stop()


async def test_a_429_waits_its_retry_after_and_the_others_flow_meanwhile() -> None:
    def throttled(key: str, attempt: int) -> Exception | None:
        if key == "busy" and attempt <= 2:
            return ApiError(429, "Too Many Requests", retry_after=0.3)
        return None

    record = Recorder(fail=throttled)
    queue = queue_for(record, workers=1)  # one worker: a blocking retry would stall the rest
    try:
        queue.add("busy")
        await until(lambda: len(record.starts["busy"]) == 1 and not queue.running)
        assert queue.backing_off("busy") > 0
        queue.add("busy")  # a new event does not cut the wait short
        for index in range(5):
            queue.add(f"fine-{index}")
        await until(lambda: all(f"fine-{i}" in record.starts for i in range(5)))
        await until(lambda: len(record.starts["busy"]) == 3 and not queue.running)
        # The others ran while "busy" waited out its Retry-After, not after it.
        retried = record.starts["busy"][1]
        assert all(record.starts[f"fine-{i}"][0] < retried for i in range(5))
        gaps = [b - a for a, b in itertools.pairwise(record.starts["busy"])]
        assert all(gap >= 0.3 for gap in gaps), gaps
        assert queue.backing_off("busy") == 0  # it worked: no backoff left
        assert queue.backoff.failures("busy") == 0
    finally:
        await queue.stop()


async def test_repeated_failures_back_off_exponentially_and_crashes_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(key: str, attempt: int) -> Exception | None:
        return RuntimeError("bug") if attempt <= 3 else None

    record = Recorder(fail=broken)
    queue = queue_for(record)
    try:
        with caplog.at_level(logging.WARNING, logger="modelservice_operator.workqueue"):
            queue.add("x")
            await until(lambda: len(record.starts["x"]) == 4 and not queue.running)
        times = record.starts["x"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 0.1, 0.2, 0.4 s without jitter (scheduling adds a little, never less).
        for gap, expected in zip(gaps, (0.1, 0.2, 0.4), strict=True):
            assert expected <= gap < expected + 0.15, gaps
        crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
        assert len(crashes) == 3
        assert all(r.exc_info for r in crashes)
    finally:
        await queue.stop()


async def test_forget_drops_the_backoff_of_a_deleted_object() -> None:
    record = Recorder(fail=lambda key, attempt: ApiError(500, "boom") if attempt == 1 else None)
    queue = queue_for(record)
    try:
        queue.add("gone")
        await until(lambda: queue.backing_off("gone") > 0)
        queue.forget("gone")
        assert queue.backing_off("gone") == 0
        assert queue.backoff.failures("gone") == 0
        await asyncio.sleep(0.3)  # the pending retry was dropped too
        assert len(record.starts["gone"]) == 1
        assert queue.pending() == 0
    finally:
        await queue.stop()


def test_a_queue_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkQueue(Recorder(), workers=0)


async def test_the_wait_for_a_free_worker_is_reported() -> None:
    waits: list[float] = []
    record = Recorder(work_s=0.05)
    queue: WorkQueue[str] = WorkQueue(record, workers=1, policy=NO_JITTER, waited=waits.append)
    queue.start()
    try:
        queue.add("first")
        queue.add("second")
        await until(lambda: len(record.starts) == 2 and not queue.running)
        assert len(waits) == 2
        assert waits[0] < 0.04  # a free worker at once
        assert waits[1] >= 0.04  # behind the first one's 50 ms
    finally:
        await queue.stop()


async def test_urgent_keys_go_before_every_other_due_key() -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def process(key: str) -> None:
        order.append(key)
        if key == "blocker":
            await gate.wait()

    queue = queue_for(process, workers=1)
    try:
        queue.add("blocker")
        await until(lambda: order == ["blocker"])
        # While the one worker is busy: three children's news, then two new objects, then
        # a child's news that becomes urgent when its object is changed.
        for key in ("child-1", "child-2", "child-3", "changed"):
            queue.add(key)
        queue.add("new-1", urgent=True)
        queue.add("new-2", urgent=True)
        queue.add("changed", urgent=True)
        queue.add("new-1")  # a later plain add keeps it urgent
        gate.set()
        await until(lambda: len(order) == 7 and not queue.running)
        # Among urgent keys, the longest due first ("changed" was due before the new ones).
        assert order == [
            "blocker", "changed", "new-1", "new-2", "child-1", "child-2", "child-3"
        ]  # fmt: skip
        assert queue.pending() == 0
    finally:
        await queue.stop()


async def test_an_urgent_add_while_running_runs_it_again_first() -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def process(key: str) -> None:
        order.append(key)
        if len(order) == 1:
            await gate.wait()

    queue = queue_for(process, workers=1)
    try:
        queue.add("a")
        await until(lambda: order == ["a"])
        queue.add("b")
        queue.add("a", urgent=True)  # changed while it runs: once more, before b
        gate.set()
        await until(lambda: len(order) == 3 and not queue.running)
        assert order == ["a", "a", "b"]
    finally:
        await queue.stop()


async def test_an_urgent_key_still_waits_its_delay_and_its_backoff() -> None:
    record = Recorder()
    queue = queue_for(record, workers=1)
    try:
        start = time.monotonic()
        queue.add("later", delay=0.15, urgent=True)
        queue.add("now")
        await until(lambda: "later" in record.starts)
        assert record.starts["now"][0] - start < 0.1
        assert record.starts["later"][0] - start >= 0.15
    finally:
        await queue.stop()
