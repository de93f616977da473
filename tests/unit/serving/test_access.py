"""The closed endpoint: bearer token (health exempt), /metrics on its own port, /docs opt-in."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelservice_serving.server import start_metrics_server

from .conftest import MODEL_NAME, ServerFactory, free_port

pytestmark = pytest.mark.unit

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
ROW = {"instances": [[0.0] * 64]}
TOKEN = "s3cr3t-t0ken"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as `echo` writes it
    return path


async def test_token_required_except_for_health(
    server_factory: ServerFactory, token_file: Path
) -> None:
    with server_factory(auth_token_file=token_file) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            missing = await http.post(PREDICT, json=ROW)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="modelservice"'
            assert missing.json() == {"error": "a bearer token is required"}
            wrong = await http.post(
                PREDICT, json=ROW, headers={"Authorization": f"Bearer {TOKEN}x"}
            )
            assert wrong.status_code == 401
            assert wrong.json() == {"error": "the bearer token is not valid"}
            assert TOKEN not in wrong.text
            good = await http.post(PREDICT, json=ROW, headers={"Authorization": f"Bearer {TOKEN}"})
            assert good.status_code == 200
            assert len(good.json()["predictions"]) == 1
            for probe in ("/v2/health/live", "/v2/health/ready", "/"):
                assert (await http.get(probe)).status_code == 200, probe
            # Metadata and metrics tell about the model: they need the token too.
            assert (await http.get(f"/v2/models/{MODEL_NAME}")).status_code == 401
            assert (await http.get("/metrics")).status_code == 401


async def test_docs_only_when_asked(server_factory: ServerFactory) -> None:
    with server_factory(docs=True) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.get("/docs")).status_code == 200
            paths = (await http.get("/openapi.json")).json()["paths"]
            assert "/v2/models/{name}/infer" in paths


async def test_metrics_on_their_own_port(server_factory: ServerFactory) -> None:
    port = free_port()
    with server_factory(metrics_port=port) as server:
        stop = start_metrics_server(server.state.settings, server.state)
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                await http.post(f"{server.url}{PREDICT}", json=ROW)
                assert (await http.get(f"{server.url}/metrics")).status_code == 404
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                assert "modelservice_queue_depth 0.0" in text
                assert 'endpoint="/v1/models/{name}:predict"' in text
        finally:
            stop()
