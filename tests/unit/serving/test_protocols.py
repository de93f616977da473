"""Both protocols through a real HTTP client against a real server on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from .conftest import MODEL_NAME, RunningServer

pytestmark = pytest.mark.unit

DIGITS = load_digits()
SAMPLES = DIGITS.data[:40].astype(float)
LABELS = DIGITS.target[:40]


def _accuracy(probabilities: Any) -> float:
    return float(
        (np.argmax(np.asarray(probabilities), axis=1) == LABELS[: len(probabilities)]).mean()
    )


async def test_v1_row_format(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{MODEL_NAME}:predict", json={"instances": SAMPLES.tolist()}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert np.asarray(predictions).shape == (40, 10)
    assert _accuracy(predictions) >= 0.8


async def test_v1_named_instances_and_columnar_format(client: httpx.AsyncClient) -> None:
    named = await client.post(
        f"/v1/models/{MODEL_NAME}:predict",
        json={"instances": [{"inputs": row} for row in SAMPLES[:3].tolist()]},
    )
    columnar = await client.post(
        f"/v1/models/{MODEL_NAME}:predict", json={"inputs": {"inputs": SAMPLES[:3].tolist()}}
    )
    plain = await client.post(
        f"/v1/models/{MODEL_NAME}:predict", json={"inputs": SAMPLES[:3].tolist()}
    )
    assert named.status_code == columnar.status_code == plain.status_code == 200
    np.testing.assert_allclose(named.json()["predictions"], columnar.json()["outputs"], rtol=1e-5)
    np.testing.assert_allclose(plain.json()["outputs"], columnar.json()["outputs"], rtol=1e-5)


async def test_v1_model_status_and_list(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/models/{MODEL_NAME}")).json() == {
        "name": MODEL_NAME,
        "ready": True,
    }
    assert (await client.get("/v1/models")).json() == {"models": [MODEL_NAME]}
    assert (await client.get("/")).json() == {"status": "alive"}


async def test_v2_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get(f"/v2/models/{MODEL_NAME}/ready")).status_code == 200
    server = (await client.get("/v2")).json()
    assert server["name"] == "modelservice-serving"
    metadata = (await client.get(f"/v2/models/{MODEL_NAME}")).json()
    assert metadata["name"] == MODEL_NAME
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 10]}]
    versioned = await client.get(f"/v2/models/{MODEL_NAME}/versions/1")
    assert versioned.json() == metadata


async def test_v2_infer(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {
        "id": "request-42",
        "inputs": [
            {"name": "inputs", "shape": [5, 64], "datatype": "FP32", "data": SAMPLES[:5].tolist()}
        ],
        "outputs": [{"name": "output_0"}],
    }
    response = await client.post(f"/v2/models/{MODEL_NAME}/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "request-42"
    assert result["model_name"] == MODEL_NAME
    (output,) = result["outputs"]
    assert output["name"] == "output_0"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [5, 10]
    assert _accuracy(np.asarray(output["data"]).reshape(5, 10)) >= 0.6
    flat = dict(body, inputs=[dict(body["inputs"][0], data=SAMPLES[:5].ravel().tolist())])
    versioned = await client.post(f"/v2/models/{MODEL_NAME}/versions/1/infer", json=flat)
    np.testing.assert_allclose(versioned.json()["outputs"][0]["data"], output["data"], rtol=1e-5)


ROW = [0.0] * 64
V1 = f"/v1/models/{MODEL_NAME}:predict"
V2 = f"/v2/models/{MODEL_NAME}/infer"


def _v2(**tensor: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW, **tensor}]
    }


BAD_INPUT = [
    ("v1 not json", V1, b"{not json", 400, "not valid JSON"),
    ("v1 empty body", V1, b"", 400, "empty"),
    ("v1 array body", V1, b"[1, 2]", 400, "JSON object"),
    ("v1 neither key", V1, {"rows": [ROW]}, 400, "'instances'"),
    ("v1 both keys", V1, {"instances": [ROW], "inputs": [ROW]}, 400, "not both"),
    ("v1 empty instances", V1, {"instances": []}, 400, "non-empty"),
    ("v1 short row", V1, {"instances": [[1.0, 2.0]]}, 422, "expects [-1, 64]"),
    ("v1 ragged rows", V1, {"instances": [ROW, [1.0]]}, 422, "rectangular"),
    ("v1 strings", V1, {"instances": [["a"] * 64]}, 422, "strings"),
    ("v1 nulls", V1, {"instances": [[None] * 64]}, 422, "null"),
    ("v1 wrong input name", V1, {"instances": [{"pixels": ROW}]}, 422, "['inputs']"),
    ("v1 instances not a list", V1, {"instances": {"a": 1}}, 400, "non-empty array"),
    ("v1 3-d instances", V1, {"instances": [[ROW]]}, 422, "shape [1, 1, 64]"),
    ("v1 flat instance", V1, {"instances": ROW}, 422, "shape [64]"),
    ("v1 beyond float32", V1, b'{"instances": [[' + b"1" * 40 + b"]]}", 422, "non-finite"),
    ("v1 not utf-8", V1, b'{"instances": "\xff"}', 400, "not valid JSON"),
    ("v1 infinity", V1, b'{"instances": [[1e999]]}', 400, "infinity"),
    ("v1 unknown model", "/v1/models/nope:predict", {"instances": [ROW]}, 404, "'nope'"),
    ("v2 not json", V2, b"}", 400, "not valid JSON"),
    ("v2 no inputs", V2, {"id": "x"}, 400, "'inputs'"),
    ("v2 tensor lacks fields", V2, {"inputs": [{"name": "inputs"}]}, 400, "shape, datatype, data"),
    ("v2 wrong datatype", V2, _v2(datatype="INT64"), 422, "'INT64'"),
    ("v2 wrong shape", V2, _v2(shape=[1, 32], data=[0.0] * 32), 422, "expects [-1, 64]"),
    ("v2 data/shape disagree", V2, _v2(shape=[2, 64]), 422, "64 values; shape [2, 64] needs 128"),
    ("v2 negative shape", V2, _v2(shape=[-1, 64]), 400, "'shape'"),
    ("v2 unknown input", V2, _v2(name="pixels"), 422, "'pixels'"),
    ("v2 unknown output", V2, {**_v2(), "outputs": [{"name": "logits"}]}, 422, "logits"),
    ("v2 strings", V2, _v2(data=["x"] * 64), 422, "strings"),
    ("v2 data is an object", V2, _v2(data={"a": 1}), 422, "must hold numbers"),
    ("v2 datatype not a string", V2, _v2(datatype=5), 422, "datatype 5"),
    ("v2 fractional shape", V2, _v2(shape=[1.5, 64]), 400, "'shape'"),
    ("v2 inputs not objects", V2, {"inputs": [1]}, 400, "inputs[0] must be an object"),
    ("v2 input twice", V2, {"inputs": _v2()["inputs"] * 2}, 422, "given twice"),
    ("v2 unknown model", "/v2/models/nope/infer", _v2(), 404, "'nope'"),
    ("v2 unknown version", f"/v2/models/{MODEL_NAME}/versions/9/infer", _v2(), 404, "version 9"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
async def test_bad_input_is_a_client_error(
    client: httpx.AsyncClient, path: str, body: Any, status: int, fragment: str
) -> None:
    if isinstance(body, bytes):
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


async def test_unknown_model_metadata_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/v1/models/nope", "/v2/models/nope", "/v2/models/nope/ready"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "'nope'" in response.json()["error"]


async def test_body_over_the_limit_is_413(server_factory: Any) -> None:
    with server_factory(max_body_bytes=2048) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            big = {"instances": [ROW] * 40}
            response = await http.post(V1, json=big)
            assert response.status_code == 413
            assert "2048" in response.json()["error"]

            async def chunks() -> Any:  # no Content-Length: the limit applies while reading
                for _ in range(10):
                    yield b" " * 1024

            streamed = await http.post(V1, content=chunks())
            assert streamed.status_code == 413


async def test_metrics_and_docs(client: httpx.AsyncClient, default_server: RunningServer) -> None:
    await client.post(V1, json={"instances": [ROW]})
    await client.post(V1, content=b"{")
    text = (await client.get("/metrics")).text
    assert (
        'modelservice_requests_total{endpoint="/v1/models/{name}:predict",method="POST",status="200"}'
        in text
    )
    assert 'status="400"' in text
    assert "modelservice_request_duration_seconds_bucket" in text
    assert "modelservice_batch_size_bucket" in text
    assert "modelservice_queue_depth" in text
    assert "modelservice_model_load_seconds" in text
    # The API's description is off unless asked (tests/unit/serving/test_access.py).
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 404
