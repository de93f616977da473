"""SIGTERM under load: readiness turns false, in-flight requests finish, the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import MODEL_NAME, TrainedModel, free_port, serving_env

pytestmark = pytest.mark.unit

ROW = [2.0] * 64


async def test_sigterm_fails_no_in_flight_request(trained_model: TrainedModel) -> None:
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before any awaiting)
        [
            sys.executable, "-m", "modelservice_serving", "serve",
            "--model-dir", str(trained_model.model_dir), "--model-name", MODEL_NAME,
            "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0",
            "--max-batch-size", "64", "--max-latency-ms", "4000", "--drain-delay-s", "0.5",
        ],
        env=serving_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "server never became ready"
                try:
                    if (await http.get("/v2/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

            async def predict() -> int:
                response = await http.post(
                    f"/v1/models/{MODEL_NAME}:predict", json={"instances": [ROW]}
                )
                return response.status_code

            # The long batch window holds these requests in the server's queue; SIGTERM comes
            # once all of them are there, i.e. accepted and in flight.
            in_flight = [asyncio.create_task(predict()) for _ in range(30)]
            while "modelservice_queue_depth 30.0" not in (await http.get("/metrics")).text:
                assert time.monotonic() < deadline + 30, "requests never reached the queue"
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            assert (await http.get("/v2/health/ready")).status_code == 503
            assert (await http.get("/v2/health/live")).status_code == 200
            assert await asyncio.gather(*in_flight) == [200] * 30
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_model_that_cannot_load_exits_non_zero(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "modelservice_serving", "serve", "--model-dir", str(tmp_path),
         "--host", "127.0.0.1", "--port", str(free_port()), "--grpc-port", "0"],
        env=serving_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    last = json.loads(completed.stderr.strip().splitlines()[-1])
    assert last["message"] == "exiting: model not loaded"
    assert "SavedModel" in last["error"]
