"""KServe V1 / TensorFlow Serving REST: ``/v1/models/{name}`` and ``:predict``.

Request: ``{"instances": [row, ...]}`` (row format; a row is a value of the single input
or an object ``{input_name: value}``) or ``{"inputs": columns}`` (columnar; the single
input's batch or an object ``{input_name: batch}``). Response: ``{"predictions": [...]}``
for rows, ``{"outputs": ...}`` for columns, as TensorFlow Serving answers.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
from fastapi import APIRouter, Request
from starlette.responses import Response

from . import openapi, payloads
from .answer import Answer, json_answer
from .batching import DynamicBatcher, Inputs, Reservation
from .deferred import DEFERRABLE, DeferredTensor
from .errors import InvalidInputError, InvalidRequestError, ModelNotFoundError
from .model import ServedModel, Tensors
from .state import ServingState

router = APIRouter(tags=["KServe V1"])

PREDICT_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Row format (`instances`) or columnar format (`inputs`), one of the two.",
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "description": "rows: values of the single input, or objects {input_name: value}",
            "items": {},
            "example": [[0.0] * 64],
        },
        "inputs": {"description": "a batch of the single input, or {input_name: batch}"},
        "signature_name": {"type": "string"},
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
PREDICT_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "`predictions` (one per row) for row format, `outputs` for columnar format",
    "properties": {
        "predictions": {"type": "array"},
        "outputs": {"description": "the single output's batch, or {output_name: batch}"},
    },
    "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
}


def _state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


@router.get(
    "/v1/models",
    summary="List served models",
    responses=openapi.responses(
        ok={
            "type": "object",
            "required": ["models"],
            "properties": {"models": {"type": "array", "items": {"type": "string"}}},
        }
    ),
)
async def list_models(request: Request) -> Response:
    return payloads.json_response({"models": [_state(request).settings.model_name]})


@router.get(
    "/v1/models/{name}",
    summary="Model status: 200 when ready, 503 before",
    responses=openapi.readiness(openapi.MODEL_READY_SCHEMA, 404),
)
async def model_status(name: str, request: Request) -> Response:
    state = _state(request)
    if name != state.settings.model_name:
        raise ModelNotFoundError(name)
    return payloads.json_response({"name": name, "ready": state.ready}, 200 if state.ready else 503)


@router.post(
    "/v1/models/{name}:predict",
    summary="Predict (row or columnar format)",
    openapi_extra=openapi.request_body(PREDICT_BODY_SCHEMA),
    responses=openapi.responses(400, 404, 408, 413, 422, 431, 503, ok=PREDICT_RESPONSE_SCHEMA),
)
async def predict(name: str, request: Request) -> Response:
    # Documents the route; requests are served by the fast path (``fastpath.py``).
    answer = await serve_predict(_state(request), name, payloads.RequestUpload(request))
    return answer.response()


async def serve_predict(state: ServingState, name: str, upload: payloads.Upload) -> Answer:
    """The predict handler proper, whichever transport reads the request."""
    call = PredictCall.admit(state, name, payloads.declared_length(upload))
    try:
        inputs, rows = call.decode(await upload.body(state.settings.max_body_bytes))
    finally:
        call.reservation.release()
    return call.answer(await call.batcher.submit(inputs, rows))


class PredictCall:
    """One predict request from admission to answer, without any I/O.

    :meth:`admit` (before the body is read: the model exists and the queue takes the rows
    its ``Content-Length`` suggests, else 503), :meth:`decode` (the body to tensors),
    then the batcher, then :meth:`answer`. The ASGI handler above and the HTTP protocol's
    inference path (:mod:`.inference_protocol`) run the same steps.
    """

    __slots__ = ("batcher", "model", "reservation", "row_format")

    def __init__(self, model: ServedModel, batcher: DynamicBatcher, reservation: Reservation):
        self.model = model
        self.batcher = batcher
        self.reservation = reservation
        self.row_format = True

    @classmethod
    def admit(cls, state: ServingState, name: str, declared: int | None) -> PredictCall:
        model, batcher = state.loaded_model(name)
        return cls(model, batcher, batcher.reserve(declared))

    def decode(self, body: bytes) -> tuple[Inputs, int]:
        """The request's tensors and batch size (releases nothing: the caller does)."""
        payload = payloads.parse_json_object(body)
        inputs, rows, self.row_format = _decode(
            self.model, payload, payloads.may_hold_booleans(body)
        )
        self.batcher.learn(len(body), rows)
        return inputs, rows

    def answer(self, outputs: Tensors) -> Answer:
        if self.row_format:
            return json_answer({"predictions": _as_rows(outputs)})
        only = next(iter(outputs.values())) if len(outputs) == 1 else None
        return json_answer({"outputs": only if only is not None else outputs})


