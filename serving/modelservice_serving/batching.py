"""Dynamic batching: concurrent requests merged into one model call.

A batch is dispatched when it holds ``max_batch_size`` rows or when its oldest request has
waited ``max_latency``. The model runs on one worker thread, so the event loop keeps
accepting requests meanwhile; those pile up and go out together as the next batch. The queue
is bounded in rows: a request that does not fit is refused at once (:class:`OverloadedError`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import OverloadedError, PayloadTooLargeError
from .model import Tensors

log = logging.getLogger(__name__)

PredictFn = Callable[[Tensors], Tensors]
BatchObserver = Callable[[int], None]


@dataclass
class _Pending:
    inputs: Tensors
    rows: int
    enqueued: float
    future: asyncio.Future[Tensors] = field(repr=False)


class DynamicBatcher:
    """Owns the queue, the dispatch task and the model thread."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int,
        max_latency_s: float,
        max_queue_rows: int,
        on_batch: BatchObserver | None = None,
        on_queue_depth: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._pending: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._has_work = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def stop(self) -> None:
        """Finishes what is queued, then stops the dispatch task and the model thread."""
        self._closing = True
        self._has_work.set()
        self._batch_full.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: Tensors, rows: int) -> Tensors:
        """Queues one request's rows and waits for its slice of a batch's outputs."""
        if rows > self.max_queue_rows:
            raise PayloadTooLargeError(
                f"request has {rows} rows; at most {self.max_queue_rows} fit the queue"
            )
        if self._queued_rows + rows > self.max_queue_rows:
            raise OverloadedError(
                f"server overloaded: {self._queued_rows} rows queued (limit "
                f"{self.max_queue_rows}); retry later"
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows, loop.time(), loop.create_future())
        self._pending.append(pending)
        self._queued_rows += rows
        if self._on_queue_depth is not None:
            self._on_queue_depth(self._queued_rows)
        self._has_work.set()
        if self._queued_rows >= self.max_batch_size:
            self._batch_full.set()
        return await pending.future

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            wait = self._pending[0].enqueued + self.max_latency_s - loop.time()
            if wait > 0 and self._queued_rows < self.max_batch_size and not self._closing:
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), wait)
            batch = self._take_batch()
            if self._on_queue_depth is not None:
                self._on_queue_depth(self._queued_rows)
            await self._run(loop, batch)

    def _take_batch(self) -> list[_Pending]:
        """The oldest requests up to ``max_batch_size`` rows (at least one request)."""
        batch = [self._pending.popleft()]
        rows = batch[0].rows
        while self._pending and rows + self._pending[0].rows <= self.max_batch_size:
            item = self._pending.popleft()
            rows += item.rows
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        # Requests whose clients went away are dropped before paying for the model.
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        try:
            outputs = await loop.run_in_executor(
                self._executor, _predict_batch, self._predict, live
            )
        except Exception as exc:
            log.exception("model call failed", extra={"requests": len(live)})
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(sum(item.rows for item in live))
        for item, result in zip(live, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(result)


def _predict_batch(predict: PredictFn, batch: list[_Pending]) -> list[Tensors]:
    """On the model thread: concatenate, call the model once, split the outputs per request."""
    if len(batch) == 1:
        return [predict(batch[0].inputs)]
    names = batch[0].inputs.keys()
    merged = {name: np.concatenate([item.inputs[name] for item in batch]) for name in names}
    outputs = predict(merged)
    results: list[Tensors] = []
    start = 0
    for item in batch:
        end = start + item.rows
        results.append({name: value[start:end] for name, value in outputs.items()})
        start = end
    return results
