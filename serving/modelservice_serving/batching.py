"""Dynamic batching: concurrent requests merged into one model call, fairly.

A batch is dispatched when it holds ``max_batch_size`` rows or when its oldest request has
waited ``max_latency``. The model runs on one worker thread, so the event loop keeps
accepting requests meanwhile; those pile up and go out together as the next batch. A model
whose calls take less than ``inline_below_s`` (the median of the last calls, which a core
shared with other work does not skew; LiteRT on a small model takes tens of microseconds)
is called on the event loop itself instead: handing each batch
to a thread and its result back costs more than such a call, and on one core the thread
gains nothing. A slower call moves the model back to its thread.

A request larger than a batch is split: each batch shares its rows among the requests at the
head of the queue (up to ``max_batch_size`` of them) by water-filling, so small requests go
whole in the next batch while large ones advance a slice at a time, and a large client
cannot starve small ones. No batch exceeds ``max_batch_size``.

The queue is bounded in rows. Admission happens twice: :meth:`DynamicBatcher.reserve`
before the body is read (from ``Content-Length`` and the bytes per row seen so far) and
:meth:`DynamicBatcher.submit` with the real row count; either refuses at once with
:class:`OverloadedError` (503, ``Retry-After``) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from .deferred import DeferredTensor, merged_array
from .errors import OverloadedError, PayloadTooLargeError
from .model import Tensors

log = logging.getLogger(__name__)

PredictFn = Callable[[Tensors], Tensors]
# A request's inputs as queued: arrays, or values the batch converts (:mod:`.deferred`).
Inputs = Mapping[str, npt.NDArray[Any] | DeferredTensor]
BatchObserver = Callable[[int], None]

# Weight of the newest request in the running bytes-per-row estimate.
_LEARNING_RATE = 0.2
# Model calls whose median duration decides where the next one runs.
_TIMED_CALLS = 15


class Waiter(Protocol):
    """Who receives a request's outputs: an :class:`asyncio.Future`, or anything that
    answers the same three calls (the HTTP protocol's inference path answers its client
    from them directly). ``done()`` is true once answered or abandoned: such a request's
    rows are dropped before the model runs."""

    def done(self) -> bool: ...

    def set_result(self, result: Tensors, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class _Pending:
    """One request in the queue (a plain slotted class: one is made per request)."""

    __slots__ = ("answered", "enqueued", "future", "inputs", "pieces", "rows", "taken")

    def __init__(self, inputs: Inputs, rows: int, enqueued: float, future: Waiter) -> None:
        self.inputs = inputs
        self.rows = rows
        self.enqueued = enqueued
        self.future = future
        self.taken = 0  # rows handed to batches so far
        self.pieces: list[Tensors] = []
        self.answered = 0  # rows whose outputs came back

    @property
    def remaining(self) -> int:
        return self.rows - self.taken


class _Slice:
    """Rows ``[start, stop)`` of a request, in one batch (a plain class: cheaper to make
    than a frozen dataclass, one per request and batch)."""

    __slots__ = ("pending", "start", "stop")

    def __init__(self, pending: _Pending, start: int, stop: int) -> None:
        self.pending = pending
        self.start = start
        self.stop = stop


class Reservation:
    """Rows held for a request whose body is still being read; release once submitted."""

    def __init__(self, batcher: DynamicBatcher, rows: int) -> None:
        self._batcher = batcher
        self.rows = rows

    def release(self) -> None:
        if self.rows:
            self._batcher._reserved_rows -= self.rows
            self.rows = 0


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
        inline_below_s: float = 0.0,
    ) -> None:
        self._predict = predict
        self.inline_below_s = inline_below_s
        # Durations of the last model calls; none yet: on the thread.
        self._call_seconds: collections.deque[float] = collections.deque(maxlen=_TIMED_CALLS)
        self._inline = False
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        self._pending: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._reserved_rows = 0
        self._bytes_per_row: float | None = None
        self._has_work = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def runs_inline(self) -> bool:
        """Whether the next batch runs on the event loop (its calls have been that fast)."""
        return self._inline

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

    def estimated_rows(self, body_bytes: int | None) -> int:
        """Rows a body of ``body_bytes`` likely holds, from the requests seen so far (1 until
        one was seen or without a length)."""
        if body_bytes is None or self._bytes_per_row is None:
            return 1
        return max(1, math.floor(body_bytes / self._bytes_per_row))

    def reserve(self, body_bytes: int | None) -> Reservation:
        """Admits a request before its body is read, or refuses it (503) when the queue
        cannot take the rows its ``Content-Length`` suggests."""
        rows = self.estimated_rows(body_bytes)
        held = self._queued_rows + self._reserved_rows
        # A request estimated larger than the whole queue still gets in when it is empty:
        # the estimate may be wrong, and submit() answers 413 if it really is too large.
        if held and held + rows > self._room_for(rows):
            raise OverloadedError(
                f"server overloaded: {held} rows queued or arriving, this request ~{rows} "
                f"(limit {self.max_queue_rows}); retry later"
            )
        self._reserved_rows += rows
        return Reservation(self, rows)

    def _room_for(self, rows: int) -> int:
        """Queue rows a request may fill: one larger than a batch leaves the last batch's
        worth free, so large requests cannot keep small ones out of a full queue."""
        if rows > self.max_batch_size:
            return self.max_queue_rows - self.max_batch_size
        return self.max_queue_rows

    def learn(self, body_bytes: int, rows: int) -> None:
        """Updates the bytes-per-row estimate with one parsed request."""
        observed = body_bytes / rows
        previous = self._bytes_per_row
        self._bytes_per_row = (
            observed if previous is None else previous + _LEARNING_RATE * (observed - previous)
        )

    async def submit(self, inputs: Inputs, rows: int) -> Tensors:
        """Queues one request's rows and waits for its outputs (of one or several batches)."""
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self.enqueue(inputs, rows, future)
        return await future

    def enqueue(self, inputs: Inputs, rows: int, waiter: Waiter) -> None:
        """Queues one request's rows; ``waiter`` gets its outputs once every row has run
        (or the model's exception). Refuses at once, raising 413 or 503."""
        if rows > self.max_queue_rows:
            raise PayloadTooLargeError(
                f"request has {rows} rows; at most {self.max_queue_rows} fit the queue"
            )
        if self._queued_rows and self._queued_rows + rows > self._room_for(rows):
            raise OverloadedError(
                f"server overloaded: {self._queued_rows} rows queued (limit "
                f"{self.max_queue_rows}); retry later"
            )
        self._pending.append(_Pending(inputs, rows, time.monotonic(), waiter))
        self._queued_rows += rows
        self._has_work.set()
        if self._queued_rows >= self.max_batch_size:
            self._batch_full.set()

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            wait = self._pending[0].enqueued + self.max_latency_s - time.monotonic()
            if wait > 0 and self._queued_rows < self.max_batch_size and not self._closing:
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), wait)
            batch = self._take_batch()
            if batch:
                await self._run(loop, batch)

    def _take_batch(self) -> list[_Slice]:
        """Up to ``max_batch_size`` rows from the requests at the head of the queue.

        The head requests (at most one per row of a batch) share the batch by
        water-filling: each gets an equal share, a request that needs less gives the rest
        to the others, and the oldest take the remainder. Requests that still have rows
        keep their place at the head. Requests whose clients went away (or that failed)
        are dropped before paying for the model.
        """
        capacity = self.max_batch_size
        heads: list[_Pending] = []
        demand = 0
        while self._pending and len(heads) < capacity:
            item = self._pending.popleft()
            if item.future.done():
                self._queued_rows -= item.remaining
                continue
            heads.append(item)
            demand += item.remaining
        if demand <= capacity:  # the common case: everything fits whole
            shares = [item.remaining for item in heads]
        else:
            shares = _water_fill([item.remaining for item in heads], capacity)
        batch: list[_Slice] = []
        unfinished: list[_Pending] = []
        for item, share in zip(heads, shares, strict=True):
            if share:
                batch.append(_Slice(item, item.taken, item.taken + share))
                item.taken += share
                self._queued_rows -= share
            if item.remaining:
                unfinished.append(item)
        self._pending.extendleft(reversed(unfinished))
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Slice]) -> None:
        live = [piece for piece in batch if not piece.pending.future.done()]
        merged, live = _converted(live)
        if not live:
            return
        try:
            if self.runs_inline:
                outputs, seconds = _predict_batch(self._predict, live, merged)
            else:
                outputs, seconds = await loop.run_in_executor(
                    self._executor, _predict_batch, self._predict, live, merged
                )
        except Exception as exc:
            log.exception("model call failed", extra={"requests": len(live)})
            for piece in live:
                if not piece.pending.future.done():
                    piece.pending.future.set_exception(exc)
            return
        self._call_seconds.append(seconds)
        self._inline = statistics.median(self._call_seconds) < self.inline_below_s
        if self._on_batch is not None:
            self._on_batch(sum(piece.stop - piece.start for piece in live))
        for piece, result in zip(live, outputs, strict=True):
            pending = piece.pending
            if pending.future.done():
                continue
            pending.pieces.append(result)
            pending.answered += piece.stop - piece.start
            if pending.answered == pending.rows:
                pending.future.set_result(_joined(pending.pieces))


