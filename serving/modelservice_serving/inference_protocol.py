"""The inference routes answered inside the HTTP protocol: no ASGI cycle, no task.

uvicorn runs every request as an ASGI application in a task of its own: a scope, a
request-response cycle, ``receive``, two ``send`` calls and their checks, an event-loop
turn to start the task and another to wake it once its batch has run. For one small
inference request that machinery costs more than the model and everything of ours around
it (docs/serving-performance.md has the measurements).

:class:`InferenceProtocol` is uvicorn's httptools protocol with the connection guard
(:class:`.connections.GuardedHttpToolsProtocol`), and it answers ``POST`` to the inference
routes itself: the body is gathered in the parser's callbacks, decoded by the protocols'
own calls (:class:`.protocol_v1.PredictCall`, :class:`.protocol_v2.InferCall`), its rows
go to the batcher with the request itself as the waiter (:class:`.batching.Waiter`), and
the batcher's callback writes the answer to the socket. The same steps as the ASGI path,
in the same order, with the same answers: the bearer token first, then admission before
the body is read (503 + ``Retry-After``), the body limit while reading (413), the domain
errors through :func:`.errors.answer_for`, 499 for a client that goes away, and the same
metrics under the same route templates (:class:`.fastpath.InferenceFastPath`).

Everything else goes to the ASGI app as before: other paths and methods, a path with
escapes, and a request pipelined behind one not yet answered (uvicorn keeps pipelined
requests in order; the ASGI fast path serves the same routes the same way).
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from . import protocol_v1, protocol_v2
from .answer import JSON, Answer
from .binary_http import HEADER_KEY as BINARY_HEADER
from .connections import ConnectionLimits, GuardedHttpToolsProtocol
from .errors import ClientClosedRequestError, PayloadTooLargeError, answer_for
from .fastpath import V1_PREDICT, InferenceFastPath, match
from .model import Tensors
from .payloads import check_declared, content_length

log = logging.getLogger(__name__)

Call = protocol_v1.PredictCall | protocol_v2.InferCall

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Exchange:
    """One inference request of a connection, from its head to its answer.

    It stands in for uvicorn's request-response cycle where the protocol, the guard and the
    server's shutdown look at one (``response_started``, ``response_complete``,
    ``keep_alive``, ``disconnected``, ``message_event``), and it is the batcher's waiter.
    """

    __slots__ = (
        "call", "chunks", "connection", "disconnected", "keep_alive", "path",
        "response_complete", "response_started", "size", "started", "template",
    )  # fmt: skip

    def __init__(
        self, connection: InferenceProtocol, template: str, path: str, keep_alive: bool
    ) -> None:
        self.connection = connection
        self.template = template
        self.path = path
        self.keep_alive = keep_alive
        self.call: Call | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.started = 0.0
        self.disconnected = False
        self.response_started = False
        self.response_complete = False

    @property
    def message_event(self) -> _Exchange:
        """uvicorn sets its cycle's event when the connection is lost: nothing waits here."""
        return self

    def set(self) -> None:
        """See :attr:`message_event`."""

    # -- the batcher's waiter
    def done(self) -> bool:
        return self.response_started or self.disconnected

    def set_result(self, result: Tensors, /) -> None:
        call = self.call
        assert call is not None
        try:
            answer = call.answer(result)
        except Exception as exc:  # an answer that cannot be encoded is still answered
            answer = answer_for(exc, self.path)
        self.connection.respond(self, answer)

    def set_exception(self, exception: BaseException, /) -> None:
        self.connection.respond(self, answer_for(exception, self.path))


