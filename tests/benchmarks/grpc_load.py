"""A closed-loop gRPC load generator for ModelInfer (the benchmark's ``wrk`` for gRPC).

``CONNECTIONS`` workers each keep one call in flight for ``SECONDS``; the workers share
``CHANNELS`` HTTP/2 connections. With ``--stream``, each channel carries one ModelStreamInfer
call with its share of the ``CONNECTIONS`` requests in flight instead. The request is
serialised once and sent as bytes through a generic method, so the client pays for the
transport only, not for protobuf. Prints one JSON line: requests, errors, req/s, p50 and p99 in ms.

Run: python grpc_load.py HOST:PORT MODEL SECONDS [--connections 32] [--channels 4] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time

import grpc
import numpy as np

# One digits row, as the HTTP benchmark sends it.
ROW = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12,
       0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0,
       0, 0, 0, 6, 13, 10, 0, 0, 0]  # fmt: skip
METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def infer_request(model: str) -> bytes:
    """ModelInferRequest{model_name, inputs: [{name, datatype, shape: [1, 64]}],
    raw_input_contents: [64 little-endian float32]}, encoded by hand so that this client
    needs no generated code (and cannot disagree with the server's own)."""
    shape = _varint(1) + _varint(64)  # packed repeated int64
    tensor = _field(1, b"inputs") + _field(2, b"FP32") + _field(3, shape)
    raw = np.asarray(ROW, dtype="<f4").tobytes()
    return _field(1, model.encode()) + _field(5, tensor) + _field(7, raw)


def grpc_message(model: str) -> bytes:
    """:func:`infer_request` as a gRPC message on the wire: uncompressed, length-prefixed."""
    request = infer_request(model)
    return b"\x00" + len(request).to_bytes(4, "big") + request


async def run(
    target: str, model: str, seconds: float, connections: int, channels: int, streaming: bool
) -> dict:
    request = infer_request(model)
    pool = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    calls = [channel.unary_unary(METHOD) for channel in pool]  # bytes in, bytes out
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        call = calls[index % len(calls)]
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    async def stream(index: int) -> None:
        """One ModelStreamInfer call keeping its share of the calls in flight; answers are
        matched to requests in order (the server answers in completion order, which the
        batcher keeps close to arrival order)."""
        call = pool[index % len(pool)].stream_stream(STREAM_METHOD)()
        sent: collections.deque[float] = collections.deque()
        window = max(1, connections // len(pool))
        for _ in range(window):
            sent.append(time.perf_counter())
            await call.write(request)
        while sent:
            answer = await call.read()
            if answer is grpc.aio.EOF:
                break
            latencies.append(time.perf_counter() - sent.popleft())
            if time.perf_counter() < deadline:
                sent.append(time.perf_counter())
                await call.write(request)
        await call.done_writing()

    for channel in pool:
        await channel.channel_ready()
    started = time.perf_counter()
    if streaming:
        await asyncio.gather(*(stream(index) for index in range(channels)))
    else:
        await asyncio.gather(*(worker(index) for index in range(connections)))
    elapsed = time.perf_counter() - started
    for channel in pool:
        await channel.close()
    ordered = np.sort(np.asarray(latencies)) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ordered, 50)),
        "p99_ms": float(np.percentile(ordered, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("model")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument(
        "--stream", action="store_true", help="one ModelStreamInfer call per channel instead"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    load = run(args.target, args.model, args.seconds, args.connections, args.channels, args.stream)
    print(json.dumps(asyncio.run(load)))


if __name__ == "__main__":
    main()
