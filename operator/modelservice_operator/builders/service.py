"""The predictor Service: a ClusterIP on port 8080 named ``http``, and ``metrics`` (9090).

The metrics port is listed so that the Service's EndpointSlices carry it: KEDA's metrics-api
scaler finds every pod to scrape through them, by that port.
"""

from __future__ import annotations

from typing import Any

from ..names import predictor_name, predictor_selector
from .common import Owner, predictor_child
from .deployment import HTTP_PORT, METRICS_PORT, METRICS_PORT_NAME

__all__ = ["build_service", "service_url"]


def service_url(owner: Owner, cluster_domain: str = "cluster.local") -> str:
    """The in-cluster V2 model URL of the predictor."""
    svc = predictor_name(owner.name)
    return f"http://{svc}.{owner.namespace}.svc.{cluster_domain}:{HTTP_PORT}/v2/models/{owner.name}"


def build_service(owner: Owner) -> dict[str, Any]:
    """Return the predictor's Service."""
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": predictor_selector(owner.name),
        "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            {
                "name": METRICS_PORT_NAME,
                "port": METRICS_PORT,
                "targetPort": METRICS_PORT_NAME,
                "protocol": "TCP",
            },
        ],
    }
    return predictor_child(owner, "v1", "Service", spec)
