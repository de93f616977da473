"""Open Inference Protocol (KServe V2) over REST.

Health (``/v2/health/live``, ``/v2/health/ready``), server and model metadata, model
readiness and ``/v2/models/{name}[/versions/{version}]/infer`` with JSON tensors. Inputs
are checked against the model's signature: names, datatypes and shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
from fastapi import APIRouter, Request
from starlette.responses import Response

from . import __version__, binary_http, openapi, payloads
from .answer import Answer
from .batching import DynamicBatcher, Inputs, Reservation
from .deferred import DEFERRABLE, DeferredTensor
from .errors import InvalidInputError, InvalidRequestError, ModelNotFoundError
from .model import ServedModel, Tensors
from .state import ServingState

router = APIRouter(tags=["Open Inference Protocol (V2)"])

SERVER_NAME = "modelservice-serving"

_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "example": "inputs"},
        "shape": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "integer", "minimum": 0},
            "example": [1, 64],
        },
        "datatype": {"type": "string", "enum": openapi.DATATYPES, "example": "FP32"},
        "parameters": {"type": "object"},
        "data": {
            "type": "array",
            "description": "row-major values, flat or nested as the shape",
            "items": {},
            "example": [0.0] * 64,
        },
    },
}
INFER_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "minItems": 1,
            "description": "the outputs to return (all when absent)",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_OUTPUT_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {"type": "number"}},
    },
}
INFER_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _OUTPUT_TENSOR_SCHEMA},
    },
}
_TENSOR_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
MODEL_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_METADATA_SCHEMA},
        "outputs": {"type": "array", "items": _TENSOR_METADATA_SCHEMA},
    },
}
SERVER_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}


def _state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


@router.get(
    "/v2/health/live",
    summary="Liveness",
    responses=openapi.responses(
        ok={"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
    ),
)
async def live() -> Response:
    return payloads.json_response({"live": True})


@router.get(
    "/v2/health/ready",
    summary="Readiness: model loaded and warmed, not draining",
    responses=openapi.readiness(openapi.READY_SCHEMA),
)
async def ready(request: Request) -> Response:
    is_ready = _state(request).ready
    return payloads.json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get(
    "/v2", summary="Server metadata", responses=openapi.responses(ok=SERVER_METADATA_SCHEMA)
)
async def server_metadata() -> Response:
    return payloads.json_response(
        {"name": SERVER_NAME, "version": __version__, "extensions": [binary_http.EXTENSION]}
    )


def _model(request: Request, name: str, version: str | None) -> ServedModel:
    return _model_of(_state(request), name, version)


def _model_of(state: ServingState, name: str, version: str | None) -> ServedModel:
    model, _ = state.loaded_model(name)
    if version is not None and version != model.version:
        raise ModelNotFoundError(f"{name} version {version}")
    return model


_METADATA_RESPONSES = openapi.responses(404, 503, ok=MODEL_METADATA_SCHEMA)


@router.get("/v2/models/{name}", summary="Model metadata", responses=_METADATA_RESPONSES)
async def model_metadata(request: Request, name: str) -> Response:
    return _metadata(_model(request, name, None))


@router.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model metadata (one version)",
    responses=_METADATA_RESPONSES,
)
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return _metadata(_model(request, name, version))


def _metadata(model: ServedModel) -> Response:
    return payloads.json_response(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": "tensorflow_savedmodel",
            "inputs": [spec.as_metadata() for spec in model.inputs],
            "outputs": [spec.as_metadata() for spec in model.outputs],
        }
    )


_READY_RESPONSES = openapi.readiness(openapi.MODEL_READY_SCHEMA, 404)


@router.get("/v2/models/{name}/ready", summary="Model readiness", responses=_READY_RESPONSES)
async def model_ready(request: Request, name: str) -> Response:
    return _readiness(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model readiness (one version)",
    responses=_READY_RESPONSES,
)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return _readiness(request, name, version)


def _readiness(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    if name != state.settings.model_name:
        raise ModelNotFoundError(name)
    if state.model is not None and version is not None and version != state.model.version:
        raise ModelNotFoundError(f"{name} version {version}")
    return payloads.json_response({"name": name, "ready": state.ready}, 200 if state.ready else 503)


_INFER_OPENAPI = openapi.request_body(INFER_BODY_SCHEMA)
_INFER_RESPONSES = openapi.responses(400, 404, 408, 413, 422, 431, 503, ok=INFER_RESPONSE_SCHEMA)


@router.post(
    "/v2/models/{name}/infer",
    summary="Inference",
    openapi_extra=_INFER_OPENAPI,
    responses=_INFER_RESPONSES,
)
async def infer(request: Request, name: str) -> Response:
    # Documents the route; requests are served by the fast path (``fastpath.py``).
    answer = await serve_infer(_state(request), name, None, payloads.RequestUpload(request))
    return answer.response()


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference (one version)",
    openapi_extra=_INFER_OPENAPI,
    responses=_INFER_RESPONSES,
)
async def infer_version(request: Request, name: str, version: str) -> Response:
    answer = await serve_infer(_state(request), name, version, payloads.RequestUpload(request))
    return answer.response()


async def serve_infer(
    state: ServingState, name: str, version: str | None, upload: payloads.Upload
) -> Answer:
    """The infer handler proper, whichever transport reads the request."""
    call = InferCall.admit(
        state,
        name,
        version,
        payloads.declared_length(upload),
        upload.header(binary_http.HEADER_KEY),
    )
    try:
        inputs, rows = call.decode(await upload.body(state.settings.max_body_bytes))
    finally:
        call.reservation.release()
    return call.answer(await call.batcher.submit(inputs, rows))


class InferCall:
    """One infer request from admission to answer, without any I/O.

    :meth:`admit` (before the body is read: the model and version exist and the queue
    takes the rows its ``Content-Length`` suggests, else 503), :meth:`decode` (the body,
    JSON or the binary tensor extension, to tensors), then the batcher, then
    :meth:`answer`. The ASGI handler above and the HTTP protocol's inference path
    (:mod:`.inference_protocol`) run the same steps.
    """

    __slots__ = (
        "batcher", "binary_header", "binary_outputs", "max_body_bytes", "model", "request_id",
        "reservation", "wanted",
    )  # fmt: skip

    def __init__(
        self,
        model: ServedModel,
        batcher: DynamicBatcher,
        reservation: Reservation,
        binary_header: bytes | None,
        max_body_bytes: int,
    ) -> None:
        self.model = model
        self.batcher = batcher
        self.reservation = reservation
        self.binary_header = binary_header
        self.max_body_bytes = max_body_bytes
        self.wanted: list[str] = []
        self.binary_outputs = binary_http.JSON_ONLY
        self.request_id: Any = None

    @classmethod
    def admit(
        cls,
        state: ServingState,
        name: str,
        version: str | None,
        declared: int | None,
        binary_header: bytes | None,
    ) -> InferCall:
        model = _model_of(state, name, version)
        batcher = state.batcher
        assert batcher is not None
        return cls(
            model, batcher, batcher.reserve(declared), binary_header, state.settings.max_body_bytes
        )

    def decode(self, body: bytes) -> tuple[Inputs, int]:
        """The request's tensors and batch size (releases nothing: the caller does)."""
        declared = self.binary_header
        if declared is None:
            payload = payloads.parse_json_object(body)
            header, max_values = body, max_elements(self.max_body_bytes)
        else:  # the binary tensor extension: a JSON header, then raw bytes (1 or more a value)
            payload = binary_http.parse_infer_body(body, declared)
            header, max_values = body[: int(declared)], self.max_body_bytes + 1
        _check_envelope(payload)
        self.binary_outputs = binary_http.binary_outputs(payload)
        limits = _Limits(
            max_elements=max_values, booleans_possible=payloads.may_hold_booleans(header)
        )
        inputs, rows = _decode_inputs(self.model, payload.get("inputs"), limits)
        self.wanted = _requested_outputs(self.model, payload.get("outputs", _ALL_OUTPUTS))
        self.request_id = payload.get("id")
        self.batcher.learn(len(body), rows)
        return inputs, rows

    def answer(self, outputs: Tensors) -> Answer:
        model = self.model
        response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if self.request_id is not None:
            response["id"] = self.request_id
        response["outputs"] = [_encode(model, name, outputs[name]) for name in self.wanted]
        return binary_http.infer_answer(response, self.binary_outputs)