def _water_fill(demands: list[int], capacity: int) -> list[int]:
    """Shares of ``capacity`` (less than the total demand): every request gets up to one
    common level (the highest that fits), then one more row each for the oldest (first)
    that want more, until the capacity is used."""
    low, high = 0, max(demands)
    while low < high:  # the highest level whose shares fit; demands and sizes are small
        level = (low + high + 1) // 2
        if sum(min(demand, level) for demand in demands) <= capacity:
            low = level
        else:
            high = level - 1
    shares = [min(demand, low) for demand in demands]
    left = capacity - sum(shares)
    for index, demand in enumerate(demands):
        if not left:
            break
        if demand > shares[index]:
            shares[index] += 1
            left -= 1
    return shares


def _joined(pieces: list[Tensors]) -> Tensors:
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


def _converted(batch: list[_Slice]) -> tuple[Tensors | None, list[_Slice]]:
    """Deferred inputs to arrays, on the event loop (a failed request is answered here).

    When every input of every slice is deferred, the batch's rows become one array per
    input at once (returned, merged). Otherwise, or when the merged rows fail a check, each
    request with deferred inputs is converted on its own (its arrays replace them, for its
    later slices too) and one that fails gets its 4xx; the slices still to run are returned.
    """
    deferred = 0
    for piece in batch:
        for given in piece.pending.inputs.values():
            if type(given) is DeferredTensor:
                deferred += 1
                break
    if not deferred:
        return None, batch
    if deferred == len(batch):
        names = batch[0].pending.inputs.keys()
        merged: Tensors = {}
        for name in names:
            parts = []
            for piece in batch:
                value = piece.pending.inputs.get(name)
                if not isinstance(value, DeferredTensor):
                    break
                parts.append((value, piece.start, piece.stop))
            else:
                array = merged_array(parts)
                if array is not None:
                    merged[name] = array
                    continue
            break
        else:
            if all(len(piece.pending.inputs) == len(names) for piece in batch):
                return merged, batch
    kept: list[_Slice] = []
    for piece in batch:
        pending = piece.pending
        try:
            pending.inputs = {
                name: value.array() if isinstance(value, DeferredTensor) else value
                for name, value in pending.inputs.items()
            }
        except Exception as exc:  # its 4xx; its rows still queued are dropped (done)
            pending.future.set_exception(exc)
            continue
        kept.append(piece)
    return None, kept


def _arrays(inputs: Inputs) -> Tensors:
    """Inputs known to hold arrays only (converted by :func:`_converted`)."""
    return cast(Tensors, inputs)


def _predict_batch(
    predict: PredictFn, batch: list[_Slice], merged: Tensors | None = None
) -> tuple[list[Tensors], float]:
    """Concatenate (unless ``merged`` already is), call the model once, split the outputs
    per slice; with the call's duration in seconds (on the model thread, or inline)."""
    started = time.perf_counter()
    if merged is None:
        if len(batch) == 1 and batch[0].start == 0 and batch[0].stop == batch[0].pending.rows:
            return [predict(_arrays(batch[0].pending.inputs))], time.perf_counter() - started
        names = batch[0].pending.inputs.keys()
        merged = {
            name: np.concatenate(
                [_arrays(piece.pending.inputs)[name][piece.start : piece.stop] for piece in batch]
            )
            for name in names
        }
    outputs = predict(merged)
    results: list[Tensors] = []
    start = 0
    for piece in batch:
        end = start + piece.stop - piece.start
        results.append({name: value[start:end] for name, value in outputs.items()})
        start = end
    return results, time.perf_counter() - started
