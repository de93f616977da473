"""The predictor's KEDA ScaledObject: a metrics-api trigger over every predictor pod.

KEDA's ``metrics-api`` scaler with ``format: prometheus`` and
``aggregateFromKubeServiceEndpoints`` reads each ready endpoint of the predictor Service
(its EndpointSlices) at ``/metrics`` on the metrics port (9090) and sums one gauge; the HPA
that KEDA makes divides the sum by the replicas (``AverageValue``) and compares it with the
per-pod target. No Prometheus server and no metrics adapter of our own are needed. KEDA's
HPA alone owns ``replicas``.
"""

from __future__ import annotations

from typing import Any

from ..models import AutoscalingMetric, ServingSpec
from ..names import predictor_name
from .common import Owner, predictor_child
from .deployment import METRICS_PORT

__all__ = ["METRIC_GAUGES", "POLLING_INTERVAL_S", "build_scaled_object"]

# The server's gauge for each metric (serving/modelservice_serving/metrics.py).
METRIC_GAUGES: dict[AutoscalingMetric, str] = {
    "concurrency": "modelservice_inflight_requests",
    "queueDepth": "modelservice_queue_depth",
}
# KEDA's default (30 s) is slow for inference; 5 s keeps a scrape per pod cheap.
POLLING_INTERVAL_S = 5


def build_scaled_object(
    owner: Owner, serving: ServingSpec, cluster_domain: str = "cluster.local"
) -> dict[str, Any]:
    """Return the ScaledObject scaling the predictor on in-flight requests or queued rows."""
    metric = serving.autoscaling_metric
    if metric not in METRIC_GAUGES:
        raise ValueError(f"metric {metric} is not served by a ScaledObject (the HPA scales on cpu)")
    name = predictor_name(owner.name)
    host = f"{name}.{owner.namespace}.svc.{cluster_domain}"
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicaCount": serving.min_replicas,
        "maxReplicaCount": serving.effective_max_replicas,
        "pollingInterval": POLLING_INTERVAL_S,
        "triggers": [
            {
                "type": "metrics-api",
                "name": metric.lower(),
                "metricType": "AverageValue",
                "metadata": {
                    # The pod's metrics port (serve --metrics-port), which KEDA matches in the
                    # Service's EndpointSlices; the NetworkPolicy admits KEDA's namespace there.
                    "url": f"http://{host}:{METRICS_PORT}/metrics",
                    "format": "prometheus",
                    "valueLocation": METRIC_GAUGES[metric],
                    "aggregateFromKubeServiceEndpoints": "true",
                    "aggregationType": "sum",
                    "targetValue": f"{serving.autoscaling_target:g}",
                },
            }
        ],
    }
    autoscaling = serving.autoscaling
    if autoscaling is not None and autoscaling.scale_down_stabilization_seconds is not None:
        spec["advanced"] = {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
                    }
                }
            }
        }
    return predictor_child(owner, "keda.sh/v1alpha1", "ScaledObject", spec)
