"""Large requests go in ``max_batch_size`` slices that small requests overtake; admission
refuses before the body is read. The batcher with a stand-in model (pure), then through HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import numpy as np
import pytest

from modelservice_serving.batching import DynamicBatcher, _water_fill
from modelservice_serving.errors import OverloadedError
from modelservice_serving.model import Tensors

from .conftest import MODEL_NAME, ServerFactory

pytestmark = pytest.mark.unit


class SlowDouble:
    """y = 2x, taking ``seconds`` per call; records the rows of each call."""

    def __init__(self, seconds: float = 0.002) -> None:
        self.seconds = seconds
        self.calls: list[int] = []

    def __call__(self, inputs: Tensors) -> Tensors:
        time.sleep(self.seconds)
        self.calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def _rows(start: int, count: int) -> Tensors:
    return {"x": np.arange(start, start + count, dtype=np.float32).reshape(count, 1)}


@pytest.mark.parametrize(
    ("demands", "capacity", "shares"),
    [
        ([100, 1, 1], 8, [6, 1, 1]),
        ([100, 100], 8, [4, 4]),
        ([100, 100, 100], 8, [3, 3, 2]),  # the remainder to the oldest
        ([3, 100, 2], 8, [3, 3, 2]),
        ([1] * 8 + [50], 8, [1] * 8 + [0]),
    ],
)
def test_water_fill(demands: list[int], capacity: int, shares: list[int]) -> None:
    assert _water_fill(demands, capacity) == shares
    assert sum(shares) == capacity


async def test_a_large_request_is_sliced_and_small_ones_overtake_it() -> None:
    model = SlowDouble()
    batcher = DynamicBatcher(model, max_batch_size=8, max_latency_s=0.001, max_queue_rows=1000)
    batcher.start()
    try:
        finished: list[str] = []

        async def call(label: str, inputs: Tensors) -> Tensors:
            result = await batcher.submit(inputs, len(inputs["x"]))
            finished.append(label)
            return result

        big = asyncio.create_task(call("big", _rows(0, 200)))
        await asyncio.sleep(0.01)  # the big request is being served
        smalls = [asyncio.create_task(call(f"small{i}", _rows(1000 + i, 1))) for i in range(5)]
        big_result, *small_results = await asyncio.gather(big, *smalls)
    finally:
        await batcher.stop()
    assert max(model.calls) <= 8
    assert sum(model.calls) == 205
    assert finished[-1] == "big"  # every small request finished before the big one
    np.testing.assert_array_equal(big_result["y"], _rows(0, 200)["x"] * 2)  # in order
    for index, result in enumerate(small_results):
        np.testing.assert_array_equal(result["y"], [[2.0 * (1000 + index)]])


async def test_two_large_requests_share_each_batch() -> None:
    model = SlowDouble(0.001)
    batcher = DynamicBatcher(model, max_batch_size=8, max_latency_s=0.001, max_queue_rows=1000)
    batcher.start()
    try:
        first, second = await asyncio.gather(
            batcher.submit(_rows(0, 40), 40), batcher.submit(_rows(100, 40), 40)
        )
    finally:
        await batcher.stop()
    assert model.calls == [8] * 10  # 4 + 4 rows of each, every call
    np.testing.assert_array_equal(first["y"], _rows(0, 40)["x"] * 2)
    np.testing.assert_array_equal(second["y"], _rows(100, 40)["x"] * 2)


async def test_a_client_that_left_stops_costing_model_calls() -> None:
    model = SlowDouble(0.005)
    batcher = DynamicBatcher(model, max_batch_size=4, max_latency_s=0.001, max_queue_rows=1000)
    batcher.start()
    try:
        abandoned = asyncio.create_task(batcher.submit(_rows(0, 400), 400))
        await asyncio.sleep(0.03)
        abandoned.cancel()
        await asyncio.sleep(0.03)
        assert batcher.queued_rows == 0
    finally:
        await batcher.stop()
    assert sum(model.calls) < 100


async def test_reserve_refuses_from_the_declared_length() -> None:
    batcher = DynamicBatcher(
        SlowDouble(), max_batch_size=8, max_latency_s=0.001, max_queue_rows=100
    )
    assert batcher.estimated_rows(50_000) == 1  # nothing learned yet
    batcher.learn(body_bytes=1000, rows=2)  # 500 bytes a row
    assert batcher.estimated_rows(50_000) == 100
    whole_queue = batcher.reserve(50_000)
    with pytest.raises(OverloadedError, match="~1 "):
        batcher.reserve(400)  # one more row does not fit beside it
    whole_queue.release()
    whole_queue.release()  # idempotent
    small = batcher.reserve(400)
    assert small.rows == 1
    with pytest.raises(OverloadedError, match="~100"):
        batcher.reserve(50_000)
    small.release()
    # Empty, a request estimated beyond the queue still gets in: submit() judges its rows.
    assert batcher.reserve(10**9).rows > 100


async def test_large_requests_leave_the_last_batch_of_room_to_small_ones() -> None:
    batcher = DynamicBatcher(
        SlowDouble(), max_batch_size=8, max_latency_s=0.001, max_queue_rows=100
    )
    batcher.learn(body_bytes=1000, rows=1)  # 1000 bytes a row
    large = batcher.reserve(60_000)  # 60 rows: fits, the queue was empty
    with pytest.raises(OverloadedError):
        batcher.reserve(33_000)  # 33 more large rows would reach into the last 8
    smalls = [batcher.reserve(8_000) for _ in range(5)]  # 40 rows of small requests still fit
    assert sum(small.rows for small in smalls) == 40
    with pytest.raises(OverloadedError):
        batcher.reserve(1_000)  # now the queue is full for everyone
    large.release()


V1 = f"/v1/models/{MODEL_NAME}:predict"
ROW = [0.5] * 64


async def test_a_full_queue_refuses_before_the_body_arrives(server_factory: ServerFactory) -> None:
    """The 503 comes while the client has sent only its head: nothing of the body was read."""
    with server_factory(max_batch_size=64, max_latency_ms=3000, max_queue=4) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            queued = [
                asyncio.create_task(http.post(V1, json={"instances": [ROW]})) for _ in range(4)
            ]
            for _ in range(1000):  # until the four rows wait in the queue
                if server.state.batcher is not None and server.state.batcher.queued_rows == 4:
                    break
                await asyncio.sleep(0.01)
            host, port = server.url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    "content-length: 500000\r\n\r\n".encode()
                )
                sock.settimeout(5)
                answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
            assert b"retry-after: 1" in answer.lower()
            assert b"overloaded" in answer
            assert [r.status_code for r in await asyncio.gather(*queued)] == [200] * 4


async def test_large_requests_through_http_are_sliced(server_factory: ServerFactory) -> None:
    with server_factory(max_batch_size=8, max_latency_ms=1) as server:
        rows: Any = np.random.default_rng(3).random((50, 64)).tolist()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            whole = await http.post(V1, json={"instances": rows})
            single = [await http.post(V1, json={"instances": [row]}) for row in rows[:3]]
        assert whole.status_code == 200
        assert max(server.counter.batches) <= 8
        np.testing.assert_allclose(
            whole.json()["predictions"][:3],
            [response.json()["predictions"][0] for response in single],
            rtol=1e-5,
        )
