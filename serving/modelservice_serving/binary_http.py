"""The Open Inference Protocol's HTTP binary tensor data extension (Triton's, KServe's).

A request with an ``Inference-Header-Content-Length: N`` header carries its JSON inference
header in the first N bytes of the body and, after it, the raw bytes of each input whose
``parameters.binary_data_size`` says how many, in the order of ``inputs``. Such an input has
no ``data``: here it gets one, a NumPy view of its bytes, so the V2 handler checks it as it
checks JSON data. Outputs go back as raw bytes the same way when the request asks for it
(``parameters.binary_data`` on an output, or ``parameters.binary_data_output`` on the
request): the response's JSON then names each binary output's ``binary_data_size`` and the
response carries its own ``Inference-Header-Content-Length``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from . import binary
from .answer import Answer, json_answer
from .errors import InvalidInputError, InvalidRequestError

HEADER = "inference-header-content-length"
HEADER_KEY = HEADER.encode()
EXTENSION = "binary_tensor_data"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def parse_infer_body(body: bytes, declared: bytes) -> dict[str, Any]:
    """A body sent with ``Inference-Header-Content-Length: declared``: its JSON header, with
    each binary input's bytes attached as that input's ``data``."""
    if not declared.isdigit():
        shown = declared[:40].decode("latin-1")
        raise InvalidRequestError(f"{HEADER} must be a byte count, got {shown!r}")
    header_length = int(declared)
    if header_length > len(body):
        raise InvalidRequestError(
            f"{HEADER} is {header_length} but the body has only {len(body)} bytes"
        )
    try:
        payload = orjson.loads(body[:header_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the inference header is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequestError("the inference header must be a JSON object")
    _attach_binary_inputs(payload, memoryview(body)[header_length:])
    return payload


def _attach_binary_inputs(payload: dict[str, Any], data: memoryview) -> None:
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        return  # the V2 handler names what is wrong
    offset = 0
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            continue
        size = _parameter(tensor, "binary_data_size", f"inputs[{index}]")
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise InvalidRequestError(
                f"inputs[{index}].parameters.binary_data_size must be a byte count"
            )
        if "data" in tensor:
            raise InvalidRequestError(f"inputs[{index}] has both data and binary_data_size")
        if offset + size > len(data):
            raise InvalidRequestError(
                f"inputs[{index}] declares {size} binary bytes; only {len(data) - offset} remain"
            )
        tensor["data"] = _view(data[offset : offset + size], tensor.get("datatype"), index)
        offset += size
    if offset != len(data):
        raise InvalidRequestError(
            f"the body has {len(data) - offset} bytes after the binary inputs it declares"
        )


def _view(chunk: memoryview, datatype: Any, index: int) -> np.ndarray[Any, Any]:
    dtype = binary.WIRE_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(f"inputs[{index}]: datatype {datatype!r} has no binary form here")
    if len(chunk) % dtype.itemsize:
        raise InvalidInputError(
            f"inputs[{index}] has {len(chunk)} binary bytes, not a whole number of "
            f"{datatype} elements ({dtype.itemsize} bytes each)"
        )
    return np.frombuffer(chunk, dtype)


def _parameter(item: dict[str, Any], name: str, what: str) -> Any:
    parameters = item.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidRequestError(f"{what}.parameters must be an object")
    return parameters.get(name)


def _flag(item: dict[str, Any], name: str, what: str) -> bool:
    value = _parameter(item, name, what)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequestError(f"{what}.parameters.{name} must be true or false")
    return bool(value)


@dataclass(frozen=True)
class BinaryOutputs:
    """Which outputs go back as raw bytes: those flagged, else per the request's default."""

    default: bool = False
    flagged: dict[str, bool] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return self.flagged.get(name, self.default)

    @property
    def any(self) -> bool:
        return self.default or any(self.flagged.values())


def binary_outputs(payload: dict[str, Any]) -> BinaryOutputs:
    """What the request asks for (checked before the model runs)."""
    default = _flag(payload, "binary_data_output", "request")
    flagged: dict[str, bool] = {}
    requested = payload.get("outputs")
    for index, item in enumerate(requested if isinstance(requested, list) else []):
        what = f"outputs[{index}]"
        named = isinstance(item, dict) and isinstance(item.get("name"), str)
        if named and _parameter(item, "binary_data", what) is not None:
            flagged[item["name"]] = _flag(item, "binary_data", what)
    if not default and not flagged:
        return JSON_ONLY
    return BinaryOutputs(default, flagged)


JSON_ONLY = BinaryOutputs()


def infer_answer(response: dict[str, Any], wanted: BinaryOutputs) -> Answer:
    """The V2 response: JSON, or JSON and raw bytes when the request asked for those."""
    if not wanted.any:
        return json_answer(response)
    chunks: list[bytes] = []
    for output in response["outputs"]:
        if wanted.wants(output["name"]):
            raw = binary.to_bytes(output.pop("data"), output["datatype"])
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = orjson.dumps(response, option=_NUMPY)
    return Answer(
        b"".join([header, *chunks]),
        content_type=b"application/octet-stream",
        headers=((HEADER_KEY, b"%d" % len(header)),),
    )
