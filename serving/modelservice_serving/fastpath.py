"""The inference routes served as raw ASGI, below FastAPI and Starlette.

For one small instance per request, Starlette's middleware stack, router, exception
middleware, request and response objects cost several times what the model does.
``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
are therefore matched here from the path itself and answered with two ASGI messages; every
other request (and the OpenAPI document of these routes) stays with FastAPI.

What the framework did for these routes is done here, the same way: the bearer token
(:mod:`.access`), the request metrics and in-flight gauge (:mod:`.metrics`, same labels),
the body limits and the 499 of a client that goes away (:class:`AsgiUpload`), and the
domain errors' answers (:func:`.errors.answer_for`, the one mapping). The handlers are the
protocols' own (:func:`.protocol_v1.serve_predict`, :func:`.protocol_v2.serve_infer`).
Admission before the body is read (503 + ``Retry-After``) is theirs too.
"""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from . import protocol_v1, protocol_v2
from .access import BearerToken
from .errors import (
    ClientClosedRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    answer_for,
)
from .payloads import check_declared, declared_length
from .state import ServingState

# Route templates: the metrics' endpoint label, as FastAPI's routes of the same paths had.
V1_PREDICT = "/v1/models/{name}:predict"
V2_INFER = "/v2/models/{name}/infer"
V2_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"


def match(path: str) -> tuple[str, str, str | None] | None:
    """(route template, model name, version) of an inference path, else None.

    Names and versions are one non-empty path segment, as Starlette's ``{name}`` matches.
    """
    if path.startswith("/v1/models/"):
        name = path[11:-8]
        if path.endswith(":predict") and name and "/" not in name:
            return V1_PREDICT, name, None
        return None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[11:-6].split("/")
        if len(parts) == 1 and parts[0]:
            return V2_INFER, parts[0], None
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return V2_VERSION_INFER, parts[0], parts[2]
    return None


class AsgiUpload:
    """:class:`.payloads.Upload` straight from the ASGI scope and ``receive``."""

    __slots__ = ("_headers", "_receive")

    def __init__(self, headers: dict[bytes, bytes], receive: Receive) -> None:
        self._headers = headers
        self._receive = receive

    def header(self, name: bytes) -> bytes | None:
        return self._headers.get(name)

    async def body(self, limit: int) -> bytes:
        check_declared(declared_length(self), limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientClosedRequestError("client closed request")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked, or more than declared: never buffer past the limit
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class InferenceFastPath:
    """Serves the inference routes of one app's state; :meth:`serves` says which."""

    def __init__(self, state: ServingState, token: bytes | None) -> None:
        self.state = state
        self.stats = state.metrics.requests
        self.token = BearerToken(token) if token is not None else None

    def serves(self, scope: Scope) -> tuple[str, str, str | None] | None:
        """The route of an HTTP request this path answers (any method: other methods than
        POST get 405 here, as the routes had it), else None (FastAPI's)."""
        if scope["type"] != "http":
            return None
        return match(scope["path"])

    async def __call__(
        self, route: tuple[str, str, str | None], scope: Scope, receive: Receive, send: Send
    ) -> None:
        # First value of each header wins, as Starlette's Headers.get has it.
        headers = dict(reversed(scope["headers"]))
        if self.token is not None:
            refusal = self.token.refusal(headers.get(b"authorization"))
            if refusal is not None:  # before the metrics, as the middleware order had it
                await refusal.send(send)
                return
        started = self.begin()
        template, name, version = route
        upload = AsgiUpload(headers, receive)
        status = 500  # unless an answer is sent (cancelled: the server is going away)
        try:
            try:
                if scope["method"] != "POST":
                    raise MethodNotAllowedError("Method Not Allowed")
                if template == V1_PREDICT:
                    answer = await protocol_v1.serve_predict(self.state, name, upload)
                else:
                    answer = await protocol_v2.serve_infer(self.state, name, version, upload)
            except Exception as exc:  # every error is answered, as FastAPI's handlers did
                answer = answer_for(exc, scope["path"])
            status = answer.status
            await answer.send(send)
        finally:
            self.end(template, status, started)

    def begin(self) -> float:
        """Counts a request in flight (after its token was accepted); its start time."""
        self.stats.in_flight += 1
        return time.perf_counter()

    def end(self, template: str, status: int, started: float) -> None:
        """Counts a request answered (or abandoned, 499) under its route template."""
        stats = self.stats
        stats.in_flight -= 1
        stats.observe("POST", template, status, time.perf_counter() - started)
