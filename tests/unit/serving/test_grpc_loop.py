"""The event loop's gRPC server (``grpc_loop.py``) sent what grpcio clients never send.

A plain HTTP/2 client (``h2``) on a raw socket: a wrong content type, an unknown method, a
call cancelled before its request ended, a PING, a request split over many frames, and a
connection that is not HTTP/2 at all. After each the server still answers.
"""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest

from modelservice_serving.grpc_loop import timeout_seconds
from modelservice_serving.oip import grpc_predict_v2_pb2 as pb

from .conftest import MODEL_NAME, RunningServer, ServerFactory

pytestmark = pytest.mark.unit

INFER = "/inference.GRPCInferenceService/ModelInfer"


def _message(rows: int = 1) -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL_NAME, id="q")
    request.inputs.add(name="inputs", datatype="FP32", shape=[rows, 64])
    request.raw_input_contents.append(np.full((rows, 64), 0.5, "<f4").tobytes())
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


class Client:
    """One HTTP/2 connection to the gRPC port, driven by hand."""

    def __init__(self, server: RunningServer, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.state.grpc_port), timeout=10)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        if window is not None:  # each stream's window for the server's DATA
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self._send()
        self.events: list[Any] = []

    def _send(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def start(
        self,
        path: str = INFER,
        content_type: str = "application/grpc",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> int:
        stream: int = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "test"),
            ("content-type", content_type),
            ("te", "trailers"),
            *extra,
        ]
        self.h2.send_headers(stream, headers)
        self._send()
        return stream

    def send(self, stream: int, data: bytes, end: bool = True) -> None:
        while data:  # within the peer's window and frame size, as h2 requires
            size = min(len(data), self.h2.local_flow_control_window(stream), 16_384)
            if size == 0:
                self.read_until(lambda: self.h2.local_flow_control_window(stream) > 0)
                continue
            self.h2.send_data(stream, data[:size], end_stream=end and size == len(data))
            data = data[size:]
            self._send()

    def read_until(self, done: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, self.events
            chunk = self.sock.recv(65536)
            if not chunk:
                self.events.append("closed")
                return
            for event in self.h2.receive_data(chunk):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._send()

    def ended(self, stream: int) -> dict[bytes, bytes]:
        """The stream's response headers and trailers, once it has ended."""

        def finished() -> bool:
            return any(
                isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
                and event.stream_id == stream
                for event in self.events
            )

        self.read_until(finished)
        fields: dict[bytes, bytes] = {}
        for event in self.events:
            answer = h2.events.ResponseReceived | h2.events.TrailersReceived
            if isinstance(event, answer) and event.stream_id == stream:
                fields.update(dict(event.headers))
        return fields

    def data(self, stream: int) -> bytes:
        return b"".join(
            event.data
            for event in self.events
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream
        )


@pytest.fixture
def client(default_server: RunningServer) -> Iterator[Client]:
    connection = Client(default_server)
    yield connection
    connection.sock.close()


def test_a_call_split_over_many_frames_is_answered(client: Client) -> None:
    message = _message(rows=300)  # 77 KB: five DATA frames and more than the first window
    stream = client.start()
    client.send(stream, message[:3], end=False)  # even the 5-byte prefix comes in pieces
    client.send(stream, message[3:])
    fields = client.ended(stream)
    assert fields[b":status"] == b"200"
    assert fields[b"grpc-status"] == b"0"
    body = client.data(stream)
    response = pb.ModelInferResponse.FromString(body[5:])
    assert list(response.outputs[0].shape) == [300, 10]
    assert response.id == "q"


def test_wrong_content_type_unknown_method_and_bad_messages(client: Client) -> None:
    plain = client.start(content_type="text/plain")
    client.send(plain, b"hello")
    assert client.ended(plain)[b":status"] == b"415"
    unknown = client.start(path="/inference.GRPCInferenceService/Nothing")
    client.send(unknown, _message())
    fields = client.ended(unknown)
    assert fields[b"grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0]).encode()
    garbage = client.start()
    client.send(garbage, b"\x00\x00\x00\x00\x03\xff\xff\xff")  # not a ModelInferRequest
    fields = client.ended(garbage)
    assert fields[b"grpc-status"] == b"3"  # INVALID_ARGUMENT: the client's mistake
    assert b"not a valid protobuf" in fields[b"grpc-message"]
    compressed = client.start()  # the compressed flag, but no grpc-encoding header
    client.send(compressed, b"\x01" + _message()[1:])
    assert client.ended(compressed)[b"grpc-status"] == b"3"
    wrong_shape = client.start()
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="inputs", datatype="FP32", shape=[1, 63])
    request.raw_input_contents.append(b"\x00" * 252)
    body = request.SerializeToString()
    client.send(wrong_shape, b"\x00" + len(body).to_bytes(4, "big") + body)
    fields = client.ended(wrong_shape)
    assert fields[b"grpc-status"] == b"3"  # INVALID_ARGUMENT
    assert b"expects" in fields[b"grpc-message"]
    # And the connection still serves.
    good = client.start()
    client.send(good, _message())
    assert client.ended(good)[b"grpc-status"] == b"0"


def test_a_cancelled_call_and_a_ping_leave_the_connection_serving(
    server_factory: ServerFactory,
) -> None:
    # A long batching window: the first call is queued when its client cancels it.
    with server_factory(max_batch_size=64, max_latency_ms=500) as server:
        client = Client(server)
        try:
            cancelled = client.start()
            client.send(cancelled, _message())
            client.h2.reset_stream(cancelled)
            client.h2.ping(b"12345678")
            client._send()
            client.read_until(
                lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events)
            )
            time.sleep(0.7)  # its batch ran (or not) while the call was gone
            good = client.start()
            client.send(good, _message())
            assert client.ended(good)[b"grpc-status"] == b"0"
            assert server.state.batcher is not None
            assert server.state.batcher.queued_rows == 0
            assert sum(server.counter.batches) == 1  # the cancelled call's row never ran
        finally:
            client.sock.close()


