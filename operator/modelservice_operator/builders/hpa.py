"""The predictor's HorizontalPodAutoscaler (autoscaling/v2): it alone owns replicas."""

from __future__ import annotations

from typing import Any

from ..models import ServingSpec
from ..names import predictor_name
from .common import Owner, predictor_child

__all__ = ["build_hpa"]


def build_hpa(owner: Owner, serving: ServingSpec) -> dict[str, Any]:
    """Return the HPA scaling the predictor between minReplicas and maxReplicas."""
    name = predictor_name(owner.name)
    autoscaling = serving.autoscaling
    cpu_target = 80 if autoscaling is None else autoscaling.target_cpu_utilization_percentage
    metrics: list[dict[str, Any]] = []
    if cpu_target is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu_target},
                },
            }
        )
    if autoscaling is not None and autoscaling.metric is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": autoscaling.metric.name},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": autoscaling.metric.target_average_value,
                    },
                },
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": serving.min_replicas,
        "maxReplicas": serving.effective_max_replicas,
        "metrics": metrics,
    }
    if autoscaling is not None and autoscaling.scale_down_stabilization_seconds is not None:
        spec["behavior"] = {
            "scaleDown": {
                "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
            }
        }
    return predictor_child(owner, "autoscaling/v2", "HorizontalPodAutoscaler", spec)