def _decode(
    model: ServedModel, payload: dict[str, Any], booleans_possible: bool
) -> tuple[Inputs, int, bool]:
    """The request's tensors, their batch size, and whether it came in row format."""
    if "signature_name" in payload and not isinstance(payload["signature_name"], str):
        raise InvalidRequestError("'signature_name' must be a string")
    if "instances" in payload:
        if "inputs" in payload:
            raise InvalidRequestError("send either 'instances' or 'inputs', not both")
        return (*_from_instances(model, payload["instances"], booleans_possible), True)
    if "inputs" in payload:
        return (*_from_columns(model, payload["inputs"], booleans_possible), False)
    raise InvalidRequestError(
        "request needs 'instances' (row format) or 'inputs' (columnar format)"
    )


def _from_instances(
    model: ServedModel, instances: Any, booleans_possible: bool
) -> tuple[Inputs, int]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequestError("'instances' must be a non-empty array of rows")
    if isinstance(instances[0], dict):
        columns: dict[str, list[Any]] = {spec.name: [] for spec in model.inputs}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or set(instance) != set(columns):
                raise InvalidInputError(
                    f"instances[{index}] must be an object with exactly the inputs "
                    f"{sorted(columns)}"
                )
            for input_name, value in instance.items():
                columns[input_name].append(value)
        return _checked(model, columns, "instances", booleans_possible)
    if len(model.inputs) != 1:
        raise InvalidInputError(
            f"model has inputs {[spec.name for spec in model.inputs]}: send each instance as an "
            "object keyed by input name"
        )
    return _checked(model, {model.inputs[0].name: instances}, "instances", booleans_possible)


def _from_columns(model: ServedModel, columns: Any, booleans_possible: bool) -> tuple[Inputs, int]:
    if isinstance(columns, dict):
        expected = {spec.name for spec in model.inputs}
        if set(columns) != expected:
            raise InvalidInputError(f"'inputs' must name exactly the inputs {sorted(expected)}")
        return _checked(model, columns, "inputs", booleans_possible)
    if len(model.inputs) != 1:
        raise InvalidInputError("'inputs' must be an object keyed by input name for this model")
    return _checked(model, {model.inputs[0].name: columns}, "inputs", booleans_possible)


def _checked(
    model: ServedModel, columns: dict[str, Any], field: str, booleans_possible: bool
) -> tuple[Inputs, int]:
    if len(model.inputs) == 1 and not booleans_possible:
        spec = model.inputs[0]
        values = columns[spec.name]
        if spec.datatype in DEFERRABLE and type(values) is list and values:
            # Converted with the rest of its batch (deferred.py); rows known already.
            return {spec.name: DeferredTensor(values, len(values), spec, f"'{field}'")}, len(values)
    tensors: dict[str, npt.NDArray[Any]] = {}
    rows: set[int] = set()
    for spec in model.inputs:
        what = f"'{field}'" if len(model.inputs) == 1 else f"'{field}' for {spec.name!r}"
        array: npt.NDArray[Any] = payloads.to_array(
            columns[spec.name], spec, what, booleans_possible=booleans_possible
        )
        rows.add(payloads.check_shape(array, spec, what))
        tensors[spec.name] = array
    if len(rows) != 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {sorted(rows)}")
    return tensors, rows.pop()


def _as_rows(outputs: Tensors) -> Any:
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    names = list(outputs)
    count = len(outputs[names[0]])
    return [{name: outputs[name][index] for name in names} for index in range(count)]
