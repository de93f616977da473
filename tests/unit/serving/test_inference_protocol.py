"""The inference routes answered inside the HTTP protocol (``inference_protocol.py``).

Raw sockets against an in-process server with the real protocol: the route is answered
without the ASGI app, HTTP/1.1 semantics hold (pipelining in order, HTTP/1.0 closes,
``Expect: 100-continue``), and a client that goes away is counted as 499 with nothing
left in flight.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest

from modelservice_serving.fastpath import InferenceFastPath

from .conftest import MODEL_NAME, RunningServer, ServerFactory

pytestmark = pytest.mark.unit

V1 = f"/v1/models/{MODEL_NAME}:predict"
V2 = f"/v2/models/{MODEL_NAME}/infer"
V1_BODY = orjson.dumps({"instances": [[0.5] * 64]})
V2_BODY = orjson.dumps(
    {"id": "r1", "inputs": [{"name": "inputs", "shape": [1, 64], "datatype": "FP32",
                             "data": [0.5] * 64}]}
)  # fmt: skip


def _post(path: str, body: bytes, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _connect(server: RunningServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_responses(
    sock: socket.socket, count: int
) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """``count`` responses (status line, headers, body), read by their content-length."""
    buffer = b""
    responses = []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(responses)} responses"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        pairs = (line.split(b": ", 1) for line in lines)
        headers = {name.lower(): value for name, value in pairs}
        if status.startswith(b"HTTP/1.1 100"):
            responses.append((status, headers, b""))
            continue
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            buffer += sock.recv(65536)
        responses.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return responses


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        return sock.recv(1) == b""
    return True


def test_inference_is_answered_without_the_asgi_app(
    default_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*args: object) -> None:
        raise AssertionError("the ASGI fast path was called")

    monkeypatch.setattr(InferenceFastPath, "__call__", refuse)
    with _connect(default_server) as sock:
        sock.sendall(_post(V1, V1_BODY))
        [(status, headers, body)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert len(orjson.loads(body)["predictions"][0]) == 10
        assert headers[b"content-type"] == b"application/json"
        assert b"date" in headers  # uvicorn's default headers, as its cycle sends them
        sock.sendall(_post(V2, V2_BODY))  # keep-alive: the same connection again
        [(status, _, body)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 200 OK"
        answer = orjson.loads(body)
        assert answer["id"] == "r1"
        assert answer["outputs"][0]["shape"] == [1, 10]


def test_pipelined_requests_are_answered_in_order(default_server: RunningServer) -> None:
    health = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"
    wrong = _post(V2, b'{"inputs": []}')
    with _connect(default_server) as sock:
        sock.sendall(_post(V1, V1_BODY) + health + _post(V2, V2_BODY) + wrong + _post(V1, V1_BODY))
        responses = _read_responses(sock, 5)
    statuses = [status.split(b" ")[1] for status, _, _ in responses]
    assert statuses == [b"200", b"200", b"200", b"400", b"200"]
    assert b"predictions" in responses[0][2]
    assert orjson.loads(responses[2][2])["id"] == "r1"
    assert b"non-empty array" in responses[3][2]
    assert b"predictions" in responses[4][2]


def test_http_1_0_is_answered_then_closed(default_server: RunningServer) -> None:
    with _connect(default_server) as sock:
        sock.sendall(_post(V1, V1_BODY, version="1.0"))
        [(status, headers, _)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"connection"] == b"close"
        assert _closed(sock)


def test_expect_100_continue_gets_its_interim_answer(default_server: RunningServer) -> None:
    head, body = _post(V1, V1_BODY, extra="expect: 100-continue\r\n").split(b"\r\n\r\n", 1)
    with _connect(default_server) as sock:
        sock.sendall(head + b"\r\n\r\n")
        [(status, _, _)] = _read_responses(sock, 1)
        assert status.startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        [(status, _, _)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 200 OK"


def test_a_client_gone_mid_body_is_a_499_and_leaves_nothing_in_flight(
    server_factory: ServerFactory,
) -> None:
    with server_factory() as server:
        with _connect(server) as sock:
            sock.sendall(_post(V1, V1_BODY)[:-10])  # the head and most of the body
            time.sleep(0.2)
        route = f'endpoint="{"/v1/models/{name}:predict"}",method="POST",status="499"'
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(server.url + "/metrics").text
            if f"modelservice_requests_total{{{route}}} 1.0" in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert "modelservice_inflight_requests 0.0" in text
        assert server.state.batcher is not None
        assert server.state.batcher.queued_rows == 0
        assert server.counter.batches == []  # the model never ran for it
        # The server still answers on a new connection.
        with _connect(server) as sock:
            sock.sendall(_post(V1, V1_BODY))
            [(status, _, _)] = _read_responses(sock, 1)
            assert status == b"HTTP/1.1 200 OK"


def test_a_refused_token_is_401_before_the_body_and_the_connection_lives_on(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with server_factory(auth_token_file=token) as server, _connect(server) as sock:
        sock.sendall(
            _post(V1, V1_BODY) + _post(V1, V1_BODY, extra="authorization: Bearer s3cret\r\n")
        )
        (refused, headers, body), (allowed, _, _) = _read_responses(sock, 2)
        assert refused.startswith(b"HTTP/1.1 401")
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        assert b"bearer token is required" in body
        assert allowed == b"HTTP/1.1 200 OK"
