"""The inference routes' raw ASGI fast path: which paths it takes, and what the framework
did for them that it now does itself (405 with ``Allow``, 413 while reading, metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from modelservice_serving.fastpath import V1_PREDICT, V2_INFER, V2_VERSION_INFER, match

from .conftest import MODEL_NAME, RunningServer, ServerFactory

pytestmark = pytest.mark.unit

ROW = [0.0] * 64


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/digits:predict", (V1_PREDICT, "digits", None)),
        ("/v1/models/a:b:predict", (V1_PREDICT, "a:b", None)),
        ("/v2/models/digits/infer", (V2_INFER, "digits", None)),
        ("/v2/models/digits/versions/3/infer", (V2_VERSION_INFER, "digits", "3")),
        # Not inference, or not one segment per parameter: FastAPI's (404, or its route).
        ("/v1/models/digits", None),
        ("/v1/models/:predict", None),
        ("/v1/models/a/b:predict", None),
        ("/v2/models//infer", None),
        ("/v2/models/digits/versions//infer", None),
        ("/v2/models/digits/other/3/infer", None),
        ("/v2/models/digits/versions/3/4/infer", None),
        ("/v2/models/digits/ready", None),
        ("/v2/models/infer", None),
    ],
)
def test_match_takes_exactly_the_inference_paths(
    path: str, expected: tuple[str, str, str | None] | None
) -> None:
    assert match(path) == expected


async def test_other_methods_on_inference_paths_get_405_allowing_post(
    client: httpx.AsyncClient,
) -> None:
    for path in (f"/v1/models/{MODEL_NAME}:predict", f"/v2/models/{MODEL_NAME}/infer"):
        for method in ("GET", "OPTIONS", "PUT"):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == "POST"
            assert response.json() == {"error": "Method Not Allowed"}


async def test_chunked_bodies_are_cut_at_the_limit(server_factory: ServerFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"instances": [['
        for _ in range(100):
            yield b"0.0, " * 20

    with server_factory(max_body_bytes=2048) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post(f"/v2/models/{MODEL_NAME}/infer", content=chunks())
            assert response.status_code == 413
            assert "2048" in response.json()["error"]


async def test_answers_carry_their_length_and_the_metrics_their_route(
    client: httpx.AsyncClient, default_server: RunningServer
) -> None:
    response = await client.post(f"/v2/models/{MODEL_NAME}/versions/1/infer", json={
        "inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW}]
    })  # fmt: skip
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-type"] == "application/json"
    missing = await client.post(f"/v2/models/{MODEL_NAME}/versions/9/infer", json={})
    assert missing.status_code == 404
    text = (await client.get("/metrics")).text
    route = 'endpoint="/v2/models/{name}/versions/{version}/infer",method="POST"'
    assert f'modelservice_requests_total{{{route},status="200"}} 1.0' in text
    assert f'modelservice_requests_total{{{route},status="404"}} 1.0' in text
    assert "modelservice_inflight_requests 0.0" in text
