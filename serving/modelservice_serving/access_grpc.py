"""The bearer token on the gRPC port: the same rule as :mod:`.access` for HTTP.

With ``--auth-token-file`` every RPC but the health checks (``grpc.health.v1.Health/Check``,
ServerLive, ServerReady: what probes call, telling nothing about the model) needs
``authorization: Bearer <token>`` metadata; the comparison takes the same time whatever the
token, and a refusal is UNAUTHENTICATED with the reason.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from . import health_grpc, protocol_grpc

EXEMPT_METHODS = frozenset(
    {
        f"/{health_grpc.SERVICE}/Check",
        f"/{protocol_grpc.SERVICE}/ServerLive",
        f"/{protocol_grpc.SERVICE}/ServerReady",
    }
)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers RPCs without the bearer token with UNAUTHENTICATED, except health checks."""

    def __init__(self, token: bytes) -> None:
        self.expected = b"Bearer " + token

    async def intercept_service(  # type: ignore[override]  # the stubs: generic in the class
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in EXEMPT_METHODS:
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        given = next((value for key, value in metadata if key == "authorization"), "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, self.expected):
            return handler
        reason = "a bearer token is required" if not given else "the bearer token is not valid"
        return _refusal(handler, reason)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], reason: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that refuses the call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    make = next(make for kind, make in kinds.items() if getattr(handler, kind) is not None)
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
