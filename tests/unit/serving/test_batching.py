"""Dynamic batching, overload and readiness of a real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from .conftest import MODEL_NAME

pytestmark = pytest.mark.unit

ROW = [1.0] * 64
V1 = f"/v1/models/{MODEL_NAME}:predict"


async def test_concurrent_requests_share_one_model_call(server_factory: Any) -> None:
    # A long latency window and a batch size equal to the request count: one call exactly.
    with server_factory(max_batch_size=24, max_latency_ms=2000) as server:
        limits = httpx.Limits(max_connections=24)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post(V1, json={"instances": [ROW]}) for _ in range(24))
            )
            metrics = (await http.get("/metrics")).text
        assert [response.status_code for response in responses] == [200] * 24
        assert server.counter.batches == [24]
        assert "modelservice_batch_size_count 1.0" in metrics
        assert "modelservice_batch_size_sum 24.0" in metrics


async def test_batches_never_exceed_the_maximum(server_factory: Any) -> None:
    with server_factory(max_batch_size=4, max_latency_ms=50) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post(V1, json={"instances": [ROW, ROW]}) for _ in range(10))
            )
        assert all(response.status_code == 200 for response in responses)
        assert sum(server.counter.batches) == 20
        assert max(server.counter.batches) <= 4


async def test_full_queue_is_answered_503_with_retry_after(server_factory: Any) -> None:
    with server_factory(max_batch_size=64, max_latency_ms=1500, max_queue=5) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post(V1, json={"instances": [ROW]}) for _ in range(12))
            )
            too_big = await http.post(V1, json={"instances": [ROW] * 6})
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * 5 + [503] * 7
        refused = next(response for response in responses if response.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert "overloaded" in refused.json()["error"]
        assert too_big.status_code == 413


async def test_live_before_ready_until_the_model_is_loaded(server_factory: Any) -> None:
    gate = threading.Event()
    with server_factory(gate=gate, wait_ready=False) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.get("/v2/health/live")).status_code == 200
            assert (await http.get("/v2/health/ready")).status_code == 503
            assert (await http.get(f"/v2/models/{MODEL_NAME}/ready")).status_code == 503
            not_ready = await http.post(V1, json={"instances": [ROW]})
            assert not_ready.status_code == 503
            assert "not loaded" in not_ready.json()["error"]
            gate.set()
            for _ in range(200):
                if (await http.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/v2/health/ready")).status_code == 200
            assert (await http.post(V1, json={"instances": [ROW]})).status_code == 200


async def test_inflight_gauge_counts_inference_requests_until_answered(
    server_factory: Any,
) -> None:
    # A long batch window holds the requests in the queue: all are in flight at once, the
    # scrapes themselves (GET /metrics) are not, and the gauge returns to 0 once answered.
    with server_factory(max_batch_size=64, max_latency_ms=3000) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            pending = [
                asyncio.create_task(http.post(V1, json={"instances": [ROW]})) for _ in range(7)
            ]
            v2 = asyncio.create_task(
                http.post(
                    f"/v2/models/{MODEL_NAME}/infer",
                    json={
                        "inputs": [
                            {"name": "inputs", "datatype": "FP32", "shape": [1, 64], "data": ROW}
                        ]
                    },
                )
            )
            seen = ""
            for _ in range(200):
                seen = (await http.get("/metrics")).text
                if "modelservice_inflight_requests 8.0" in seen:
                    break
                await asyncio.sleep(0.01)
            assert "modelservice_inflight_requests 8.0" in seen
            responses = await asyncio.gather(*pending, v2)
            after = (await http.get("/metrics")).text
        assert [r.status_code for r in responses] == [200] * 8
        assert "modelservice_inflight_requests 0.0" in after
