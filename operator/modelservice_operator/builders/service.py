"""The predictor Service: a ClusterIP with ``http`` on 8080, ``grpc`` on 8081, ``metrics`` on 9090.

The gRPC port declares ``appProtocol: kubernetes.io/h2c`` (HTTP/2 without TLS), so gateways
and meshes route it as gRPC rather than as HTTP/1.1.
"""

from __future__ import annotations

from typing import Any

from ..names import predictor_name, predictor_selector
from .common import Owner, predictor_child
from .deployment import GRPC_PORT, HTTP_PORT, METRICS_PORT, METRICS_PORT_NAME

__all__ = ["build_service", "grpc_address", "service_url"]


def service_url(owner: Owner, cluster_domain: str = "cluster.local") -> str:
    """The in-cluster V2 model URL of the predictor."""
    svc = predictor_name(owner.name)
    return f"http://{svc}.{owner.namespace}.svc.{cluster_domain}:{HTTP_PORT}/v2/models/{owner.name}"


def grpc_address(owner: Owner, cluster_domain: str = "cluster.local") -> str:
    """The predictor's in-cluster gRPC target (``host:port``, as gRPC clients take it)."""
    svc = predictor_name(owner.name)
    return f"{svc}.{owner.namespace}.svc.{cluster_domain}:{GRPC_PORT}"


def build_service(owner: Owner) -> dict[str, Any]:
    """Return the predictor's Service."""
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": predictor_selector(owner.name),
        "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            },
            # KEDA's metrics-api scaler finds each pod's /metrics through this port.
            {
                "name": METRICS_PORT_NAME,
                "port": METRICS_PORT,
                "targetPort": METRICS_PORT_NAME,
                "protocol": "TCP",
            },
        ],
    }
    return predictor_child(owner, "v1", "Service", spec)
