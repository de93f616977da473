"""Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

The handlers share the HTTP server's state and batcher: a gRPC request and an HTTP request
can land in the same model call. Inputs come as typed ``contents`` or as
``raw_input_contents`` (checked by :mod:`.binary` before any allocation); outputs always go
back as ``raw_output_contents``, as Triton answers, which every client of the protocol
reads. Triton's ModelStreamInfer takes many requests on one call (cheaper per request than
unary calls in grpcio). Domain errors map to gRPC status codes here, in one place: bad input is
INVALID_ARGUMENT, an unknown model NOT_FOUND, a loading or overloaded server UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy.typing as npt

from . import __version__, binary, payloads
from .batching import DynamicBatcher, Inputs
from .deferred import DEFERRABLE, DeferredTensor
from .errors import InvalidInputError, InvalidRequestError, ModelNotFoundError, ServingError
from .model import ServedModel, Tensors
from .oip import grpc_predict_v2_pb2 as pb
from .state import ServingState

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "modelservice-serving"

_STATUS_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

# The typed field of InferTensorContents that carries each datatype (FP16 travels raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def grpc_status(error: ServingError) -> grpc.StatusCode:
    """The gRPC code of a domain error (its HTTP status says which kind it is)."""
    code = _STATUS_BY_HTTP.get(error.status_code)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if error.status_code < 500 else grpc.StatusCode.INTERNAL


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
Handler = Callable[[RequestT, grpc.aio.ServicerContext[RequestT, ResponseT]], Awaitable[ResponseT]]


def _mapped(
    handler: Callable[[ServingState, RequestT], Awaitable[ResponseT]], state: ServingState
) -> Handler[RequestT, ResponseT]:
    """``handler`` with domain errors turned into status codes, and bugs into INTERNAL."""

    async def call(
        request: RequestT, context: grpc.aio.ServicerContext[RequestT, ResponseT]
    ) -> ResponseT:
        try:
            return await handler(state, request)
        except ServingError as exc:
            metadata = tuple((key.lower(), value) for key, value in (exc.headers or {}).items())
            await context.abort(grpc_status(exc), exc.message, metadata)
        except Exception as exc:
            log.exception("unexpected error", extra={"rpc": getattr(handler, "__name__", "")})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover

    return call


async def server_live(state: ServingState, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=True)


async def server_ready(
    state: ServingState, request: pb.ServerReadyRequest
) -> pb.ServerReadyResponse:
    return pb.ServerReadyResponse(ready=state.ready)


async def server_metadata(
    state: ServingState, request: pb.ServerMetadataRequest
) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[])


async def model_ready(state: ServingState, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
    if request.name != state.settings.model_name:
        raise ModelNotFoundError(request.name)
    model = state.model
    if model is not None and request.version and request.version != model.version:
        raise ModelNotFoundError(f"{request.name} version {request.version}")
    return pb.ModelReadyResponse(ready=state.ready)


def _model(state: ServingState, name: str, version: str) -> ServedModel:
    model, _ = state.loaded_model(name)
    if version and version != model.version:
        raise ModelNotFoundError(f"{name} version {version}")
    return model


async def model_metadata(
    state: ServingState, request: pb.ModelMetadataRequest
) -> pb.ModelMetadataResponse:
    model = _model(state, request.name, request.version)
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=[model.version],
        platform="tensorflow_savedmodel",
        inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in model.inputs],
        outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in model.outputs],
    )


async def model_infer(state: ServingState, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    stats = state.metrics.requests
    stats.in_flight += 1  # the autoscaling signal counts gRPC requests as HTTP ones
    try:
        call = InferCall.admit(state, request)
        return call.response(await call.batcher.submit(call.inputs, call.rows))
    finally:
        stats.in_flight -= 1


class InferCall:
    """One ModelInfer request from admission to response, without any I/O: the handler
    above and the event loop server's own path (:mod:`.grpc_loop`) run the same steps."""

    __slots__ = ("batcher", "inputs", "model", "request_id", "rows", "wanted")

    def __init__(
        self,
        model: ServedModel,
        batcher: DynamicBatcher,
        inputs: Inputs,
        rows: int,
        wanted: list[tuple[str, str]],
        request_id: str,
    ) -> None:
        self.model = model
        self.batcher = batcher
        self.inputs = inputs
        self.rows = rows
        self.wanted = wanted
        self.request_id = request_id

    @classmethod
    def admit(cls, state: ServingState, request: pb.ModelInferRequest) -> InferCall:
        """The request checked against the model and decoded (its 4xx-like errors raised)."""
        model = _model(state, request.model_name, request.model_version)
        batcher = state.batcher
        assert batcher is not None  # loaded_model checked it
        inputs, rows = decode_inputs(model, request)
        wanted = requested_outputs(model, request)
        return cls(model, batcher, inputs, rows, wanted, request.id)

    def response(self, outputs: Tensors) -> pb.ModelInferResponse:
        """The answer as a message, for the handlers that return one (grpcio's server,
        ModelStreamInfer): :meth:`serialized`, parsed."""
        return pb.ModelInferResponse.FromString(self.serialized(outputs))

    def serialized(self, outputs: Tensors) -> bytes:
        """The answer's ModelInferResponse as bytes, without building the message.

        A protobuf message is its fields in order, each a key and, for strings, bytes and
        messages, a length and the content. The parts that repeat call after call (the
        model's name and version, each output's metadata for a number of rows) are
        serialized by protobuf once and kept; the id and the raw outputs are framed here.
        """
        model = self.model
        head = _HEADS.get((model.name, model.version))
        if head is None:
            head = pb.ModelInferResponse(
                model_name=model.name, model_version=model.version
            ).SerializeToString()
            if len(_HEADS) < _CACHE_LIMIT:
                _HEADS[(model.name, model.version)] = head
        parts = [head]
        if self.request_id:
            parts.append(_length_delimited(_ID_KEY, self.request_id.encode()))
        raws = []
        for name, datatype in self.wanted:
            value = outputs[name]
            key = (name, datatype, value.shape)
            metadata = _OUTPUTS.get(key)
            if metadata is None:
                tensor = pb.ModelInferResponse.InferOutputTensor(
                    name=name, datatype=datatype, shape=value.shape
                )
                metadata = _length_delimited(_OUTPUTS_KEY, tensor.SerializeToString())
                if len(_OUTPUTS) < _CACHE_LIMIT:
                    _OUTPUTS[key] = metadata
            parts.append(metadata)
            raws.append(_length_delimited(_RAW_KEY, binary.to_bytes(value, datatype)))
        parts += raws
        return b"".join(parts)


