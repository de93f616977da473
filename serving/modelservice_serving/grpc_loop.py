"""gRPC served in the event loop: HTTP/2 and gRPC's framing in an asyncio protocol.

grpcio's ``grpc.aio`` server runs HTTP/2 in its C core on threads of its own and hands
each call to the event loop through a poller thread: several thread hops and GIL hand-overs
per call, about 430 µs of CPU for a call that does nothing (docs/serving-performance.md),
more than an HTTP inference request here costs in all. This server does HTTP/2 (h2c, prior
knowledge, as every gRPC client speaks it without TLS) in the same loop as the HTTP server:
frames and HPACK (:mod:`.http2`), gRPC's length-prefixed messages, heads and trailers.

It serves the same handlers as the grpcio server (``protocol_grpc.method_handlers``,
``health_grpc.method_handlers``: grpcio's method handler records, called with a small
context that has ``abort`` and ``write``), with the same rules: the bearer token but on
health checks, RESOURCE_EXHAUSTED past ``--grpc-max-in-flight`` calls and for a message
past ``--max-body-bytes``, UNIMPLEMENTED for an unknown method. ``ModelInfer`` skips the
task a handler runs in: its request is decoded where its last frame is read, queued with
the batcher with the call itself as the waiter, and answered (head, message and trailers
in one write) from the batcher's callback, as the HTTP inference path is
(:mod:`.inference_protocol`).

A client's deadline (``grpc-timeout``) is kept by the server too: when it passes, the call
ends with DEADLINE_EXCEEDED and its queued rows are dropped before the model runs, whether
or not the client's RST_STREAM arrives. Every call with a known method is counted in
:class:`.metrics.GrpcStats`, and ModelInfer calls in the in-flight gauge that autoscaling
reads, as HTTP inference requests are.

Compressed requests (``grpc-encoding: gzip`` or ``deflate``, as grpcio's and grpc-go's
clients send them when asked) are inflated within the message limit: a message that would
inflate past ``--max-body-bytes`` is RESOURCE_EXHAUSTED before it is all inflated. Answers
go uncompressed, as the protocol allows whatever the client accepts.

Not done: server push (gRPC has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from . import health_grpc, http2, protocol_grpc
from .access_grpc import EXEMPT_METHODS
from .errors import ServingError
from .metrics import GrpcStats
from .model import Tensors
from .oip import grpc_predict_v2_pb2 as pb
from .state import ServingState

log = logging.getLogger(__name__)

MODEL_INFER = f"/{protocol_grpc.SERVICE}/ModelInfer".encode()
# What we offer the peer: a large window per stream and for the connection, so requests up
# to the body limit need no WINDOW_UPDATE round trip.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 30
# grpc-encoding -> zlib's wbits for it (gRPC's "deflate" is the zlib format, RFC 1950).
_ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_ACCEPT_ENCODING = b",".join((b"identity", *_ENCODINGS))
_HEAD = (
    http2.STATUS_200
    + http2.GRPC_CONTENT_TYPE
    + http2.literal(b"grpc-accept-encoding", _ACCEPT_ENCODING)
)
_OK = http2.literal(b"grpc-status", b"0")
_UNPARSEABLE = "the request message is not a valid protobuf message of the method's type"
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
# grpc-timeout's units (gRPC over HTTP/2: "TimeoutValue TimeoutUnit", at most 8 digits).
_TIMEOUT_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def timeout_seconds(value: bytes) -> float | None:
    """The seconds of a ``grpc-timeout`` header, or None when it is malformed."""
    digits, unit = value[:-1], _TIMEOUT_UNITS.get(value[-1]) if value else None
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * unit


class _AbortError(Exception):
    """Raised by :meth:`_Context.abort`: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: Iterable[Any]) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.metadata = tuple(metadata)


