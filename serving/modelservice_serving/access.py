"""Who may call the server: an optional bearer token, health probes exempt.

With ``--auth-token-file`` (a mounted Secret, ``spec.serving.auth.secretRef``) every request
but the health probes needs ``Authorization: Bearer <token>``; the comparison takes the same
time whatever the token (:func:`hmac.compare_digest`), and a refusal is 401 with
``WWW-Authenticate`` and a JSON reason. A plain ASGI middleware: no per-request task.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .answer import Answer

__all__ = ["EXEMPT_PATHS", "BearerToken", "BearerTokenMiddleware", "read_token"]

# Probed by the kubelet, which sends no token; they tell nothing about the model.
EXEMPT_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready"})
CHALLENGE = b'Bearer realm="modelservice"'


def read_token(path: Path) -> bytes:
    """The token in ``path`` (a trailing newline is not part of it); refuses an empty one."""
    token = path.read_bytes().rstrip(b"\r\n")
    if not token:
        raise ValueError(f"the auth token file {path} is empty")
    return token


class BearerToken:
    """The expected ``Authorization`` value, and the 401 answer to a request without it."""

    def __init__(self, token: bytes) -> None:
        self.expected = b"Bearer " + token

    def refusal(self, given: bytes | None) -> Answer | None:
        """None when ``given`` (the request's ``Authorization`` header) is the token."""
        if given is not None and hmac.compare_digest(given, self.expected):
            return None
        reason = "a bearer token is required" if not given else "the bearer token is not valid"
        return Answer(
            orjson.dumps({"error": reason}), 401, headers=((b"www-authenticate", CHALLENGE),)
        )


class BearerTokenMiddleware:
    """Refuses HTTP requests without the bearer token with 401, except the health probes."""

    def __init__(self, app: ASGIApp, token: bytes) -> None:
        self.app = app
        self.token = BearerToken(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        refusal = self.token.refusal(given)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal.send(send)
