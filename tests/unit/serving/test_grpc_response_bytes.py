"""``InferCall.serialized``: the ModelInfer answer framed by hand is, byte for byte, what
protobuf serializes for the same message built field by field (and what every gRPC client
parses)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from modelservice_serving import binary
from modelservice_serving.oip import grpc_predict_v2_pb2 as pb
from modelservice_serving.protocol_grpc import InferCall

pytestmark = pytest.mark.unit


def _call(request_id: str, wanted: list[tuple[str, str]], version: str = "3") -> InferCall:
    model: Any = SimpleNamespace(name="digits", version=version)
    return InferCall(model, batcher=None, inputs={}, rows=1, wanted=wanted, request_id=request_id)  # type: ignore[arg-type]


def _protobufs_own(
    request_id: str, version: str, wanted: list[tuple[str, str]], outputs: dict[str, Any]
) -> bytes:
    """The same answer built as a message by protobuf itself: the reference."""
    response = pb.ModelInferResponse(model_name="digits", model_version=version, id=request_id)
    for name, datatype in wanted:
        value = outputs[name]
        response.outputs.add(name=name, datatype=datatype, shape=value.shape)
        response.raw_output_contents.append(binary.to_bytes(value, datatype))
    return response.SerializeToString()


@pytest.mark.parametrize("request_id", ["", "q", "ü" * 200, "id-" + "x" * 20_000])
@pytest.mark.parametrize("rows", [1, 3, 300, 1_000, 5_000])
def test_the_bytes_are_protobufs_own(request_id: str, rows: int) -> None:
    rng = np.random.default_rng(rows)
    outputs = {
        "output_0": rng.random((rows, 10), dtype=np.float32),
        "labels": rng.integers(-(2**40), 2**40, size=(rows,), dtype=np.int64),
        "flags": rng.random((rows, 2, 2)) > 0.5,
    }
    wanted = [("output_0", "FP32"), ("labels", "INT64"), ("flags", "BOOL")]
    call = _call(request_id, wanted)
    expected = _protobufs_own(request_id, "3", wanted, outputs)
    assert call.serialized(outputs) == expected
    assert call.serialized(outputs) == expected  # again, from what was kept
    assert call.response(outputs).SerializeToString() == expected
    parsed = pb.ModelInferResponse.FromString(call.serialized(outputs))
    assert parsed.id == request_id
    assert [tuple(output.shape) for output in parsed.outputs] == [
        (rows, 10), (rows,), (rows, 2, 2)
    ]  # fmt: skip
    restored = np.frombuffer(parsed.raw_output_contents[0], "<f4").reshape(rows, 10)
    np.testing.assert_array_equal(restored, outputs["output_0"])


def test_only_the_outputs_asked_for_in_their_order_and_per_model_version() -> None:
    outputs = {"a": np.ones((2, 1), np.float32), "b": np.zeros((2,), np.int64)}
    for version in ("1", "2"):
        call = _call("r", [("b", "INT64")], version=version)
        assert call.serialized(outputs) == _protobufs_own("r", version, [("b", "INT64")], outputs)
        assert pb.ModelInferResponse.FromString(call.serialized(outputs)).model_version == version
