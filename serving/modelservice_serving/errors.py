"""Domain errors of the model server and their one mapping to HTTP responses.

Handlers raise these; :func:`answer_for` turns each into a status code and a JSON body
``{"error": "..."}`` (the error shape of both KServe V1 and the Open Inference Protocol),
for FastAPI's routes (:func:`install`) and the inference fast path (:mod:`.fastpath`)
alike. Bad input is never a 500.
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

from .answer import Answer

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


class MethodNotAllowedError(ServingError):
    """An inference path asked with another method than POST (405)."""

    status_code = 405
    headers: ClassVar[Mapping[str, str] | None] = {"Allow": "POST"}


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


def error_answer(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Answer:
    extra = tuple(
        (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
    )
    return Answer(orjson.dumps({"error": message}), status_code, headers=extra)


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return error_answer(status_code, message, headers).response()


def answer_for(exc: BaseException, path: str) -> Answer:
    """The answer to a request that raised ``exc``: the domain errors' own status, 499 for
    a client that went away (logged at debug level), 500 for anything else (a bug: logged
    with its trace)."""
    if isinstance(exc, ClientClosedRequestError | ClientDisconnect):
        log.debug("499 client closed request", extra={"path": path})
        return CLIENT_CLOSED
    if isinstance(exc, ServingError):
        return error_answer(exc.status_code, exc.message, exc.headers)
    log.exception("unexpected error", extra={"path": path}, exc_info=exc)
    return error_answer(500, f"internal error: {type(exc).__name__}")


CLIENT_CLOSED = error_answer(499, "client closed request")


async def _mapped(request: Request, exc: Exception) -> Response:
    return answer_for(exc, request.url.path).response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in exc.errors()
    )
    return error_response(422, problems or "invalid request")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def install(app: FastAPI) -> None:
    """Registers the handlers: domain errors, FastAPI's validation, HTTP errors, bugs."""
    app.add_exception_handler(ServingError, _mapped)
    app.add_exception_handler(ClientDisconnect, _mapped)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _mapped)
