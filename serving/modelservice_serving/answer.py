"""An HTTP answer that does not depend on the framework that sends it.

The inference handlers build :class:`Answer` values; the raw ASGI fast path
(:mod:`.fastpath`) sends them with two ASGI messages, FastAPI's routes turn them into
Starlette responses. Both therefore answer byte for byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

JSON = b"application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Answer:
    """Status, body, content type and extra headers (lower-case names) of a response.

    Never changed once made (not ``frozen``: a frozen dataclass costs a microsecond more
    to build, and one is built per request)."""

    body: bytes
    status: int = 200
    content_type: bytes = JSON
    headers: Headers = ()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", self.content_type),
            (b"content-length", b"%d" % len(self.body)),
            *self.headers,
        ]

    async def send(self, send: Send) -> None:
        """Sends it as an ASGI response (uvicorn drops it if the client has gone)."""
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers()}
        )
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        """The same answer as a Starlette response (for FastAPI's routes)."""
        response = Response(self.body, self.status)
        response.raw_headers = self.raw_headers()
        return response


def json_answer(payload: dict[str, Any], status: int = 200) -> Answer:
    """orjson with NumPy arrays serialised natively (no ``tolist`` round trip)."""
    return Answer(orjson.dumps(payload, option=_NUMPY), status)