class _Call:
    """One HTTP/2 stream carrying one gRPC call; the batcher's waiter for ModelInfer."""

    __slots__ = (
        "answered", "cancelled", "code", "connection", "counted", "data", "deadline",
        "encoding", "ended", "handler", "headers", "headers_sent", "id", "infer", "inference",
        "labels", "message", "path", "pending", "recv_unacked", "requests", "send_window",
        "started", "task", "trailers",
    )  # fmt: skip

    def __init__(self, connection: GrpcConnection, stream: int, path: bytes, headers: Any) -> None:
        self.connection = connection
        self.id = stream
        self.path = path
        self.headers: list[tuple[bytes, bytes]] = headers
        # grpcio's method handler record (typed Any: its stubs want grpcio's own context)
        self.handler: Any = None
        self.infer: protocol_grpc.InferCall | None = None  # ModelInfer, once queued
        self.data = bytearray()
        self.message: bytes | None = None
        self.requests: asyncio.Queue[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self.ended = False  # the client has sent END_STREAM
        self.answered = False  # our END_STREAM is written (or the call is gone)
        self.cancelled = False
        self.counted = False  # in the server's count of calls in flight
        self.inference = False  # in the in-flight gauge (a ModelInfer call)
        self.started = 0.0  # when its method was known (0: not counted in the metrics)
        self.labels: tuple[str, str, str] = ("", "", "")  # its service, method and type
        self.code = _CANCELLED  # its status, once answered
        self.deadline: asyncio.TimerHandle | None = None  # the client's grpc-timeout
        self.encoding: int | None = None  # zlib's wbits for its grpc-encoding, if compressed
        self.headers_sent = False
        self.pending = bytearray()  # DATA payload waiting for flow-control window
        self.trailers: bytes | None = None
        self.send_window = connection.peer_initial_window
        self.recv_unacked = 0

    # -- the batcher's waiter (ModelInfer)
    def done(self) -> bool:
        return self.answered or self.cancelled

    def set_result(self, result: Tensors, /) -> None:
        self.connection.infer_answered(self, result)

    def set_exception(self, exception: BaseException, /) -> None:
        self.connection.call_failed(self, exception)


class _Context:
    """The part of ``grpc.aio.ServicerContext`` the handlers use."""

    def __init__(self, call: _Call) -> None:
        self._call = call

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable[Any] = ()
    ) -> NoReturn:
        raise _AbortError(code, details, trailing_metadata)

    async def write(self, message: Any) -> None:
        call = self._call
        assert call.handler is not None
        if call.cancelled:
            raise asyncio.CancelledError
        call.connection.send_message(call, call.handler.response_serializer(message))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self._call.headers
            if not name.startswith(b":")
        )

    def cancelled(self) -> bool:
        return self._call.cancelled