# ModelInferResponse's keys (field number << 3 | 2: length-delimited) and the parts of
# its messages that repeat (by model; by output name, datatype and shape), for serialized().
_ID_KEY, _OUTPUTS_KEY, _RAW_KEY = b"\x1a", b"\x2a", b"\x32"
_CACHE_LIMIT = 256
_HEADS: dict[tuple[str, str], bytes] = {}
_OUTPUTS: dict[tuple[str, str, tuple[int, ...]], bytes] = {}


def _length_delimited(key: bytes, content: bytes) -> bytes:
    """A length-delimited field: its key, the content's length as a varint, the content."""
    length = len(content)
    if length < 0x80:
        return key + bytes((length,)) + content
    varint = bytearray()
    while length >= 0x80:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return key + bytes(varint) + content


async def model_stream_infer(
    state: ServingState,
    requests: AsyncIterator[pb.ModelInferRequest],
    context: grpc.aio.ServicerContext[Any, Any],
) -> None:
    """Triton's ModelStreamInfer: every request on the stream runs as soon as it arrives
    (so one stream fills batches as many unary calls do) and is answered when done, in
    completion order, carrying its id. A request that fails is answered with its
    ``error_message``; the stream goes on."""
    answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()

    async def answer(request: pb.ModelInferRequest) -> None:
        try:
            response = await model_infer(state, request)
            answers.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
        except ServingError as exc:
            failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            answers.put_nowait(
                pb.ModelStreamInferResponse(error_message=exc.message, infer_response=failed)
            )
        except Exception as exc:
            log.exception("unexpected error", extra={"rpc": "ModelStreamInfer"})
            answers.put_nowait(
                pb.ModelStreamInferResponse(error_message=f"internal error: {type(exc).__name__}")
            )

    async def read_all() -> None:
        try:
            async for request in requests:
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(set(running))
        finally:
            answers.put_nowait(None)

    reader = asyncio.create_task(read_all())
    try:
        while (message := await answers.get()) is not None:
            await context.write(message)
        await reader  # its exception, if any, ends the call
    finally:
        reader.cancel()
        for task in running:
            task.cancel()


