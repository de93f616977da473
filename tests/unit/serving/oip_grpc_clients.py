"""The protocol's own gRPC clients against a running server, in a process of their own.

tritonclient and kserve each register the ``inference.*`` protobuf messages under their own
file names; so does this server, and one process cannot hold two definitions of a message.
A real client runs in its own process anyway: ``test_grpc.py`` runs this script and checks
what it prints (one JSON object).

Run: python oip_grpc_clients.py {triton,kserve} HOST:PORT MODEL
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

ROWS = load_digits().data[:8].astype(np.float32)


def triton(target: str, model: str) -> dict[str, Any]:
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    client = triton_grpc.InferenceServerClient(target)
    metadata = client.get_model_metadata(model, as_json=True)
    tensor = triton_grpc.InferInput("inputs", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(
        model, [tensor], request_id="r-1", outputs=[triton_grpc.InferRequestedOutput("output_0")]
    )
    errors = {}
    for case, (name, datatype, rows) in {
        "unknown_model": ("nope", "FP32", ROWS),
        "wrong_datatype": (model, "FP64", ROWS.astype(np.float64)),
        "wrong_shape": (model, "FP32", ROWS[:, :32]),
    }.items():
        bad = triton_grpc.InferInput("inputs", list(rows.shape), datatype)
        bad.set_data_from_numpy(rows)
        try:
            client.infer(name, [bad])
            errors[case] = "OK"
        except InferenceServerException as exc:
            errors[case] = str(exc.status())
    streamed = _triton_stream(client, triton_grpc, model)
    return {
        "streamed": streamed,
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "metadata": metadata,
        "id": result.get_response().id,
        "outputs": result.as_numpy("output_0").tolist(),
        "errors": errors,
    }


def _triton_stream(client: Any, triton_grpc: Any, model: str) -> dict[str, Any]:
    """ModelStreamInfer: one request per row and one bad request on one stream."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index, row in enumerate(ROWS):
            tensor = triton_grpc.InferInput("inputs", [1, 64], "FP32")
            tensor.set_data_from_numpy(row[None, :])
            client.async_stream_infer(model, [tensor], request_id=f"s-{index}")
        bad = triton_grpc.InferInput("inputs", [1, 32], "FP32")
        bad.set_data_from_numpy(ROWS[:1, :32])
        client.async_stream_infer(model, [bad], request_id="s-bad")
        rows: dict[str, Any] = {}
        errors: list[str] = []
        for _ in range(len(ROWS) + 1):
            result, error = answers.get(timeout=60)
            if error is not None:
                errors.append(str(error))
            else:
                rows[result.get_response().id] = result.as_numpy("output_0")[0].tolist()
    finally:
        client.stop_stream()
    return {"outputs": [rows[f"s-{index}"] for index in range(len(ROWS))], "errors": errors}


def kserve(target: str, model: str) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def run() -> dict[str, Any]:
        client = InferenceGRPCClient(target, timeout=30, retries=0)
        try:
            tensor = InferInput("inputs", list(ROWS.shape), "FP32")
            tensor.set_data_from_numpy(ROWS, binary_data=True)
            response = await client.infer(InferRequest(model, [tensor], request_id="k-1"))
            typed = InferInput("inputs", list(ROWS.shape), "FP32")
            typed.set_data_from_numpy(ROWS, binary_data=False)
            typed_response = await client.infer(InferRequest(model, [typed]))
            return {
                "live": await client.is_server_live(),
                "ready": await client.is_server_ready(),
                "model_ready": await client.is_model_ready(model),
                "id": response.id,
                "outputs": response.outputs[0].as_numpy().tolist(),
                "typed_outputs": typed_response.outputs[0].as_numpy().tolist(),
            }
        finally:
            await client.close()

    return asyncio.run(run())


if __name__ == "__main__":
    client_name, address, model_name = sys.argv[1:4]
    results = {"triton": triton, "kserve": kserve}[client_name](address, model_name)
    print(json.dumps(results))
