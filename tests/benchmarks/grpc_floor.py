"""The gRPC floor: a grpc.aio server (uvloop) whose ModelInfer answers a constant.

No parsing, no model: what one core can do with grpcio's asyncio server per call, the
ceiling of any Python server built on it. Run: python grpc_floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import uvloop

ANSWER = b"\n\x06digits"  # ModelInferResponse{model_name: "digits"}


async def infer(request: bytes, context: Any) -> bytes:
    return ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1])))
