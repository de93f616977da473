"""Request bodies to arrays and arrays to response bodies, shared by both protocols.

The hot path uses orjson and NumPy directly instead of FastAPI's body models: for one small
instance per request, parsing dominates the cost of serving.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .answer import json_answer
from .errors import (
    ClientClosedRequestError,
    InvalidInputError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from .model import DATATYPES, TensorSpec

_NUMERIC_KINDS = frozenset("biuf")
_DTYPES = {datatype: np.dtype(scalar) for datatype, scalar in DATATYPES.items()}
# Any JSON integer NumPy parses (int64/uint64) fits these as a finite number: no range or
# finiteness check is needed after the cast.
_WIDE_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


class Upload(Protocol):
    """A request's headers and body, whoever reads them: the raw ASGI fast path
    (:mod:`.fastpath`) or a Starlette request (:class:`RequestUpload`)."""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        ...

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 past ``limit`` bytes, 499 when the client goes away."""
        ...


def declared_length(upload: Upload) -> int | None:
    """The body's ``Content-Length``, when it gives one."""
    return content_length(upload.header(b"content-length"))


def content_length(value: bytes | None) -> int | None:
    """A ``Content-Length`` header's value as a number; None when absent or not one."""
    return int(value) if value is not None and value.isdigit() else None


def check_declared(declared: int | None, limit: int) -> None:
    """413 at once for a body whose ``Content-Length`` exceeds ``limit``, before reading it."""
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes exceeds {limit} bytes")


class RequestUpload:
    """:class:`Upload` over a Starlette request (FastAPI's documented routes)."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def header(self, name: bytes) -> bytes | None:
        value = self.request.headers.get(name.decode("latin-1"))
        return None if value is None else value.encode("latin-1")

    async def body(self, limit: int) -> bytes:
        return await read_body(self.request, limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; 413 past ``limit`` bytes, 499 when the client goes away mid-upload."""
    declared = declared_length(RequestUpload(request))
    check_declared(declared, limit)
    try:
        if declared is not None:
            return await request.body()
        # chunked: count while reading, never buffer past the limit
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except ClientDisconnect as exc:
        raise ClientClosedRequestError("client closed request") from exc


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object; 400 naming the problem (syntax, UTF-8, not an object)."""
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"request body must be a JSON object, got {_kind(payload)}")
    return payload


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 when not a JSON object."""
    return parse_json_object(await read_body(request, limit))


def may_hold_booleans(body: bytes) -> bool:
    """False when the raw body has no ``true``/``false`` literal: then no tensor needs the
    (Python-speed) scan for booleans mixed into numbers, which NumPy silently turns to 1/0."""
    return b"true" in body or b"false" in body


def to_array(
    values: Any, spec: TensorSpec, what: str, *, booleans_possible: bool = True
) -> npt.NDArray[Any]:
    """Nested JSON lists to an array of the signature's dtype; 422 naming what is wrong.

    Booleans are not numbers (nor numbers booleans), integers must be whole and in the
    datatype's range, floats finite in it.
    """
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged, or nested past 64 dims
        raise InvalidInputError(f"{what} is not a rectangular array of numbers: {exc}") from exc
    kind = raw.dtype.kind
    wants_bool = spec.datatype == "BOOL"
    if kind not in _NUMERIC_KINDS:
        raise InvalidInputError(
            f"{what} must hold {'booleans' if wants_bool else 'numbers'} for {spec.datatype} "
            f"input {spec.name!r}, got {_element_kind(raw)}"
        )
    if wants_bool != (kind == "b") or (
        not wants_bool and booleans_possible and _holds_bool(values)
    ):
        expected = "booleans (true/false)" if wants_bool else "numbers, not booleans"
        raise InvalidInputError(f"{what} must hold {expected} for {spec.datatype} input")
    dtype = _DTYPES[spec.datatype]
    if dtype.kind in "iu":
        _check_integers(raw, dtype, what)
    elif kind in "iu" and dtype in _WIDE_FLOATS:  # the common case: whole numbers to floats
        return raw.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are caught next
        array = raw.astype(dtype, copy=False)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(
            f"{what} holds non-finite numbers (NaN, infinity, or beyond {spec.datatype})"
        )
    return array