@pytest.mark.parametrize("window", [1000, 1 << 20], ids=["stream-bound", "connection-bound"])
def test_answers_wait_for_the_clients_windows(server_factory: ServerFactory, window: int) -> None:
    # The connection's window is HTTP/2's 65,535 bytes: eight 12 KB answers do not fit it.
    # With 1,000-byte stream windows each answer waits for its own stream's WINDOW_UPDATEs;
    # with 1 MB ones the last answers wait for the connection's alone.
    with server_factory(max_queue=4096) as server:
        client = Client(server, window=window)
        try:
            calls = [client.start() for _ in range(8)]
            for call in calls:
                client.send(call, _message(rows=300))
            for call in calls:
                assert client.ended(call)[b"grpc-status"] == b"0"
                data = client.data(call)
                length = int.from_bytes(data[1:5], "big")
                assert len(data) == 5 + length  # one whole message, nothing lost or repeated
                response = pb.ModelInferResponse.FromString(data[5:])
                assert list(response.outputs[0].shape) == [300, 10]
                assert len(response.raw_output_contents[0]) == 300 * 10 * 4
        finally:
            client.sock.close()


def _framed(payload: bytes, compressed: bool = True) -> bytes:
    return bytes((int(compressed),)) + len(payload).to_bytes(4, "big") + payload


