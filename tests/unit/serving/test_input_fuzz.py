"""No input is a server error: a table of hostile requests, then a property-based fuzz.

Each case is what an attacker (or a buggy client) sends; each must get the 4xx it names and
a reason, and the server must log no traceback. The fuzz (hypothesis) builds requests near
the protocols' shapes (huge, negative and deep shapes, every datatype, booleans, nulls,
nested and wrongly typed fields) and raw byte mutations of valid bodies, and asserts only
that nothing is a 5xx.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODEL_NAME, RunningServer, ServerFactory

pytestmark = pytest.mark.unit

ROW = [0.5] * 64
V1 = f"/v1/models/{MODEL_NAME}:predict"
V2 = f"/v2/models/{MODEL_NAME}/infer"


def _v2(**tensor: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32", "data": ROW, **tensor}]
    }


def _nested(depth: int) -> Any:
    value: Any = 0.0
    for _ in range(depth):
        value = [value]
    return value


_OUTPUT_PARAMETERS = {**_v2(), "outputs": [{"name": "output_0", "parameters": 1}]}

HOSTILE = [
    # shapes: overflow, rank, negative, absurd sizes; all refused before any allocation
    ("overflowing product", V2, _v2(shape=[0, 9223372036854775808], data=[]), 422, "shape"),
    ("overflow, no zero", V2, _v2(shape=[2**63, 2**63], data=[]), 422, "shape"),
    ("huge rows", V2, _v2(shape=[2**62, 64], data=[]), 422, "elements"),
    ("rank 65", V2, _v2(shape=[1] * 65, data=[0.0]), 422, "rank 65"),
    ("rank 10000", V2, _v2(shape=[1] * 10_000, data=[0.0]), 422, "rank 10000"),
    ("negative dim", V2, _v2(shape=[1, -64]), 400, "integers >= 0"),
    ("zero rows", V2, _v2(shape=[0, 64], data=[]), 422, "no rows"),
    ("bool dim", V2, _v2(shape=[True, 64]), 400, "'shape'"),
    ("whole float dims are sizes", V2, _v2(shape=[2.0, 64.0]), 422, "64 values; shape [2, 64]"),
    ("huge float dim", V2, _v2(shape=[9.6e24, 64.0]), 422, "elements"),
    ("shape not a list", V2, _v2(shape="1,64"), 400, "'shape'"),
    ("v1 nested 70 deep", V1, {"instances": _nested(70)}, 422, "rectangular"),
    ("v2 nested 70 deep", V2, _v2(data=_nested(70)), 422, "rectangular"),
    ("v1 rank 3 rows", V1, {"instances": [[[0.0] * 64]]}, 422, "expects [-1, 64]"),
    # values
    ("bool row v1", V1, {"instances": [[True] * 64]}, 422, "not booleans"),
    ("one bool among numbers v1", V1, {"instances": [[*ROW[:63], False]]}, 422, "not booleans"),
    ("one bool among numbers v2", V2, _v2(data=[True, *ROW[1:]]), 422, "not booleans"),
    ("bool in columnar v1", V1, {"inputs": {"inputs": [[*ROW[:63], True]]}}, 422, "booleans"),
    ("nulls v2", V2, _v2(data=[None] * 64), 422, "null"),
    ("mixed string v2", V2, _v2(data=[*ROW[:63], "1"]), 422, "strings"),
    ("objects in data", V2, _v2(data=[{"a": 1}] * 64), 422, "must hold numbers"),
    ("float32 overflow", V2, _v2(data=[*ROW[:63], 1e300]), 422, "non-finite"),
    ("NaN literal", V1, b'{"instances": [[NaN]]}', 400, "not valid JSON"),
    ("Infinity literal", V2, b'{"inputs": [{"data": [Infinity]}]}', 400, "not valid JSON"),
    ("huge integer", V1, b'{"instances": [[' + b"9" * 400 + b"]]}", 400, "infinity"),
    # fields typed as the protocol says
    ("parameters a string", V2, {**_v2(), "parameters": "x"}, 400, "'parameters'"),
    ("parameters a list", V2, {**_v2(), "parameters": [1]}, 400, "'parameters'"),
    ("tensor parameters", V2, _v2(parameters=3), 400, "inputs[0].parameters"),
    ("id a number", V2, {**_v2(), "id": 7}, 400, "'id'"),
    ("name a number", V2, _v2(name=7), 400, "name must be a string"),
    ("outputs empty", V2, {**_v2(), "outputs": []}, 400, "non-empty"),
    ("outputs null", V2, {**_v2(), "outputs": None}, 400, "'outputs'"),
    ("outputs not objects", V2, {**_v2(), "outputs": ["output_0"]}, 400, "'outputs'"),
    ("output twice", V2, {**_v2(), "outputs": [{"name": "output_0"}] * 2}, 422, "twice"),
    ("output parameters", V2, _OUTPUT_PARAMETERS, 400, "'outputs'"),
    ("signature_name number", V1, {"instances": [ROW], "signature_name": 1}, 400, "signature"),
    ("inputs empty", V2, {"inputs": []}, 400, "non-empty"),
    ("inputs an object", V2, {"inputs": {"inputs": ROW}}, 400, "non-empty array"),
    ("datatype a list", V2, _v2(datatype=["FP32"]), 422, "datatype"),
    # encodings
    ("bad utf-8", V2, b'{"id": "\xc3\x28", "inputs": []}', 400, "UTF-8"),
    ("lone surrogate", V1, b'{"instances": "\xed\xa0\x80"}', 400, "not valid JSON"),
    ("truncated", V2, orjson.dumps(_v2())[:-7], 400, "not valid JSON"),
    ("trailing garbage", V1, orjson.dumps({"instances": [ROW]}) + b"}", 400, "not valid JSON"),
    ("only whitespace", V1, b"   ", 400, "not valid JSON"),
    ("a JSON string", V2, b'"inputs"', 400, "JSON object"),
    ("a JSON null", V1, b"null", 400, "JSON object"),
    ("utf-16 body", V1, '{"instances": [[1]]}'.encode("utf-16"), 400, "not valid JSON"),
    ("json nested 2000 deep", V1, b"[" * 2000 + b"]" * 2000, 400, "not valid JSON"),
]


@pytest.fixture(scope="module")
def fuzz_server(served_model: Any, trained_model: Any) -> Iterator[RunningServer]:
    from .conftest import running_server

    with running_server(served_model, trained_model.model_dir) as server:
        yield server


def _post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_input_is_a_4xx_with_a_reason(
    fuzz_server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: Any,
    status: int,
    fragment: str,
) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        response = _post(http, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error, error
    assert len(error) < 1000  # a reason, not an echo of the hostile input
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_rejected_before_the_model_runs(fuzz_server: RunningServer) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        _post(http, V2, {**_v2(), "outputs": []})
        _post(http, V2, _v2(shape=[0, 9223372036854775808], data=[]))
    assert fuzz_server.counter.batches == []


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what JSON encoders write
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=40,
)
_DIMS = st.lists(
    st.one_of(
        st.integers(min_value=-3, max_value=130),
        st.sampled_from([2**31, 2**63, 2**64 - 1, -(2**63)]),
        st.booleans(),
        st.floats(allow_nan=False),
    ),
    max_size=70,
)
_DATATYPES = st.sampled_from(
    ["FP32", "FP16", "FP64", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "fp32", ""]
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["inputs", "pixels", ""]) | _SCALARS,
        "shape": _DIMS | _JSON,
        "datatype": _DATATYPES | _SCALARS,
        "data": st.lists(st.floats(allow_nan=False, width=32), max_size=130) | _JSON,
    },
    optional={"parameters": _JSON},
)
_V2_BODY = st.fixed_dictionaries(
    {"inputs": st.lists(_TENSOR, max_size=3) | _JSON},
    optional={
        "id": _SCALARS,
        "parameters": _JSON,
        "outputs": st.lists(st.fixed_dictionaries({"name": _SCALARS}), max_size=3) | _JSON,
    },
)
_V1_BODY = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(st.lists(_SCALARS, min_size=60, max_size=66), max_size=3) | _JSON,
        "inputs": _JSON,
        "signature_name": _SCALARS,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=_V2_BODY.map(lambda body: (V2, body)) | _V1_BODY.map(lambda body: (V1, body)),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.integers(min_value=0, max_value=255),
)
def test_fuzzed_requests_are_never_a_5xx(
    fuzz_server: RunningServer, body: tuple[str, Any], cut: int, flip: int
) -> None:
    path, payload = body
    raw = orjson.dumps(payload)
    mutated = bytearray(raw)
    if mutated:  # one byte changed: the structure or the encoding breaks somewhere
        mutated[cut % len(mutated)] = flip
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        for content in (raw, bytes(mutated), raw[: cut % (len(raw) + 1)]):
            response = _post(http, path, content)
            assert response.status_code < 500, (content[:300], response.text)
            if response.status_code >= 400:
                assert response.json()["error"]


def _metric_lines(server: RunningServer) -> list[str]:
    text = httpx.get(server.url + "/metrics").text
    return [line for line in text.splitlines() if line.startswith("modelservice_requests_total")]


def test_an_aborted_upload_is_499_at_debug_not_a_server_error(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelservice_serving")
    with server_factory() as server:
        host, port = server.url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    "content-length: 100000\r\n\r\n".encode()
                    + b'{"instances": [[0.0, 0.0'
                )
                time.sleep(0.05)  # the handler is now waiting for the rest of the body
        deadline = time.monotonic() + 10
        while not any('status="499"' in line for line in _metric_lines(server)):
            assert time.monotonic() < deadline, _metric_lines(server)
            time.sleep(0.05)
        lines = _metric_lines(server)
    assert any('status="499"} 3.0' in line for line in lines), lines
    assert not any('status="5' in line for line in lines), lines
    closed = [record for record in caplog.records if "499 client closed request" in record.message]
    assert len(closed) == 3
    assert all(record.levelno == logging.DEBUG for record in closed)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
