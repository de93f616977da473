"""The HTTP binary tensor data extension: tritonclient.http with binary data, and bad bodies."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http
from sklearn.datasets import load_digits

from .conftest import MODEL_NAME, RunningServer

pytestmark = pytest.mark.unit

ROWS = load_digits().data[:6].astype(np.float32)
V2 = f"/v2/models/{MODEL_NAME}/infer"


def _json_outputs(server: RunningServer) -> np.ndarray[Any, Any]:
    body = {"inputs": [{"name": "inputs", "shape": [6, 64], "datatype": "FP32", "data": ROWS}]}
    response = httpx.post(
        server.url + V2, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0]["data"]).reshape(6, 10)


def _triton_infer(
    server: RunningServer, binary_in: bool, outputs: list[Any] | None
) -> triton_http.InferResult:
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput("inputs", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS, binary_data=binary_in)
        return client.infer(MODEL_NAME, [tensor], request_id="b-1", outputs=outputs)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(True, True), (True, False), (False, True), (True, None)],
    ids=["binary in and out", "binary in, json out", "json in, binary out", "client default"],
)
def test_tritonclient_http_binary_data(
    default_server: RunningServer, binary_in: bool, binary_out: bool | None
) -> None:
    # None: no outputs named; the client then asks for every output as binary.
    outputs = (
        None
        if binary_out is None
        else [triton_http.InferRequestedOutput("output_0", binary_data=binary_out)]
    )
    result = _triton_infer(default_server, binary_in, outputs)
    response = result.get_response()
    assert response["id"] == "b-1"
    (output,) = response["outputs"]
    assert ("binary_data_size" in output.get("parameters", {})) == (binary_out is not False)
    np.testing.assert_allclose(
        result.as_numpy("output_0"), _json_outputs(default_server), rtol=1e-5
    )


def test_server_metadata_names_the_extension(default_server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(default_server.url.removeprefix("http://"))
    try:
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    finally:
        client.close()


def test_binary_response_layout(default_server: RunningServer) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "inputs",
                    "shape": [6, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": ROWS.nbytes},
                }
            ],
            "outputs": [{"name": "output_0", "parameters": {"binary_data": True}}],
        }
    )
    response = httpx.post(
        default_server.url + V2,
        content=header + ROWS.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    (output,) = meta["outputs"]
    assert "data" not in output
    assert output["parameters"] == {"binary_data_size": 6 * 10 * 4}
    assert len(response.content) == length + 240
    values = np.frombuffer(response.content[length:], "<f4").reshape(6, 10)
    np.testing.assert_allclose(values, _json_outputs(default_server), rtol=1e-5)


def _binary_body(
    size: Any = 256, payload: bytes = b"\0" * 256, datatype: str = "FP32", **extra: Any
) -> tuple[bytes, int]:
    tensor: dict[str, Any] = {
        "name": "inputs",
        "shape": [1, 64],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
        **extra,
    }
    header = orjson.dumps({"inputs": [tensor]})
    return header + payload, len(header)


BAD_BODIES = [
    ("header longer than body", *_binary_body(), "99999", 400, "body has only"),
    ("header length not a number", *_binary_body(), "-1", 400, "byte count"),
    ("header not json", b"{nope" + b"\0" * 256, 5, None, 400, "not valid JSON"),
    ("trailing bytes", *_binary_body(payload=b"\0" * 260), None, 400, "4 bytes after"),
    ("size beyond body", *_binary_body(size=512), None, 400, "only 256 remain"),
    ("size a boolean", *_binary_body(size=True, payload=b"\0"), None, 400, "byte count"),
    ("size negative", *_binary_body(size=-4, payload=b""), None, 400, "byte count"),
    ("data and binary", *_binary_body(data=[0.0] * 64), None, 400, "both"),
    ("part of an element", *_binary_body(size=255, payload=b"\0" * 255), None, 422, "whole"),
    ("no binary form", *_binary_body(datatype="BYTES"), None, 422, "'BYTES'"),
    ("too few bytes for shape", *_binary_body(size=128, payload=b"\0" * 128), None, 422, "needs"),
    ("not finite", *_binary_body(payload=np.full(64, np.inf, "<f4").tobytes()), None, 422, "non-"),
]


@pytest.mark.parametrize(
    ("body", "header_length", "declared", "status", "fragment"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_binary_bodies_are_client_errors(
    client: httpx.AsyncClient,
    body: bytes,
    header_length: int,
    declared: str | None,
    status: int,
    fragment: str,
) -> None:
    response = await client.post(
        V2,
        content=body,
        headers={"Inference-Header-Content-Length": declared or str(header_length)},
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


async def test_bad_binary_output_flags(client: httpx.AsyncClient) -> None:
    tensor = {"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
    for body, fragment in [
        ({"inputs": [tensor], "parameters": {"binary_data_output": 1}}, "binary_data_output"),
        (
            {
                "inputs": [tensor],
                "outputs": [{"name": "output_0", "parameters": {"binary_data": "y"}}],
            },
            "outputs[0].parameters.binary_data",
        ),
        ({"inputs": [tensor], "parameters": []}, "request.parameters must be an object"),
    ]:
        response = await client.post(V2, json=body)
        assert response.status_code == 400, response.text
        assert fragment in response.json()["error"]