class InferenceProtocol(GuardedHttpToolsProtocol):
    """The guarded protocol, answering the inference routes without ASGI (set by
    :func:`serving_protocol`)."""

    fast_path: InferenceFastPath
    # Exchanges in flight on all connections (one protocol class per server).
    exchanges: list[int]
    # uvicorn's default headers, and the 200 JSON head made with them (_json_ok_head).
    ok_head: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exchange: _Exchange | None = None  # the one whose head or body is being read

    def _requests_in_flight(self) -> int:
        return super()._requests_in_flight() + self.exchanges[0]

    # -- parser callbacks
    def on_message_begin(self) -> None:
        """What uvicorn's does but its ASGI scope, made only for a request that goes to the
        app (:meth:`_start_request`): most requests here never need one."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _prepare_asgi(self) -> None:
        """uvicorn's own scope, with what the parser gathered since the message began."""
        url, gathered, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = gathered

    def _start_request(self, path: bytes) -> None:
        route = self._inference_route(path)
        if route is None:
            super()._start_request(path)
            return
        template, name, version = route
        parser = self.parser
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        exchange = _Exchange(self, template, path.decode("ascii"), keep_alive)
        self._exchange = exchange
        self.cycle = exchange  # type: ignore[assignment]
        headers = dict(reversed(self.headers))  # the first value of each wins, as Starlette's
        fast_path = self.fast_path
        if fast_path.token is not None:
            refusal = fast_path.token.refusal(headers.get(b"authorization"))
            if refusal is not None:  # before the metrics, as on the ASGI path
                self._write(exchange, refusal)
                return
        self.exchanges[0] += 1
        exchange.started = fast_path.begin()
        declared = content_length(headers.get(b"content-length"))
        state = fast_path.state
        try:
            if template == V1_PREDICT:
                exchange.call = protocol_v1.PredictCall.admit(state, name, declared)
            else:
                exchange.call = protocol_v2.InferCall.admit(
                    state, name, version, declared, headers.get(BINARY_HEADER)
                )
            check_declared(declared, state.settings.max_body_bytes)
        except Exception as exc:
            self.respond(exchange, answer_for(exc, exchange.path))
            return
        if self.expect_100_continue:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            super().on_body(body)
            return
        if exchange.response_started:
            return  # answered already (401, 413, 503): the rest of the body is dropped
        exchange.size += len(body)
        limit = self.fast_path.state.settings.max_body_bytes
        if exchange.size > limit:  # chunked, or more than declared: never buffer past it
            self.respond(
                exchange,
                answer_for(
                    PayloadTooLargeError(f"request body exceeds {limit} bytes"), exchange.path
                ),
            )
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self._exchange
        if exchange is None:
            super().on_message_complete()
            return
        self._body_complete()
        self._exchange = None
        call = exchange.call
        if exchange.response_started or call is None:
            return
        chunks = exchange.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        exchange.chunks = []
        try:
            try:
                inputs, rows = call.decode(body)
            finally:
                call.reservation.release()
            call.batcher.enqueue(inputs, rows, exchange)
        except Exception as exc:
            self.respond(exchange, answer_for(exc, exchange.path))

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        if isinstance(cycle, _Exchange) and not cycle.response_started:
            # Gone before its answer: counted as 499; a queued request's rows are dropped
            # by the batcher before the model runs (done() is true from here).
            self.respond(
                cycle, answer_for(ClientClosedRequestError("client closed request"), cycle.path)
            )

    # -- answers
    def respond(self, exchange: _Exchange, answer: Answer) -> None:
        """Writes ``answer`` (once; nothing if the client has gone) and counts it."""
        if exchange.response_started:
            return
        if exchange.call is not None:
            exchange.call.reservation.release()
        if exchange.started:
            self.exchanges[0] -= 1
            self.fast_path.end(exchange.template, answer.status, exchange.started)
        self._write(exchange, answer)

    def _write(self, exchange: _Exchange, answer: Answer) -> None:
        exchange.response_started = True
        transport = self.transport
        if exchange.disconnected or transport.is_closing():
            exchange.response_complete = True
            return
        status = answer.status
        body = answer.body
        if (
            status == 200
            and answer.content_type is JSON
            and not answer.headers
            and exchange.keep_alive
        ):
            transport.write(b"".join((self._json_ok_head(), b"%d\r\n\r\n" % len(body), body)))
        else:
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            for name, value in answer.raw_headers():
                head += [name, b": ", value, b"\r\n"]
            if not exchange.keep_alive:
                head.append(b"connection: close\r\n")
            head += [b"\r\n", body]
            transport.write(b"".join(head))
        exchange.response_complete = True
        if self.access_log:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', client, "POST", self.url.decode("ascii", "replace"),
                self.parser.get_http_version() if self.parser else "1.1", status,
            )  # fmt: skip
        if not exchange.keep_alive:
            transport.close()
        self.on_response_complete()

    def _json_ok_head(self) -> bytes:
        """The head of a 200 JSON answer up to its length, as :meth:`_write` builds it, made
        once per value of uvicorn's default headers (its ``date`` changes each second)."""
        defaults = self.server_state.default_headers
        cache = self.ok_head
        if cache[0] is not defaults:
            lines = [STATUS_LINE[200]]
            for name, value in defaults:
                lines += [name, b": ", value, b"\r\n"]
            lines.append(b"content-type: application/json\r\ncontent-length: ")
            cache[:] = [defaults, b"".join(lines)]
        head: bytes = cache[1]
        return head

    def _inference_route(self, path: bytes) -> tuple[str, str, str | None] | None:
        """The route of a request this protocol answers itself, else None (the ASGI app's)."""
        if self.parser.get_method() != b"POST" or b"%" in path:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind an unanswered request: uvicorn keeps the order
        if self.parser.should_upgrade():
            return None
        return match(path.decode("ascii", "replace"))


def serving_protocol(
    limits: ConnectionLimits, fast_path: InferenceFastPath
) -> type[InferenceProtocol]:
    """A protocol class bound to ``limits`` and the app's inference routes (uvicorn builds
    one instance per connection)."""
    return type(
        "InferenceProtocol",
        (InferenceProtocol,),
        {"limits": limits, "fast_path": fast_path, "exchanges": [0], "ok_head": [None, b""]},
    )
