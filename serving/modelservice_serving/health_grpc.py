"""gRPC health checking (``grpc.health.v1.Health/Check``) on the gRPC port, for probes.

Kubernetes' ``grpc`` probes and ``grpc_health_probe`` call Check with a service name:
``""``, ``"ready"`` or the model's name ask for readiness (SERVING once the model is loaded
and warmed, NOT_SERVING before and while draining), ``"live"`` for liveness (SERVING while
the process serves). Any other name is NOT_FOUND, as the health protocol asks. The answer
is computed from the server's state on every call, the same state as the HTTP health routes.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from .state import ServingState

SERVICE = "grpc.health.v1.Health"
LIVENESS = "live"
READINESS = ("", "ready")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def method_handlers(state: ServingState) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """``Check`` bound to ``state`` (``Watch`` stays unimplemented: probes only check)."""

    async def check(
        request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=_SERVING)
        if request.service in READINESS or request.service == state.settings.model_name:
            status = _SERVING if state.ready else _NOT_SERVING
            return health_pb2.HealthCheckResponse(status=status)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover

    return {
        "Check": grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
    }