def max_elements(max_body_bytes: int) -> int:
    """The most values a body of ``max_body_bytes`` can hold: each takes a digit and a comma."""
    return max_body_bytes // 2 + 1


@dataclass(frozen=True)
class _Limits:
    max_elements: int
    booleans_possible: bool


def _check_envelope(payload: dict[str, Any]) -> None:
    """The request's own fields, typed as the protocol (and our OpenAPI) says."""
    if "id" in payload and not isinstance(payload["id"], str):
        raise InvalidRequestError("'id' must be a string")
    if "parameters" in payload and not isinstance(payload["parameters"], dict):
        raise InvalidRequestError("'parameters' must be an object")


def _decode_inputs(model: ServedModel, inputs: Any, limits: _Limits) -> tuple[Inputs, int]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError("'inputs' must be a non-empty array of tensors")
    specs = {spec.name: spec for spec in model.inputs}
    tensors: dict[str, npt.NDArray[Any] | DeferredTensor] = {}
    rows: set[int] = set()
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise InvalidRequestError(f"inputs[{index}] must be an object")
        missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if missing:
            raise InvalidRequestError(f"inputs[{index}] lacks {', '.join(missing)}")
        name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
        if not isinstance(name, str):
            raise InvalidRequestError(f"inputs[{index}].name must be a string")
        if "parameters" in tensor and not isinstance(tensor["parameters"], dict):
            raise InvalidRequestError(f"inputs[{index}].parameters must be an object")
        spec = specs.get(name)
        if spec is None:
            raise InvalidInputError(
                f"inputs[{index}] names {name!r}; model inputs are {sorted(specs)}"
            )
        if name in tensors:
            raise InvalidInputError(f"input {name!r} is given twice")
        if datatype != spec.datatype:
            given = repr(datatype)[:40]  # any JSON value: cut short
            raise InvalidInputError(
                f"input {name!r} has datatype {given}; the model expects {spec.datatype!r}"
            )
        what = f"input {name!r}"
        # Everything the shape says is checked before the data is converted.
        shape = payloads.declared_shape(shape, spec, what, limits.max_elements)
        data = tensor["data"]
        rows.add(shape[0])
        if _deferrable(data, spec.datatype, shape, limits, len(inputs)):
            row_size = math.prod(shape[1:])
            # Converted with the rest of its batch (deferred.py): a flat list of the
            # declared size; anything else in it fails there and is converted alone.
            tensors[name] = DeferredTensor(
                data, shape[0], spec, what, row_size=row_size, tail=tuple(shape[1:])
            )
            continue
        array = payloads.to_array(data, spec, what, booleans_possible=limits.booleans_possible)
        tensors[name] = payloads.reshaped(array, shape, what)
    absent = sorted(set(specs) - set(tensors))
    if absent:
        raise InvalidInputError(f"missing model inputs: {', '.join(absent)}")
    if len(rows) != 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {sorted(rows)}")
    return tensors, rows.pop()


