"""Open Inference Protocol (KServe V2) over REST.

Health (``/v2/health/live``, ``/v2/health/ready``), server and model metadata, model
readiness and ``/v2/models/{name}[/versions/{version}]/infer`` with JSON tensors. Inputs
are checked against the model's signature: names, datatypes and shapes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from . import __version__, binary_http, payloads
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
        "shape": {"type": "array", "items": {"type": "integer"}, "example": [1, 64]},
        "datatype": {"type": "string", "example": "FP32"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}, "example": [0.0] * 64},
    },
}
INFER_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    },
}


def _state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


@router.get("/v2/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Readiness: model loaded and warmed, not draining")
async def ready(request: Request) -> Response:
    is_ready = _state(request).ready
    return payloads.json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": [binary_http.EXTENSION]}


def _model(request: Request, name: str, version: str | None) -> ServedModel:
    model, _ = _state(request).loaded_model(name)
    if version is not None and version != model.version:
        raise ModelNotFoundError(f"{name} version {version}")
    return model


@router.get("/v2/models/{name}", summary="Model metadata")
@router.get("/v2/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    model = _model(request, name, version)
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "tensorflow_savedmodel",
        "inputs": [spec.as_metadata() for spec in model.inputs],
        "outputs": [spec.as_metadata() for spec in model.outputs],
    }


@router.get("/v2/models/{name}/ready", summary="Model readiness")
@router.get("/v2/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
async def model_ready(name: str, request: Request, version: str | None = None) -> Response:
    state = _state(request)
    if name != state.settings.model_name:
        raise ModelNotFoundError(name)
    if state.model is not None and version is not None and version != state.model.version:
        raise ModelNotFoundError(f"{name} version {version}")
    return payloads.json_response({"name": name, "ready": state.ready}, 200 if state.ready else 503)


_INFER_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": INFER_BODY_SCHEMA}},
    }
}


@router.post("/v2/models/{name}/infer", summary="Inference", openapi_extra=_INFER_OPENAPI)
@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference (one version)",
    openapi_extra=_INFER_OPENAPI,
)
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    return await serve_infer(request)


async def serve_infer(request: Request) -> Response:
    """The infer handler proper; also mounted as a fast route (see ``fast_routes``)."""
    name: str = request.path_params["name"]
    version: str | None = request.path_params.get("version")
    state = _state(request)
    model = _model(request, name, version)
    assert state.batcher is not None
    payload = await binary_http.read_infer_request(request, state.settings.max_body_bytes)
    binary_outputs = binary_http.binary_outputs(payload)
    inputs, rows = _decode_inputs(model, payload.get("inputs"))
    wanted = _requested_outputs(model, payload.get("outputs"))
    outputs = await state.batcher.submit(inputs, rows)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if "id" in payload:
        response["id"] = payload["id"]
    response["outputs"] = [_encode(model, name, outputs[name]) for name in wanted]
    return binary_http.infer_response(response, binary_outputs)


def _decode_inputs(model: ServedModel, inputs: Any) -> tuple[Tensors, int]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError("'inputs' must be a non-empty array of tensors")
    specs = {spec.name: spec for spec in model.inputs}
    tensors: Tensors = {}
    rows: set[int] = set()
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise InvalidRequestError(f"inputs[{index}] must be an object")
        missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if missing:
            raise InvalidRequestError(f"inputs[{index}] lacks {', '.join(missing)}")
        name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidInputError(
                f"inputs[{index}] names {name!r}; model inputs are {sorted(specs)}"
            )
        if name in tensors:
            raise InvalidInputError(f"input {name!r} is given twice")
        if datatype != spec.datatype:
            raise InvalidInputError(
                f"input {name!r} has datatype {datatype!r}; the model expects {spec.datatype!r}"
            )
        if not isinstance(shape, list) or not _all_sizes(shape):
            raise InvalidRequestError(f"input {name!r}: 'shape' must be an array of sizes")
        what = f"input {name!r}"
        array = payloads.to_array(tensor["data"], spec, what)
        if array.size != payloads.element_count(shape):
            raise InvalidInputError(
                f"input {name!r} has {array.size} values; shape {shape} needs "
                f"{payloads.element_count(shape)}"
            )
        array = array.reshape(shape)
        rows.add(payloads.check_shape(array, spec, what))
        tensors[name] = array
    absent = sorted(set(specs) - set(tensors))
    if absent:
        raise InvalidInputError(f"missing model inputs: {', '.join(absent)}")
    if len(rows) != 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {sorted(rows)}")
    return tensors, rows.pop()


def _all_sizes(shape: list[Any]) -> bool:
    # type() rather than isinstance(): a JSON true is a bool, an int subclass, not a size.
    return all(type(dim) is int and dim >= 0 for dim in shape)


def _requested_outputs(model: ServedModel, requested: Any) -> list[str]:
    names = [spec.name for spec in model.outputs]
    if requested is None:
        return names
    if not isinstance(requested, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in requested
    ):
        raise InvalidRequestError("'outputs' must be an array of objects with a 'name'")
    wanted = [item["name"] for item in requested]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}; model outputs are {names}")
    return wanted


def _encode(model: ServedModel, name: str, value: Any) -> dict[str, Any]:
    datatype = next(spec.datatype for spec in model.outputs if spec.name == name)
    return {"name": name, "datatype": datatype, "shape": value.shape, "data": value.reshape(-1)}
