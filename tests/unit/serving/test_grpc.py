"""The Open Inference Protocol over gRPC against a real server on loopback.

The protocol tests use the server's own message classes over a ``grpc.aio`` channel; the
client tests run tritonclient's and KServe's gRPC clients in a process of their own
(``oip_grpc_clients.py``: they define the same protobuf messages as the server). Every
test runs against both gRPC servers: the event loop's own (the default) and grpcio's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_tools import protoc
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from modelservice_serving import protocol_grpc
from modelservice_serving.grpc_server import GrpcListener
from modelservice_serving.model import ServedModel
from modelservice_serving.oip import grpc_predict_v2_pb2 as pb
from modelservice_serving.settings import ServeSettings

from .conftest import (
    MODEL_NAME,
    RunningServer,
    ServerFactory,
    TrainedModel,
    running_server,
    serving_env,
)

pytestmark = pytest.mark.unit

ROWS = load_digits().data[:8].astype(np.float32)
CLIENTS = Path(__file__).with_name("oip_grpc_clients.py")
PROTO = Path(protocol_grpc.__file__).parent / "oip" / "grpc_predict_v2.proto"


class Stub:
    """The RPCs of the service as plain async calls (no generated service code needed)."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()):
        self._channel = channel
        self.metadata = metadata

    async def __call__(self, method: str, request: Any, response_type: Any) -> Any:
        call = self._channel.unary_unary(
            f"/{protocol_grpc.SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await call(request, timeout=30, metadata=self.metadata)

    async def health(self, service: str) -> Any:
        call = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        return (await call(health_pb2.HealthCheckRequest(service=service), timeout=30)).status

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        response: pb.ModelInferResponse = await self("ModelInfer", request, pb.ModelInferResponse)
        return response


@pytest.fixture(params=["loop", "grpcio"])
def grpc_server(request: pytest.FixtureRequest) -> str:
    """Which gRPC server the test's servers run (``--grpc-server``)."""
    server: str = request.param
    return server


@pytest.fixture
def server_factory(
    served_model: ServedModel, trained_model: TrainedModel, grpc_server: str
) -> ServerFactory:
    def factory(**overrides: Any) -> Any:
        return running_server(
            served_model, trained_model.model_dir, **{"grpc_server": grpc_server, **overrides}
        )

    return factory


@pytest.fixture
def default_server(server_factory: ServerFactory) -> Iterator[RunningServer]:
    with server_factory() as server:
        yield server


async def _stub(server: RunningServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.state.grpc_port}") as channel:
        yield Stub(channel)


@pytest.fixture
async def stub(default_server: RunningServer) -> AsyncIterator[Stub]:
    async for value in _stub(default_server):
        yield value


def raw_request(rows: np.ndarray[Any, Any], **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL_NAME, **fields)
    request.inputs.add(name="inputs", datatype="FP32", shape=rows.shape)
    request.raw_input_contents.append(rows.astype("<f4").tobytes())
    return request


def outputs_of(response: pb.ModelInferResponse) -> np.ndarray[Any, Any]:
    (output,) = response.outputs
    assert output.name == "output_0"
    assert output.datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(tuple(output.shape))


async def test_health_and_metadata(stub: Stub) -> None:
    assert (await stub("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)).live
    assert (await stub("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)).ready
    ready = await stub("ModelReady", pb.ModelReadyRequest(name=MODEL_NAME), pb.ModelReadyResponse)
    assert ready.ready
    server = await stub("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    assert server.name == "modelservice-serving"
    metadata = await stub(
        "ModelMetadata", pb.ModelMetadataRequest(name=MODEL_NAME), pb.ModelMetadataResponse
    )
    assert metadata.name == MODEL_NAME
    assert list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("inputs", "FP32", [-1, 64])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("output_0", "FP32", [-1, 10])
    ]


async def test_infer_raw_and_typed_contents_agree_with_http(
    stub: Stub, default_server: RunningServer
) -> None:
    raw = await stub.infer(raw_request(ROWS, id="g-1"))
    assert raw.id == "g-1"
    assert raw.model_name == MODEL_NAME
    assert raw.model_version == "1"
    typed_request = pb.ModelInferRequest(model_name=MODEL_NAME, model_version="1")
    typed_request.inputs.add(
        name="inputs", datatype="FP32", shape=ROWS.shape
    ).contents.fp32_contents.extend(ROWS.ravel().tolist())
    typed_request.outputs.add(name="output_0")
    typed = await stub.infer(typed_request)
    async with httpx.AsyncClient(base_url=default_server.url) as http:
        body = {
            "inputs": [
                {"name": "inputs", "shape": [8, 64], "datatype": "FP32", "data": ROWS.tolist()}
            ]
        }
        over_http = (await http.post(f"/v2/models/{MODEL_NAME}/infer", json=body)).json()
    expected = np.asarray(over_http["outputs"][0]["data"]).reshape(8, 10)
    np.testing.assert_allclose(outputs_of(raw), expected, rtol=1e-5)
    np.testing.assert_allclose(outputs_of(typed), expected, rtol=1e-5)
    assert (np.argmax(expected, axis=1) == load_digits().target[:8]).mean() >= 0.6


def _typed(values: list[float], shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="inputs", datatype=datatype, shape=shape).contents.fp32_contents.extend(
        values
    )
    return request


def _raw(data: bytes, shape: list[int], count: int = 1) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="inputs", datatype="FP32", shape=shape)
    request.raw_input_contents.extend([data] * count)
    return request


ROW = np.zeros(64, "<f4").tobytes()
INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_REQUESTS = [
    ("unknown model", pb.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "'nope'"),
    (
        "unknown version",
        pb.ModelInferRequest(model_name=MODEL_NAME, model_version="9"),
        grpc.StatusCode.NOT_FOUND,
        "version 9",
    ),
    ("no inputs", pb.ModelInferRequest(model_name=MODEL_NAME), INVALID, "no inputs"),
    ("wrong datatype", _typed([0.0] * 64, [1, 64], "INT64"), INVALID, "'INT64'"),
    ("wrong shape", _typed([0.0] * 32, [1, 32]), INVALID, "expects [-1, 64]"),
    ("no rows", _typed([], [0, 64]), INVALID, "no rows"),
    ("negative size", _raw(ROW, [-1, 64]), INVALID, "shape [-1, 64]"),
    ("rank 65", _raw(ROW, [1] * 65), INVALID, "of rank 65"),
    ("overflowing shape", _raw(ROW, [2**62, 2**62]), INVALID, "expects [-1, 64]"),
    ("huge batch", _raw(ROW, [2**62, 64]), INVALID, "needs"),
    ("values and shape disagree", _typed([0.0] * 64, [2, 64]), INVALID, "needs 128"),
    ("raw bytes short", _raw(ROW[:-4], [1, 64]), INVALID, "252 bytes"),
    ("raw entries vs inputs", _raw(ROW, [1, 64], count=2), INVALID, "2 entries for 1 inputs"),
    ("raw not finite", _raw(np.full(64, np.nan, "<f4").tobytes(), [1, 64]), INVALID, "NaN"),
    ("typed not finite", _typed([float("inf")] * 64, [1, 64]), INVALID, "non-finite"),
]


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_requests_get_a_client_status(
    stub: Stub, request_: pb.ModelInferRequest, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.infer(request_)
    assert failed.value.code() == code, failed.value.details()
    assert fragment in (failed.value.details() or "")


async def test_more_bad_requests(stub: Stub) -> None:
    both = _raw(ROW, [1, 64])
    both.inputs[0].contents.fp32_contents.extend([0.0] * 64)
    unknown_input = _raw(ROW, [1, 64])
    unknown_input.inputs[0].name = "pixels"
    twice = _raw(ROW, [1, 64], count=2)
    twice.inputs.add(name="inputs", datatype="FP32", shape=[1, 64])
    unknown_output = _raw(ROW, [1, 64])
    unknown_output.outputs.add(name="logits")
    cases = [
        (both, "beside raw_input_contents"),
        (unknown_input, "'pixels'"),
        (twice, "given twice"),
        (unknown_output, "logits"),
    ]
    for request, fragment in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.infer(request)
        assert failed.value.code() == INVALID, failed.value.details()
        assert fragment in (failed.value.details() or "")


async def test_limits_load_states_and_health_checks(server_factory: ServerFactory) -> None:
    gate = threading.Event()
    with server_factory(gate=gate, wait_ready=False, max_queue=4, max_body_bytes=4096) as server:
        async for stub in _stub(server):
            # Loading: live, not ready (gRPC health says the same, for grpc probes); inference
            # is UNAVAILABLE (retry later), not an error.
            assert (await stub("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)).live
            ready = await stub("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)
            assert not ready.ready
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.infer(raw_request(ROWS[:1]))
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            for service in ("", "ready", MODEL_NAME):
                assert await stub.health(service) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await stub.health("live") == health_pb2.HealthCheckResponse.SERVING
            gate.set()
            await asyncio.to_thread(_wait_ready, server)
            for service in ("", "ready", MODEL_NAME, "live"):
                assert await stub.health(service) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.health("other")
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            # More rows than the queue holds: too large, whatever the load.
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.infer(raw_request(ROWS[:5]))
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 4 fit" in (failed.value.details() or "")
            # A message above --max-body-bytes is refused by the transport.
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.infer(raw_request(np.zeros((20, 64), np.float32)))
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.infer(raw_request(ROWS[:4]))).outputs[0].shape == [4, 10]


async def test_calls_past_the_grpc_in_flight_cap_are_refused_at_once(
    server_factory: ServerFactory,
) -> None:
    # Batches wait up to 2 s to fill: the first two calls are held in the batcher meanwhile.
    with server_factory(grpc_max_in_flight=2, max_batch_size=64, max_latency_ms=2000) as server:
        async for stub in _stub(server):
            held = [asyncio.create_task(stub.infer(raw_request(ROWS[:1]))) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are in the server now
            assert not any(task.done() for task in held)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.infer(raw_request(ROWS[:1]))
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 1.0  # not queued behind the held calls
            for response in await asyncio.gather(*held):  # the held calls are still answered
                assert outputs_of(response).shape == (1, 10)
            # Below the cap again: served.
            assert outputs_of(await stub.infer(raw_request(ROWS[:1]))).shape == (1, 10)


def _grpc_samples(server: RunningServer) -> dict[tuple[str, str, str], float]:
    """``grpc_server_handled_total`` and the handling histogram's count, by method and code."""
    body, _ = server.state.metrics.exposition()
    return {
        (sample.name, sample.labels["grpc_method"], sample.labels["grpc_code"]): sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name.startswith("grpc_server_")
        for sample in family.samples
        if sample.name.endswith(("_total", "_count"))
    }


async def test_calls_are_counted_and_inference_is_in_flight_for_autoscaling(
    server_factory: ServerFactory,
) -> None:
    # Batches wait up to 2 s to fill: the held calls are in flight meanwhile.
    with server_factory(max_batch_size=64, max_latency_ms=2000) as server:
        async for stub in _stub(server):
            assert server.state.metrics.requests.in_flight == 0
            held = [asyncio.create_task(stub.infer(raw_request(ROWS[:1]))) for _ in range(3)]
            await asyncio.sleep(0.5)
            # The gauge KEDA scales on counts gRPC inference as it counts HTTP's.
            assert server.state.metrics.requests.in_flight == 3
            await asyncio.gather(*held)
            assert server.state.metrics.requests.in_flight == 0
            absent = raw_request(ROWS[:1])
            absent.model_name = "absent"
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.infer(absent)
            await stub("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    samples = _grpc_samples(server)
    assert samples[("grpc_server_handled_total", "ModelInfer", "OK")] == 3
    assert samples[("grpc_server_handled_total", "ModelInfer", "NotFound")] == 1
    assert samples[("grpc_server_handled_total", "ServerLive", "OK")] >= 1
    assert samples[("grpc_server_handling_seconds_count", "ModelInfer", "OK")] == 3
    body, _ = server.state.metrics.exposition()
    assert b'grpc_service="inference.GRPCInferenceService"' in body
    assert b'grpc_type="unary"' in body


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_calls_are_served(
    default_server: RunningServer, compression: grpc.Compression
) -> None:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{default_server.state.grpc_port}", compression=compression
    ) as channel:
        response = await Stub(channel).infer(raw_request(ROWS[:3]))
    assert outputs_of(response).shape == (3, 10)


async def test_a_call_past_its_deadline_never_reaches_the_model(
    server_factory: ServerFactory,
) -> None:
    with server_factory(max_batch_size=64, max_latency_ms=1500) as server:
        async for stub in _stub(server):
            call = stub._channel.unary_unary(
                f"/{protocol_grpc.SERVICE}/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(raw_request(ROWS[:1]), timeout=0.2)
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(1.7)  # past the batching window: the row was dropped
            assert server.counter.batches == []
            assert server.state.metrics.requests.in_flight == 0
            assert outputs_of(await stub.infer(raw_request(ROWS[:2]))).shape == (2, 10)
            assert server.counter.batches == [2]


def _wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + 30
    while not server.state.ready:
        assert time.monotonic() < deadline, "the model never became ready"
        time.sleep(0.02)


async def test_grpc_and_http_requests_share_a_batch(server_factory: ServerFactory) -> None:
    with server_factory(max_batch_size=3, max_latency_ms=2000) as server:
        async for stub in _stub(server):
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                body = {"instances": ROWS[:1].tolist()}
                http_call = http.post(f"/v1/models/{MODEL_NAME}:predict", json=body)
                responses = await asyncio.gather(http_call, stub.infer(raw_request(ROWS[1:3])))
        assert responses[0].status_code == 200
        assert outputs_of(responses[1]).shape == (2, 10)
        # One model call of three rows: the batch filled from both protocols at once.
        assert server.counter.batches == [3]


def _run_client(name: str, server: RunningServer) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(CLIENTS), name, f"127.0.0.1:{server.state.grpc_port}", MODEL_NAME],
        capture_output=True, text=True, env=serving_env(), timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


async def _expected(server: RunningServer) -> np.ndarray[Any, Any]:
    async for stub in _stub(server):
        return outputs_of(await stub.infer(raw_request(ROWS)))
    raise AssertionError("no channel")


async def test_tritonclient_grpc_works_unchanged(default_server: RunningServer) -> None:
    result = await asyncio.to_thread(_run_client, "triton", default_server)
    assert (result["live"], result["ready"], result["model_ready"]) == (True, True, True)
    assert result["server"]["name"] == "modelservice-serving"
    assert result["metadata"]["inputs"] == [
        {"name": "inputs", "datatype": "FP32", "shape": ["-1", "64"]}
    ]
    assert result["id"] == "r-1"
    np.testing.assert_allclose(result["outputs"], await _expected(default_server), rtol=1e-5)
    # ModelStreamInfer: each row answered under its id; the bad request answered with its
    # error while the stream goes on.
    np.testing.assert_allclose(result["streamed"]["outputs"], result["outputs"], rtol=1e-5)
    (error,) = result["streamed"]["errors"]
    assert "expects [-1, 64]" in error
    assert result["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "wrong_datatype": "StatusCode.INVALID_ARGUMENT",
        "wrong_shape": "StatusCode.INVALID_ARGUMENT",
    }


async def test_kserve_grpc_client_works_unchanged(default_server: RunningServer) -> None:
    result = await asyncio.to_thread(_run_client, "kserve", default_server)
    assert (result["live"], result["ready"], result["model_ready"]) == (True, True, True)
    assert result["id"] == "k-1"
    expected = await _expected(default_server)
    np.testing.assert_allclose(result["outputs"], expected, rtol=1e-5)
    np.testing.assert_allclose(result["typed_outputs"], expected, rtol=1e-5)


async def test_a_taken_port_fails_instead_of_sharing_it(
    default_server: RunningServer, grpc_server: str
) -> None:
    # grpcio would otherwise bind with SO_REUSEPORT and split traffic with the other process.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServeSettings(
            model_dir=Path("/nonexistent"),
            host="127.0.0.1",
            grpc_port=taken.getsockname()[1],
            grpc_server=grpc_server,
        )
        listener = GrpcListener(type(default_server.state)(settings, default_server.state.metrics))
        with pytest.raises(RuntimeError):
            await listener.start()
        await listener.stop(0)


def test_committed_messages_match_the_proto(tmp_path: Path) -> None:
    """`make proto` was run after the last change of the .proto file."""
    out = tmp_path / "descriptor.pb"
    status = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
    assert status == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _drop_json_names(compiled.message_type)  # protoc adds them; generated modules leave them out
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert compiled == committed


def _drop_json_names(messages: Any) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


async def test_the_bearer_token_guards_grpc_too(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with server_factory(auth_token_file=token_file) as server:
        async for stub in _stub(server):
            # Probes need no token: health, liveness, readiness.
            assert await stub.health("ready") == health_pb2.HealthCheckResponse.SERVING
            assert (await stub("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)).live
            assert (
                await stub("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)
            ).ready
            for metadata, reason in [
                ((), "required"),
                ((("authorization", "Bearer wrong"),), "not valid"),
            ]:
                stub.metadata = metadata
                for call in (
                    stub.infer(raw_request(ROWS[:1])),
                    stub("ModelMetadata", pb.ModelMetadataRequest(name=MODEL_NAME),
                         pb.ModelMetadataResponse),
                ):  # fmt: skip
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await call
                    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert reason in (failed.value.details() or "")
            stub.metadata = (("authorization", "Bearer s3cret"),)
            assert outputs_of(await stub.infer(raw_request(ROWS[:1]))).shape == (1, 10)
