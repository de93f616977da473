"""Connection guard: slow, idle and oversized clients cannot hold the server.

uvicorn's httptools protocol has no header size limit, no deadline for a request's head or
body (its keep-alive timer starts only after a response and any byte cancels it) and
``limit_concurrency`` counts idle connections too, so it answers 503 to everyone once slow
sockets fill it. This subclass of that protocol adds, per connection:

- a head deadline: the request line and headers must arrive within ``header_timeout_s`` of
  the connection (or of the first byte of a next request); else 408 and close;
- a head size limit: ``max_header_bytes``; past it 431 and close, so memory per connection is
  bounded by the limit plus one socket read;
- a body deadline: the body must arrive within ``body_timeout_s`` of the head; else 408 (or a
  close if the answer has begun) and the handler sees a client that went away (499);
- a connection cap: past ``max_connections`` the connection that has waited longest
  without a request in progress (idle keep-alive or a head still dribbling in) is closed
  to make room; when every connection is busy the new one gets 503 and is closed;
- an in-flight cap: past ``max_in_flight`` running requests a request is answered 503 with
  ``Retry-After`` before its body is read (health and metrics paths are exempt, so probes
  keep answering under load).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

RejectObserver = Callable[[str], None]


class _Phase:
    """What a connection's one deadline is for (compared by identity)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_HEAD, _BODY, _IDLE = _Phase("head"), _Phase("body"), _Phase("idle")

# Probes and scrapes must answer while requests are shed: these skip the in-flight cap.
EXEMPT_PATHS = frozenset({b"/", b"/metrics", b"/v2/health/live", b"/v2/health/ready"})

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_in_flight: int
    on_reject: RejectObserver | None = None


def _error_bytes(status: int, message: str, retry_after: bool = False) -> bytes:
    body = orjson.dumps({"error": message})
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after:
        head.append(b"retry-after: 1")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _overloaded_app(message: str) -> Any:
    body = orjson.dumps({"error": message})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (bound to its limits by
    :func:`.inference_protocol.serving_protocol`)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._waiting_since = time.monotonic()
        # One deadline at a time (the head's, the body's or keep-alive's), watched by one
        # lazy timer: moving a deadline is an assignment, not a timer cancelled and another
        # scheduled (about 5 µs a pair, three pairs a request otherwise); the timer, when it
        # fires early, sleeps again until the deadline of the moment.
        self._phase: _Phase | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._reject(503, "server_busy", "too many connections; retry later", retry=True)
            return
        self._arm(_HEAD, self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._phase is not _HEAD:  # the first byte of a keep-alive connection's next request
                self._arm(_HEAD, self.limits.header_timeout_s)
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._reject(
                431,
                "header_too_large",
                f"request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    # -- parser callbacks
    def on_headers_complete(self) -> None:
        self._in_head = False
        self._phase = None
        path = self.url.split(b"?", 1)[0]
        in_flight = self._requests_in_flight()
        if in_flight >= self.limits.max_in_flight and path not in EXEMPT_PATHS:
            self._observe("in_flight")
            app = self.app
            self.app = _overloaded_app(
                f"server overloaded: {in_flight} requests in flight (limit "
                f"{self.limits.max_in_flight}); retry later"
            )
            try:
                self._prepare_asgi()
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            self._start_request(path)
        self._arm(_BODY, self.limits.body_timeout_s)  # even if answered: the body must come

    def _start_request(self, path: bytes) -> None:
        """Starts a request the limits admitted: uvicorn's ASGI cycle (subclasses may
        answer some paths themselves)."""
        self._prepare_asgi()
        super().on_headers_complete()

    def _prepare_asgi(self) -> None:
        """Whatever uvicorn's cycle needs that a subclass put off (nothing here)."""

    def _requests_in_flight(self) -> int:
        """Requests being read or answered, on all connections: uvicorn's ASGI tasks."""
        return len(self.tasks)

    def on_message_complete(self) -> None:
        self._body_complete()
        super().on_message_complete()

    def _body_complete(self) -> None:
        if self._phase is _BODY:
            self._phase = None
        self._in_head = True  # a pipelined or next request starts its own head from here
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        """uvicorn's, with keep-alive's deadline on the lazy timer instead of a timer of its
        own per response."""
        self._waiting_since = time.monotonic()  # idle from now: evictable, newest last
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # a pipelined request waited for this answer
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._in_head and self._head_bytes == 0:
            self._arm(_IDLE, self.timeout_keep_alive)

    # -- limits
    def _arm(self, phase: _Phase, timeout_s: float) -> None:
        self._phase = phase
        self._deadline = deadline = self.loop.time() + timeout_s
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        phase = self._phase
        if phase is None or self.transport.is_closing():
            return
        if self._deadline > self.loop.time():  # moved since it was set: sleep again
            self._timer = self.loop.call_at(self._deadline, self._timer_fired)
            return
        self._phase = None
        if phase is _BODY:
            self._body_timed_out()
        elif phase is _HEAD:
            self._head_timed_out()
        else:  # keep-alive ran out, as uvicorn's own timer would close it
            self.transport.close()

    def _head_timed_out(self) -> None:
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self._observe("idle_timeout")  # said nothing: close, as keep-alive does
            self.transport.close()
            return
        self._reject(
            408,
            "header_timeout",
            f"request head not received within {self.limits.header_timeout_s:g} s",
        )

    def _body_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._reject(
                408,
                "body_timeout",
                f"request body not received within {self.limits.body_timeout_s:g} s",
            )
        else:
            self._observe("body_timeout")
            self.transport.close()

    def _make_room(self) -> bool:
        """Closes the connection idle (or stuck in its head) the longest; False if none."""
        victim: GuardedHttpToolsProtocol | None = None
        for connection in self.connections:
            if connection is self or not isinstance(connection, GuardedHttpToolsProtocol):
                continue
            if not connection._waiting() or connection.transport.is_closing():
                continue
            if victim is None or connection._waiting_since < victim._waiting_since:
                victim = connection
        if victim is None:
            return False
        victim._observe("evicted")
        victim.transport.close()
        return True

    def _waiting(self) -> bool:
        """No request of this connection is being read or answered."""
        return self._in_head and (self.cycle is None or self.cycle.response_complete)

    def _reject(self, status: int, reason: str, message: str, retry: bool = False) -> None:
        self._observe(reason)
        log.debug("connection refused", extra={"status": status, "reason": reason})
        self._cancel_timers()
        self.transport.write(_error_bytes(status, message, retry))
        self.transport.close()

    def _observe(self, reason: str) -> None:
        if self.limits.on_reject is not None:
            self.limits.on_reject(reason)

    def _cancel_timers(self) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