def test_compressed_requests_are_inflated_within_the_message_limit(
    server_factory: ServerFactory,
) -> None:
    with server_factory(max_body_bytes=100_000) as server:
        client = Client(server)
        plain = _message(rows=2)[5:]
        try:
            for encoding, deflate in (("gzip", gzip.compress), ("deflate", zlib.compress)):
                call = client.start(extra=(("grpc-encoding", encoding),))
                client.send(call, _framed(deflate(plain)))
                assert client.ended(call)[b"grpc-status"] == b"0", encoding
                answer = pb.ModelInferResponse.FromString(client.data(call)[5:])
                assert list(answer.outputs[0].shape) == [2, 10]
            # An uncompressed message on a call that declares an encoding is still read.
            call = client.start(extra=(("grpc-encoding", "gzip"),))
            client.send(call, _framed(plain, compressed=False))
            assert client.ended(call)[b"grpc-status"] == b"0"
            # 10 MB of zeros in 10 KB: refused at the limit, never inflated whole.
            bomb = client.start(extra=(("grpc-encoding", "gzip"),))
            client.send(bomb, _framed(gzip.compress(b"\x00" * 10_000_000)))
            fields = client.ended(bomb)
            assert fields[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED
            assert b"100000" in fields[b"grpc-message"]
            for name, body in (
                ("corrupt", b"not gzip at all"),
                ("cut", gzip.compress(plain)[:-12]),
                ("trailing", gzip.compress(plain) + b"junk"),
            ):
                call = client.start(extra=(("grpc-encoding", "gzip"),))
                client.send(call, _framed(body))
                assert client.ended(call)[b"grpc-status"] == b"3", name  # INVALID_ARGUMENT
            unknown = client.start(extra=(("grpc-encoding", "br"),))
            client.send(unknown, _framed(b"x"))
            fields = client.ended(unknown)
            assert fields[b"grpc-status"] == b"12"  # UNIMPLEMENTED, saying what is accepted
            assert b"gzip" in fields[b"grpc-accept-encoding"]
            good = client.start()
            client.send(good, _message())
            assert client.ended(good)[b"grpc-status"] == b"0"
        finally:
            client.sock.close()


def test_the_clients_deadline_is_kept_by_the_server(server_factory: ServerFactory) -> None:
    # Batches wait 1.5 s to fill: a call with a 200 ms deadline is still queued when it
    # passes, and its client never resets the stream (as a client that has hung would not).
    with server_factory(max_batch_size=64, max_latency_ms=1500) as server:
        client = Client(server)
        try:
            late = client.start(extra=(("grpc-timeout", "200m"),))
            client.send(late, _message())
            started = time.monotonic()
            fields = client.ended(late)
            assert fields[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED, from the server
            assert 0.15 < time.monotonic() - started < 1.2  # before the batch would run
            assert server.state.metrics.requests.in_flight == 0
            time.sleep(1.6)  # the batching window passes: its row is dropped, never run
            assert server.counter.batches == []
            # A malformed timeout is the client's mistake; a generous one is served.
            bad = client.start(extra=(("grpc-timeout", "soon"),))
            client.send(bad, _message())
            assert client.ended(bad)[b"grpc-status"] == b"3"  # INVALID_ARGUMENT
            good = client.start(extra=(("grpc-timeout", "30S"),))
            client.send(good, _message())
            assert client.ended(good)[b"grpc-status"] == b"0"
            assert server.counter.batches == [1]
            # The largest timeout the header can say (11,400 years) is kept, not overflowed.
            forever = client.start(extra=(("grpc-timeout", "99999999H"),))
            client.send(forever, _message())
            assert client.ended(forever)[b"grpc-status"] == b"0"
        finally:
            client.sock.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"7u", 7e-6),
     (b"99999999n", 0.099999999), (b"", None), (b"S", None), (b"5", None), (b"5s", None),
     (b"123456789S", None), (b"-1S", None), (b"1.5S", None)],
)  # fmt: skip
def test_grpc_timeout_values(header: bytes, seconds: float | None) -> None:
    parsed = timeout_seconds(header)
    assert parsed == (None if seconds is None else pytest.approx(seconds))


def test_a_connection_that_is_not_http2_is_closed(default_server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", default_server.state.grpc_port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert b"HTTP/1.1" not in received  # only our SETTINGS, then the close
    client = Client(default_server)
    try:
        good = client.start()
        client.send(good, _message())
        assert client.ended(good)[b"grpc-status"] == b"0"
    finally:
        client.sock.close()


def test_a_silent_connection_is_closed_and_connections_are_capped(
    server_factory: ServerFactory,
) -> None:
    with server_factory(header_timeout_s=0.5, max_connections=2) as server:
        address = ("127.0.0.1", server.state.grpc_port)
        with socket.create_connection(address) as silent:
            silent.settimeout(5)
            started = time.monotonic()
            received = b""
            while chunk := silent.recv(65536):  # our SETTINGS, then the close
                received += chunk
            assert 0.4 < time.monotonic() - started < 3
        first, second = Client(server), Client(server)
        try:
            with socket.create_connection(address) as third:  # past the cap: closed at once
                third.settimeout(5)
                assert third.recv(65536) == b""
            call = second.start()
            second.send(call, _message())
            assert second.ended(call)[b"grpc-status"] == b"0"
        finally:
            first.sock.close()
            second.sock.close()
