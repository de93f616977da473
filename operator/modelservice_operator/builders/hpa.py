"""The predictor's HorizontalPodAutoscaler (autoscaling/v2) on CPU: it alone owns replicas.

Used for metric cpu, and for concurrency or queueDepth when KEDA cannot be used (see
``autoscaling.choose_autoscaler``): metrics-server serves CPU in any cluster.
"""

from __future__ import annotations

from typing import Any

from ..models import ServingSpec
from ..names import predictor_name
from .common import Owner, predictor_child

__all__ = ["build_hpa"]


def build_hpa(owner: Owner, serving: ServingSpec) -> dict[str, Any]:
    """Return the HPA scaling the predictor between minReplicas and maxReplicas on CPU."""
    name = predictor_name(owner.name)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": serving.min_replicas,
        "maxReplicas": serving.effective_max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": serving.cpu_target_percent,
                    },
                },
            }
        ],
    }
    autoscaling = serving.autoscaling
    if autoscaling is not None and autoscaling.scale_down_stabilization_seconds is not None:
        spec["behavior"] = {
            "scaleDown": {
                "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
            }
        }
    return predictor_child(owner, "autoscaling/v2", "HorizontalPodAutoscaler", spec)