def declared_shape(shape: Any, spec: TensorSpec, what: str, max_elements: int) -> list[int]:
    """Checks a V2 tensor's ``shape`` before its data is touched: sizes, the signature's
    rank and fixed dimensions, at least one row, and no more elements than a body can
    hold. Returns it; no array is allocated on the way."""
    if isinstance(shape, list):
        # JSON Schema counts 64.0 as an integer, so a client may send it; 64.5 is no size.
        shape = [int(dim) if type(dim) is float and dim.is_integer() else dim for dim in shape]
    # type() rather than isinstance(): a JSON true is a bool, an int subclass, not a size.
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise InvalidRequestError(f"{what}: 'shape' must be an array of sizes (integers >= 0)")
    expected = spec.shape
    if len(shape) != len(expected) or any(
        want not in (-1, got) for got, want in zip(shape, expected, strict=True)
    ):
        raise InvalidInputError(
            f"{what} has shape {_preview(shape)}; input {spec.name!r} expects "
            f"{list(expected)} (-1 = any)"
        )
    if shape[0] == 0:
        raise InvalidInputError(f"{what} holds no rows")
    count = math.prod(shape)
    if count > max_elements:
        raise InvalidInputError(
            f"{what}: shape {_preview(shape)} has {count} elements; a request holds at most "
            f"{max_elements}"
        )
    return shape


def reshaped(array: npt.NDArray[Any], shape: list[int], what: str) -> npt.NDArray[Any]:
    """``array`` in the declared ``shape`` (checked by :func:`declared_shape`)."""
    if array.size != math.prod(shape):
        raise InvalidInputError(
            f"{what} has {array.size} values; shape {shape} needs {math.prod(shape)}"
        )
    return array.reshape(shape)


def check_shape(array: npt.NDArray[Any], spec: TensorSpec, what: str) -> int:
    """Checks ``array`` against the signature's shape; returns its batch size."""
    expected = spec.shape
    shape = array.shape
    if len(shape) != len(expected):
        raise _shape_error(array, spec, what)
    for got, want in zip(shape, expected, strict=True):  # a loop: cheaper than any() here
        if want != -1 and got != want:
            raise _shape_error(array, spec, what)
    if array.shape[0] == 0:
        raise InvalidInputError(f"{what} holds no rows")
    return int(array.shape[0])


def _holds_bool(values: Any) -> bool:
    if type(values) is bool:
        return True
    if isinstance(values, list):
        return any(_holds_bool(item) for item in values)
    return False


def _check_integers(raw: npt.NDArray[Any], dtype: np.dtype[Any], what: str) -> None:
    if raw.size == 0:
        return
    if raw.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = bool(np.all(np.isfinite(raw)) and np.all(np.floor(raw) == raw))
        if not whole:
            raise InvalidInputError(f"{what} must hold whole numbers for {dtype.name.upper()}")
    info = np.iinfo(dtype)
    low, high = raw.min(), raw.max()
    if low < info.min or high > info.max:
        raise InvalidInputError(
            f"{what} holds values outside {dtype.name} range [{info.min}, {info.max}]"
        )


def _preview(shape: list[int]) -> str:
    """A shape for a message, cut short: rank 10,000 must not make a 50 KB error."""
    return str(shape) if len(shape) <= 8 else f"{shape[:8]}... (rank {len(shape)})"


def _shape_error(array: npt.NDArray[Any], spec: TensorSpec, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} has shape {list(array.shape)}; input {spec.name!r} expects "
        f"{list(spec.shape)} (-1 = any)"
    )


def json_response(payload: dict[str, Any], status_code: int = 200) -> Response:
    """orjson with NumPy arrays serialised natively (no ``tolist`` round trip)."""
    return json_answer(payload, status_code).response()


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _element_kind(raw: npt.NDArray[Any]) -> str:
    if raw.dtype.kind in "US":
        return "strings"
    if raw.dtype.kind == "O":
        return "null or mixed values"
    return str(raw.dtype)