class GrpcLoopServer:
    """The listening socket, its connections and the limits they share."""

    def __init__(self, state: ServingState, token: bytes | None) -> None:
        settings = state.settings
        self.state = state
        self.expected_token = b"Bearer " + token if token is not None else None
        self.max_in_flight = settings.grpc_max_in_flight
        self.max_message = settings.max_body_bytes
        self.max_header_bytes = settings.max_header_bytes
        self.preface_timeout_s = settings.header_timeout_s
        self.max_connections = settings.max_connections
        self.handlers: dict[bytes, Any] = {}  # grpcio method handler records by path
        self.labels: dict[bytes, tuple[str, str, str]] = {}  # their metric labels
        for service, handlers in (
            (protocol_grpc.SERVICE, protocol_grpc.method_handlers(state)),
            (health_grpc.SERVICE, health_grpc.method_handlers(state)),
        ):
            for method, handler in handlers.items():
                path = f"/{service}/{method}"
                self.handlers[path.encode()] = handler
                self.labels[path.encode()] = GrpcStats.method_labels(
                    path, handler.request_streaming, handler.response_streaming
                )
        self.stats = state.metrics.grpc
        self.requests = state.metrics.requests  # its in-flight count is the autoscaling signal
        self.active = 0  # calls in flight on all connections
        self.idle = asyncio.Event()  # set when the last call in flight ends
        self.connections: set[GrpcConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GrpcConnection(self), host, port, reuse_address=True
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self, grace_s: float) -> None:
        """Refuses new calls (GOAWAY), lets running ones finish for up to ``grace_s``."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self.active:
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), max(0.0, deadline - loop.time()))
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
        self._server = None


class GrpcConnection(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, gRPC calls out."""

    def __init__(self, server: GrpcLoopServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # made by the loop's server
        self._buffer = bytearray()
        self._preface = True
        self._decoder = http2.HpackDecoder(max_list_size=server.max_header_bytes)
        self._calls: dict[int, _Call] = {}
        self._blocked: dict[int, _Call] = {}  # calls with DATA waiting for window
        self._out: list[bytes] = []  # written at the end of the loop iteration (_send_out)
        self._last_stream = 0
        self._continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self._going_away = False
        self.peer_initial_window = http2.DEFAULT_WINDOW
        self._peer_max_frame = http2.DEFAULT_MAX_FRAME
        self._send_window = http2.DEFAULT_WINDOW
        self._recv_unacked = 0
        self._preface_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (TCP)
        server = self.server
        if len(server.connections) >= server.max_connections:
            transport.close()  # as the HTTP side: no more than --max-connections
            return
        server.connections.add(self)
        # A client must start HTTP/2 within the HTTP side's head deadline: a socket that
        # says nothing is not held open forever.
        self._preface_timer = self.loop.call_later(server.preface_timeout_s, self.close)
        settings = {
            http2.SETTINGS_ENABLE_PUSH: 0,
            http2.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            http2.SETTINGS_MAX_HEADER_LIST_SIZE: self.server.max_header_bytes,
        }
        self._write(
            http2.settings_frame(settings)
            + http2.window_update(0, CONNECTION_WINDOW - http2.DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
        self.server.connections.discard(self)
        for call in list(self._calls.values()):
            self._forget(call, cancelled=True)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            if self._preface:
                if len(buffer) < len(http2.PREFACE):
                    if not http2.PREFACE.startswith(bytes(buffer)):
                        self.close()
                    return
                if buffer[: len(http2.PREFACE)] != http2.PREFACE:
                    self.close()  # not HTTP/2 with prior knowledge: no gRPC client
                    return
                del buffer[: len(http2.PREFACE)]
                self._preface = False
                if self._preface_timer is not None:
                    self._preface_timer.cancel()
                    self._preface_timer = None
            self._read_frames()
        except http2.Http2Error as exc:
            log.debug("grpc connection error", extra={"code": exc.code, "error": str(exc)})
            self._write(http2.goaway(self._last_stream, exc.code, str(exc).encode()))
            self.close()

    # -- frames in
    def _read_frames(self) -> None:
        buffer = self._buffer
        position = 0
        available = len(buffer)
        try:
            while available - position >= 9:
                length, kind, flags, stream = http2.read_head(buffer, position)
                if length > http2.DEFAULT_MAX_FRAME:  # we never raise SETTINGS_MAX_FRAME_SIZE
                    raise http2.Http2Error(http2.FRAME_SIZE_ERROR, "frame too large")
                end = position + 9 + length
                if end > available:
                    break
                payload = bytes(buffer[position + 9 : end])
                position = end
                if self._continuing is not None and kind != http2.CONTINUATION:
                    raise http2.Http2Error(http2.PROTOCOL_ERROR, "CONTINUATION expected")
                if kind == http2.DATA:
                    self._on_data(stream, flags, payload)
                elif kind == http2.HEADERS:
                    self._on_headers(stream, flags, payload)
                elif kind == http2.CONTINUATION:
                    self._on_continuation(stream, flags, payload)
                elif kind == http2.WINDOW_UPDATE:
                    self._on_window_update(stream, payload)
                elif kind == http2.SETTINGS:
                    self._on_settings(stream, flags, payload)
                elif kind == http2.PING:
                    if stream or length != 8:
                        raise http2.Http2Error(http2.PROTOCOL_ERROR, "bad PING")
                    if not flags & http2.ACK:
                        self._write(http2.frame(http2.PING, http2.ACK, 0, payload))
                elif kind == http2.RST_STREAM:
                    call = self._calls.get(stream)
                    if call is not None:
                        self._forget(call, cancelled=True)
                elif kind == http2.GOAWAY:
                    self._going_away = True
                    if not self._calls:
                        self.close()
                elif kind == http2.PUSH_PROMISE:
                    raise http2.Http2Error(http2.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # PRIORITY and unknown frame types are ignored, as the RFC allows.
        finally:
            del buffer[:position]

    def _on_data(self, stream: int, flags: int, payload: bytes) -> None:
        if stream == 0:
            raise http2.Http2Error(http2.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if flags & http2.PADDED:
            pad = payload[0] if payload else 0
            payload = payload[1 : len(payload) - pad]
        self._recv_unacked += size
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._write(http2.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        call = self._calls.get(stream)
        if call is None or call.ended:
            return  # answered already (or unknown): its remaining data is dropped
        call.data += payload
        call.recv_unacked += size
        self._read_messages(call)
        if flags & http2.END_STREAM:
            call.ended = True
            self._end_of_request(call)
        elif call.recv_unacked >= STREAM_WINDOW // 2 and not call.answered:
            self._write(http2.window_update(stream, call.recv_unacked))
            call.recv_unacked = 0

    def _on_headers(self, stream: int, flags: int, payload: bytes) -> None:
        if stream == 0:
            raise http2.Http2Error(http2.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & http2.PADDED:
            end -= payload[0]
            start = 1
        if flags & http2.PRIORITY_FLAG:
            start += 5
        block = payload[start:end]
        if flags & http2.END_HEADERS:
            self._headers_complete(stream, flags, block)
        else:
            self._continuing = (stream, flags, bytearray(block))

    def _on_continuation(self, stream: int, flags: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream:
            raise http2.Http2Error(http2.PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, first_flags, block = self._continuing
        block += payload
        if len(block) > self.server.max_header_bytes:
            raise http2.Http2Error(http2.ENHANCE_YOUR_CALM, "header block too large")
        if flags & http2.END_HEADERS:
            self._continuing = None
            self._headers_complete(stream, first_flags, bytes(block))

    def _on_window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise http2.Http2Error(http2.FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream == 0:
            if not increment:
                raise http2.Http2Error(http2.PROTOCOL_ERROR, "zero window increment")
            self._send_window += increment
            for blocked in list(self._blocked.values()):
                self._flush(blocked)
            return
        call = self._calls.get(stream)
        if call is not None and increment:
            call.send_window += increment
            self._flush(call)

    def _on_settings(self, stream: int, flags: int, payload: bytes) -> None:
        if stream:
            raise http2.Http2Error(http2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & http2.ACK:
            return
        values = http2.parse_settings(payload)
        window = values.get(http2.SETTINGS_INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > http2.MAX_WINDOW:
                raise http2.Http2Error(http2.FLOW_CONTROL_ERROR, "window too large")
            delta = window - self.peer_initial_window
            self.peer_initial_window = window
            for call in self._calls.values():
                call.send_window += delta
        frame_size = values.get(http2.SETTINGS_MAX_FRAME_SIZE)
        if frame_size is not None:
            self._peer_max_frame = frame_size
        self._write(http2.frame(http2.SETTINGS, http2.ACK, 0))

    # -- calls
    def _headers_complete(self, stream: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the table must follow the peer's
        existing = self._calls.get(stream)
        if existing is not None:  # the client's trailers: the end of its messages
            if flags & http2.END_STREAM and not existing.ended:
                existing.ended = True
                self._end_of_request(existing)
            return
        if stream <= self._last_stream or not stream % 2:
            raise http2.Http2Error(http2.PROTOCOL_ERROR, f"stream {stream} reused")
        self._last_stream = stream
        if self._going_away:
            self._write(http2.rst_stream(stream, http2.REFUSED_STREAM))
            return
        method = path = content_type = authorization = b""
        timeout: bytes | None = None
        encoding = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        call = _Call(self, stream, path, headers)
        self._calls[stream] = call
        if flags & http2.END_STREAM:
            call.ended = True
        if method != b"POST" or not content_type.startswith(b"application/grpc"):
            status = b"405" if method != b"POST" else b"415"
            self._write(
                http2.frame(
                    http2.HEADERS,
                    http2.END_HEADERS | http2.END_STREAM,
                    stream,
                    http2.literal_indexed_name(8, status),
                )
            )
            self._forget(call)
            return
        server = self.server
        handler = server.handlers.get(path)
        if handler is None:
            self.finish(call, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        call.handler = handler
        call.started = time.perf_counter()
        call.labels = server.labels[path]
        if timeout is not None:
            seconds = timeout_seconds(timeout)
            if seconds is None:
                self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, "malformed grpc-timeout")
                return
            call.deadline = self.loop.call_later(seconds, self._deadline_passed, call)
        if encoding and encoding != b"identity":
            call.encoding = _ENCODINGS.get(encoding)
            if call.encoding is None:
                self.finish(
                    call,
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"grpc-encoding {encoding.decode('latin-1')!r} is not supported",
                    (("grpc-accept-encoding", _ACCEPT_ENCODING),),
                )
                return
        expected = server.expected_token
        if (
            expected is not None
            and path.decode("latin-1") not in EXEMPT_METHODS
            and not hmac.compare_digest(authorization, expected)
        ):
            reason = (
                "a bearer token is required"
                if not authorization
                else "the bearer token is not valid"
            )
            self.finish(call, grpc.StatusCode.UNAUTHENTICATED, reason)
            return
        if server.active >= server.max_in_flight:
            self.finish(call, grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
            return
        server.active += 1
        call.counted = True
        if handler.request_streaming:
            call.requests = asyncio.Queue()
            call.task = self.loop.create_task(self._run_streaming(call))
        if call.ended:
            self._end_of_request(call)

    def _read_messages(self, call: _Call) -> None:
        data = call.data
        while len(data) >= 5 and not call.answered:
            length = int.from_bytes(data[1:5], "big")
            if length > self.server.max_message:
                self.finish(
                    call,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({length} vs. {self.server.max_message})",
                )
                return
            if len(data) < 5 + length:
                return
            compressed = data[0]
            message = bytes(data[5 : 5 + length])
            del data[: 5 + length]
            if compressed:
                inflated = self._inflated(call, message)
                if inflated is None:
                    return
                message = inflated
            if call.requests is not None:
                assert call.handler is not None
                try:
                    call.requests.put_nowait(call.handler.request_deserializer(message))
                except Exception:
                    self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, _UNPARSEABLE)
                    return
            elif call.message is None:
                call.message = message
            else:
                self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, "more than one request message")
                return

    def _inflated(self, call: _Call, message: bytes) -> bytes | None:
        """A compressed message inflated, at most to the message limit; None when the call
        was ended for it (no encoding, a bad stream, too large)."""
        if call.encoding is None:
            self.finish(
                call,
                grpc.StatusCode.INVALID_ARGUMENT,
                "a compressed message without a grpc-encoding",
            )
            return None
        limit = self.server.max_message
        inflater = zlib.decompressobj(call.encoding)
        try:
            inflated = inflater.decompress(message, limit + 1)
        except zlib.error:
            self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, "the compressed message is corrupt")
            return None
        if len(inflated) > limit:
            self.finish(
                call,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Received message inflates past the limit of {limit} bytes",
            )
            return None
        if not inflater.eof or inflater.unused_data:
            self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, "the compressed message is cut")
            return None
        return inflated

    def _end_of_request(self, call: _Call) -> None:
        if call.answered or call.handler is None:
            return
        if call.requests is not None:
            call.requests.put_nowait(None)
            return
        message = call.message
        if message is None or call.data:
            self.finish(
                call, grpc.StatusCode.INVALID_ARGUMENT, "the request message is missing or cut"
            )
            return
        if call.path == MODEL_INFER:
            self._model_infer(call, message)
        else:
            call.task = self.loop.create_task(self._run_unary(call, message))

    def _model_infer(self, call: _Call, message: bytes) -> None:
        state = self.server.state
        try:
            try:
                request = pb.ModelInferRequest.FromString(message)
            except DecodeError:
                self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, _UNPARSEABLE)
                return
            call.inference = True
            self.server.requests.in_flight += 1
            call.infer = infer = protocol_grpc.InferCall.admit(state, request)
            call.message = None
            infer.batcher.enqueue(infer.inputs, infer.rows, call)
        except Exception as exc:
            self.call_failed(call, exc)

    def _deadline_passed(self, call: _Call) -> None:
        """The client's deadline: the call ends (a queued ModelInfer's rows are dropped, as
        the batcher skips a waiter that is done; a handler's task is cancelled)."""
        call.deadline = None
        if call.answered:
            return
        if call.task is not None and not call.task.done():
            call.task.cancel()
        self.finish(call, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def infer_answered(self, call: _Call, outputs: Tensors) -> None:
        infer = call.infer
        assert infer is not None
        try:
            response = infer.serialized(outputs)
        except Exception as exc:
            self.call_failed(call, exc)
            return
        self.respond(call, response)

    def call_failed(self, call: _Call, exc: BaseException) -> None:
        if isinstance(exc, ServingError):
            metadata = tuple((key.lower(), value) for key, value in (exc.headers or {}).items())
            self.finish(call, protocol_grpc.grpc_status(exc), exc.message, metadata)
        elif isinstance(exc, _AbortError):
            self.finish(call, exc.code, exc.details, exc.metadata)
        else:  # a bug: logged with its trace
            log.exception("unexpected error", extra={"rpc": call.path.decode()}, exc_info=exc)
            self.finish(call, grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    async def _run_unary(self, call: _Call, message: bytes) -> None:
        handler = call.handler
        assert handler is not None
        try:
            try:
                request = handler.request_deserializer(message)
            except Exception:
                self.finish(call, grpc.StatusCode.INVALID_ARGUMENT, _UNPARSEABLE)
                return
            response = await handler.unary_unary(request, _Context(call))
            self.respond(call, handler.response_serializer(response))
        except asyncio.CancelledError:
            return
        except Exception as exc:
            self.call_failed(call, exc)

    async def _run_streaming(self, call: _Call) -> None:
        handler = call.handler
        queue = call.requests
        assert handler is not None
        assert queue is not None

        async def requests() -> AsyncIterator[Any]:
            while (request := await queue.get()) is not None:
                yield request

        try:
            if handler.response_streaming:
                await handler.stream_stream(requests(), _Context(call))
                self.finish(call, grpc.StatusCode.OK, "")
            else:
                response = await handler.stream_unary(requests(), _Context(call))
                self.respond(call, handler.response_serializer(response))
        except asyncio.CancelledError:
            return
        except Exception as exc:
            self.call_failed(call, exc)

    # -- frames out
    def respond(self, call: _Call, message: bytes) -> None:
        """A unary answer: head, the message and OK trailers (one write when the windows
        allow, as they do for any answer that fits the peer's window)."""
        if call.answered or call.cancelled:
            return
        self.send_message(call, message, flush=False)
        call.trailers = _OK
        call.code = 0
        self._flush(call)

    def send_message(self, call: _Call, message: bytes, flush: bool = True) -> None:
        if call.answered or call.cancelled:
            return
        call.pending += b"\x00" + len(message).to_bytes(4, "big") + message
        if flush:
            self._flush(call)

    def finish(
        self, call: _Call, code: grpc.StatusCode, details: str, metadata: Iterable[Any] = ()
    ) -> None:
        """Ends ``call`` with ``code`` (trailers only when nothing was sent yet)."""
        if call.answered or call.cancelled:
            return
        block = http2.literal(b"grpc-status", b"%d" % code.value[0])
        if details:
            block += http2.literal(b"grpc-message", http2.percent_encoded(details))
        for key, value in metadata:
            raw = value if isinstance(value, bytes) else str(value).encode()
            block += http2.literal(str(key).encode(), raw)
        call.trailers = block
        call.code = code.value[0]
        self._flush(call)

    def _flush(self, call: _Call) -> None:
        """Writes what ``call`` has to send and the windows allow, in one write."""
        if not call.pending and call.trailers is None:
            return  # nothing yet (a WINDOW_UPDATE may come before the answer)
        frames: list[bytes] = []
        stream = call.id
        if not call.headers_sent:
            call.headers_sent = True
            if not call.pending and call.trailers is not None:  # trailers only
                frames.append(
                    http2.frame(
                        http2.HEADERS,
                        http2.END_HEADERS | http2.END_STREAM,
                        stream,
                        _HEAD + call.trailers,
                    )
                )
                self._write(b"".join(frames))
                self._done(call)
                return
            frames.append(http2.frame(http2.HEADERS, http2.END_HEADERS, stream, _HEAD))
        pending = call.pending
        while pending:
            room = min(self._send_window, call.send_window, self._peer_max_frame)
            if room <= 0:
                break
            chunk = bytes(pending[:room])
            del pending[:room]
            self._send_window -= len(chunk)
            call.send_window -= len(chunk)
            frames.append(http2.frame(http2.DATA, 0, stream, chunk))
        if pending:
            self._blocked[stream] = call  # flushed again when a WINDOW_UPDATE makes room
        else:
            self._blocked.pop(stream, None)
        if not pending and call.trailers is not None:
            frames.append(
                http2.frame(
                    http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, stream, call.trailers
                )
            )
            self._write(b"".join(frames))
            self._done(call)
            return
        if frames:
            self._write(b"".join(frames))

    def _done(self, call: _Call) -> None:
        """Our END_STREAM is written: the call is over (the client's rest is not read)."""
        if not call.ended:
            self._write(http2.rst_stream(call.id, http2.NO_ERROR))
        self._forget(call)

    def _forget(self, call: _Call, cancelled: bool = False) -> None:
        if cancelled and not call.answered:
            call.cancelled = True
            call.code = _CANCELLED
            if call.task is not None and not call.task.done():
                call.task.cancel()
        call.answered = True
        server = self.server
        if call.deadline is not None:
            call.deadline.cancel()
            call.deadline = None
        if call.inference:
            call.inference = False
            server.requests.in_flight -= 1
        if call.started:
            server.stats.observe(call.labels, call.code, time.perf_counter() - call.started)
            call.started = 0.0
        if call.counted:
            call.counted = False
            server.active -= 1
            if not server.active:
                server.idle.set()
        calls = self._calls
        calls.pop(call.id, None)
        self._blocked.pop(call.id, None)
        if not calls:
            if self._going_away:
                self.close()
            elif self._out:
                # Nothing else to answer here: the client gets its answers now, while the
                # batch goes on with other connections' calls, not after all of them.
                self._send_out()

    def _write(self, data: bytes) -> None:
        """Queues ``data`` until the connection's last call in flight is answered or the
        loop's callbacks of this iteration have run: the answers of one batch to the calls
        of one connection leave in one send, not one each."""
        out = self._out
        if not out:
            self.loop.call_soon(self._send_out)
        out.append(data)

    def _send_out(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def go_away(self) -> None:
        """No new calls on this connection; it closes once its calls are answered."""
        if not self._going_away:
            self._going_away = True
            self._write(http2.goaway(self._last_stream, http2.NO_ERROR))
        if not self._calls:
            self.close()

    def close(self) -> None:
        self._send_out()  # what was queued (a GOAWAY, last answers) goes before the close
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