def _deferrable(
    data: Any, datatype: str, shape: list[int], limits: _Limits, tensor_count: int
) -> bool:
    """Whether a tensor's conversion can wait for its batch (:mod:`.deferred`)."""
    return (
        tensor_count == 1
        and not limits.booleans_possible
        and datatype in DEFERRABLE
        and type(data) is list
        and len(data) == math.prod(shape)
        and len(data) > 0
        and type(data[0]) in (int, float)
    )


_ALL_OUTPUTS = object()


def _requested_outputs(model: ServedModel, requested: Any) -> list[str]:
    names = [spec.name for spec in model.outputs]
    if requested is _ALL_OUTPUTS:  # absent; an explicit null is no array and is refused
        return names
    if (
        not isinstance(requested, list)
        or not requested
        or not all(
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("parameters", {}), dict)
            for item in requested
        )
    ):
        raise InvalidRequestError(
            "'outputs' must be a non-empty array of objects with a 'name' (omit it for all outputs)"
        )
    wanted = [item["name"] for item in requested]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}; model outputs are {names}")
    if len(set(wanted)) != len(wanted):
        raise InvalidInputError(f"outputs {wanted} name an output twice")
    return wanted


def _encode(model: ServedModel, name: str, value: Any) -> dict[str, Any]:
    datatype = next(spec.datatype for spec in model.outputs if spec.name == name)
    return {"name": name, "datatype": datatype, "shape": value.shape, "data": value.reshape(-1)}