def decode_inputs(model: ServedModel, request: pb.ModelInferRequest) -> tuple[Inputs, int]:
    """The request's tensors as arrays checked against the signature, and their rows."""
    if not request.inputs:
        raise InvalidRequestError("the request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    specs = model.input_specs
    tensors: dict[str, npt.NDArray[Any] | DeferredTensor] = {}
    rows: set[int] = set()
    for index, tensor in enumerate(request.inputs):
        spec = specs.get(tensor.name)
        what = f"input {tensor.name!r}"
        if spec is None:
            raise InvalidInputError(
                f"inputs[{index}] names {tensor.name!r}; model inputs are {sorted(specs)}"
            )
        if tensor.name in tensors:
            raise InvalidInputError(f"{what} is given twice")
        if tensor.datatype != spec.datatype:
            raise InvalidInputError(
                f"{what} has datatype {tensor.datatype!r}; the model expects {spec.datatype!r}"
            )
        shape = binary.checked_shape(tensor.shape, spec, what)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequestError(f"{what} has contents beside raw_input_contents")
            data = raw[index]
            row_bytes = math.prod(shape[1:]) * binary.wire_dtype(spec, what).itemsize
            if (
                len(request.inputs) == 1
                and spec.datatype in DEFERRABLE
                and (len(data) == shape[0] * row_bytes)
            ):
                # Read with the rest of its batch (deferred.py); the size is checked here.
                tensors[spec.name] = DeferredTensor(
                    data, shape[0], spec, what, row_size=row_bytes, tail=shape[1:]
                )
                rows.add(shape[0])
                continue
            array = binary.from_bytes(data, spec, shape, what)
        else:
            values = _contents(tensor, spec.datatype, shape, what)
            array = payloads.to_array(values, spec, what).reshape(shape)
        rows.add(shape[0])
        tensors[spec.name] = array
    if len(tensors) != len(specs):  # each is a model input, given once: some are absent
        absent = sorted(set(specs) - set(tensors))
        raise InvalidInputError(f"missing model inputs: {', '.join(absent)}")
    if len(rows) != 1:
        raise InvalidInputError(f"inputs disagree on the batch size: {sorted(rows)}")
    return tensors, rows.pop()


def _contents(
    tensor: pb.ModelInferRequest.InferInputTensor, datatype: str, shape: tuple[int, ...], what: str
) -> list[Any]:
    """The typed values of a tensor, as many as its shape needs (checked before copying)."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidRequestError(f"{what}: {datatype} travels only in raw_input_contents")
    values = getattr(tensor.contents, field)
    needed = math.prod(shape)
    if len(values) != needed:
        raise InvalidInputError(
            f"{what} has {len(values)} values in contents.{field}; shape {list(shape)} "
            f"needs {needed}"
        )
    return list(values)


def requested_outputs(model: ServedModel, request: pb.ModelInferRequest) -> list[tuple[str, str]]:
    """(name, datatype) of each output to return: those asked for, else all."""
    datatypes = model.output_datatypes
    if not request.outputs:
        return list(datatypes.items())
    wanted = [output.name for output in request.outputs]
    unknown = sorted(set(wanted) - set(datatypes))
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}; model outputs are {list(datatypes)}")
    return [(name, datatypes[name]) for name in wanted]


def _unary(
    handler: Callable[[ServingState, Any], Awaitable[Any]],
    state: ServingState,
    request_type: Any,
    response_type: Any,
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        _mapped(handler, state),
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


def method_handlers(state: ServingState) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The service's RPCs by method name, bound to ``state``."""
    return {
        "ServerLive": _unary(server_live, state, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": _unary(server_ready, state, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": _unary(model_ready, state, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": _unary(
            server_metadata, state, pb.ServerMetadataRequest, pb.ServerMetadataResponse
        ),
        "ModelMetadata": _unary(
            model_metadata, state, pb.ModelMetadataRequest, pb.ModelMetadataResponse
        ),
        "ModelInfer": _unary(model_infer, state, pb.ModelInferRequest, pb.ModelInferResponse),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            functools.partial(model_stream_infer, state),
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        ),
    }
