"""Domain errors of the model server and their one mapping to HTTP responses.

Handlers raise these; :func:`install` turns each into a status code and a JSON body
``{"error": "..."}`` (the error shape of both KServe V1 and the Open Inference Protocol).
Bad input is never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

log = logging.getLogger(__name__)


class ServingError(Exception):
    """Base of every error a client can cause or see; ``status_code`` says which."""

    status_code = 500
    headers: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServingError):
    """The body is not JSON, or not the protocol's shape (400)."""

    status_code = 400


class InvalidInputError(ServingError):
    """Valid JSON, but tensors that do not fit the model's signature (422)."""

    status_code = 422


class ModelNotFoundError(ServingError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not served here")


class ModelNotReadyError(ServingError):
    status_code = 503
    headers: ClassVar[Mapping[str, str] | None] = {"Retry-After": "1"}


class PayloadTooLargeError(ServingError):
    status_code = 413


class ClientClosedRequestError(ServingError):
    """The client went away before its request was read (499, nginx's code).

    Nobody reads the answer; it is logged at debug level and counted as 499, not as a
    server error.
    """

    status_code = 499


class OverloadedError(ServingError):
    """The batching queue is full: shed load instead of growing memory (503)."""

    status_code = 503
    headers: ClassVar[Mapping[str, str] | None] = {"Retry-After": "1"}


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps({"error": message}),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    if isinstance(exc, ClientClosedRequestError):
        return _client_closed(request)
    return error_response(exc.status_code, exc.message, exc.headers)


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientDisconnect)
    return _client_closed(request)


def _client_closed(request: Request) -> Response:
    log.debug("499 client closed request", extra={"path": request.url.path})
    return error_response(499, "client closed request")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in exc.errors()
    )
    return error_response(422, problems or "invalid request")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", extra={"path": request.url.path})
    return error_response(500, f"internal error: {type(exc).__name__}")


def install(app: FastAPI) -> None:
    """Registers the handlers: domain errors, FastAPI's validation, HTTP errors, bugs."""
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
