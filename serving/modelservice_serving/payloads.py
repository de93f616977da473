"""Request bodies to arrays and arrays to response bodies, shared by both protocols.

The hot path uses orjson and NumPy directly instead of FastAPI's body models: for one small
instance per request, parsing dominates the cost of serving.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import Request
from starlette.responses import Response

from .errors import InvalidInputError, InvalidRequestError, PayloadTooLargeError
from .model import DATATYPES, TensorSpec

_NUMERIC_KINDS = frozenset("biuf")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 when not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLargeError(f"request body of {declared} bytes exceeds {limit} bytes")
        body = await request.body()
    else:  # chunked: count while reading, never buffer past the limit
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"request body must be a JSON object, got {_kind(payload)}")
    return payload


def to_array(values: Any, spec: TensorSpec, what: str) -> npt.NDArray[Any]:
    """Nested JSON lists to an array of the signature's dtype; 422 naming what is wrong."""
    try:
        raw = np.asarray(values)
    except ValueError as exc:  # ragged nesting
        raise InvalidInputError(f"{what} is not a rectangular array: {exc}") from exc
    if raw.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInputError(
            f"{what} must hold numbers for {spec.datatype} input {spec.name!r}, got "
            f"{_element_kind(raw)}"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are caught next
        array = raw.astype(DATATYPES[spec.datatype], copy=False)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(f"{what} holds non-finite numbers (NaN or infinity)")
    return array


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


def _shape_error(array: npt.NDArray[Any], spec: TensorSpec, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} has shape {list(array.shape)}; input {spec.name!r} expects "
        f"{list(spec.shape)} (-1 = any)"
    )


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def json_response(payload: dict[str, Any], status_code: int = 200) -> Response:
    """orjson with NumPy arrays serialised natively (no ``tolist`` round trip)."""
    return Response(
        orjson.dumps(payload, option=_NUMPY), status_code, media_type="application/json"
    )


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _element_kind(raw: npt.NDArray[Any]) -> str:
    if raw.dtype.kind in "US":
        return "strings"
    if raw.dtype.kind == "O":
        return "null or mixed values"
    return str(raw.dtype)
