"""Which autoscaler drives the predictor's replicas: a pure decision, stated in status.

KEDA scales on what a batching server is limited by (inference requests in flight, or rows
queued for the model), scraped from every predictor pod with no Prometheus server. Without
KEDA, the cluster's HorizontalPodAutoscaler has only CPU (metrics-server) to go on. The
decision is level-based: it is taken again at every reconcile from what the API serves now.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from .models import AutoscalerStatus, AutoscalingMetric, ServingSpec
from .names import predictor_name

__all__ = [
    "KEDA_API",
    "AutoscalerChoice",
    "Keda",
    "choose_autoscaler",
    "keda_hpa_name",
]

# The API the operator looks for: served means the KEDA operator's CRD is installed.
KEDA_API = ("keda.sh/v1alpha1", "scaledobjects")

AutoscalerKind = Literal["ScaledObject", "HorizontalPodAutoscaler"]

_METRIC_WORDS: dict[AutoscalingMetric, str] = {
    "concurrency": "inference requests in flight per pod",
    "queueDepth": "rows queued for the model per pod",
    "cpu": "CPU utilisation",
}


class Keda(Enum):
    """What the operator knows of KEDA in this cluster."""

    SERVED = "served"  # scaledobjects.keda.sh is served and the operator may use it
    ABSENT = "absent"  # the API is not served: KEDA is not installed
    DISABLED = "disabled"  # the operator's setting turns KEDA off (MSO_OPERATOR_KEDA=off)
    FORBIDDEN = "forbidden"  # served, but the operator's RBAC does not cover ScaledObjects


@dataclass(frozen=True)
class AutoscalerChoice:
    """The autoscaler to build, the metric it really scales on, and why."""

    kind: AutoscalerKind
    metric: AutoscalingMetric
    target: str
    reason: str
    message: str

    def status(self, owner_name: str) -> AutoscalerStatus:
        """The ``status.serving.autoscaler`` that reports this choice."""
        name = predictor_name(owner_name)
        return AutoscalerStatus(
            kind=self.kind,
            name=keda_hpa_name(owner_name) if self.kind == "ScaledObject" else name,
            metric=self.metric,
            target=self.target,
            reason=self.reason,
            message=self.message,
        )


def keda_hpa_name(owner_name: str) -> str:
    """The HPA KEDA makes for the predictor's ScaledObject (KEDA's own naming)."""
    return f"keda-hpa-{predictor_name(owner_name)}"


def _number(value: float) -> str:
    return f"{value:g}"


def choose_autoscaler(serving: ServingSpec, keda: Keda) -> AutoscalerChoice:
    """KEDA's ScaledObject for concurrency and queueDepth when KEDA can be used, else the HPA.

    Metric cpu always gets the HPA: it scales on CPU by itself, KEDA would add nothing.
    """
    wanted = serving.autoscaling_metric
    cpu_target = f"{serving.cpu_target_percent}%"
    if wanted == "cpu":
        return AutoscalerChoice(
            "HorizontalPodAutoscaler",
            "cpu",
            cpu_target,
            "CPUMetric",
            f"metric cpu: the HPA scales on CPU utilisation (target {cpu_target} of requests)",
        )
    target = _number(serving.autoscaling_target)
    if keda is Keda.SERVED:
        return AutoscalerChoice(
            "ScaledObject",
            wanted,
            target,
            "KEDAInstalled",
            f"KEDA scales on {_METRIC_WORDS[wanted]} (target {target}), "
            "scraped from every predictor pod",
        )
    why = {
        Keda.ABSENT: (
            "KEDANotInstalled",
            "KEDA is not installed (scaledobjects.keda.sh is not served)",
        ),
        Keda.DISABLED: ("KEDADisabled", "the operator has KEDA turned off (MSO_OPERATOR_KEDA=off)"),
        Keda.FORBIDDEN: (
            "KEDAForbidden",
            "the operator may not manage ScaledObjects (enable keda in the chart or the "
            "kustomize component deploy/components/keda)",
        ),
    }[keda]
    return AutoscalerChoice(
        "HorizontalPodAutoscaler",
        "cpu",
        cpu_target,
        why[0],
        f"metric {wanted} needs KEDA and {why[1]}: the HPA scales on CPU utilisation "
        f"(target {cpu_target} of requests) instead",
    )
