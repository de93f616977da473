"""Which autoscaler drives the predictor, and the KEDA ScaledObject it gets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelservice_operator.autoscaling import AutoscalerChoice, Keda, choose_autoscaler
from modelservice_operator.builders.common import Owner
from modelservice_operator.builders.scaledobject import build_scaled_object
from modelservice_operator.models import ServingSpec
from modelservice_operator.names import ANNOTATION_SPEC_HASH

pytestmark = pytest.mark.unit

GPU = {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}}


def serving(**fields: Any) -> ServingSpec:
    return ServingSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "metric", "target"),
    [
        ({**GPU}, "concurrency", 32.0),  # GPUs: concurrency, one full default batch per pod
        ({**GPU, "batching": {"maxBatchSize": 8}}, "concurrency", 8.0),
        ({}, "cpu", 32.0),  # no GPU: cpu
        ({"gpu": {"count": 0}}, "cpu", 32.0),  # zero GPUs is no GPU
        ({"autoscaling": {"metric": "queueDepth", "target": 2.5}}, "queueDepth", 2.5),
        ({**GPU, "autoscaling": {"metric": "cpu"}}, "cpu", 32.0),
    ],
)
def test_metric_and_target_defaults(fields: dict[str, Any], metric: str, target: float) -> None:
    spec = serving(**fields)
    assert (spec.autoscaling_metric, spec.autoscaling_target) == (metric, target)


def test_target_is_refused_with_metric_cpu() -> None:
    with pytest.raises(ValidationError, match="metric cpu takes targetCPUUtilizationPercentage"):
        serving(autoscaling={"metric": "cpu", "target": 4})


def test_keda_served_makes_a_scaled_object_on_concurrency() -> None:
    choice = choose_autoscaler(serving(**GPU), Keda.SERVED)
    assert choice == AutoscalerChoice(
        "ScaledObject",
        "concurrency",
        "32",
        "KEDAInstalled",
        "KEDA scales on inference requests in flight per pod (target 32), "
        "scraped from every predictor pod",
    )
    status = choice.status("digits")
    assert (status.kind, status.name) == ("ScaledObject", "keda-hpa-digits-predictor")


@pytest.mark.parametrize(
    ("keda", "reason", "why"),
    [
        (Keda.ABSENT, "KEDANotInstalled", "scaledobjects.keda.sh is not served"),
        (Keda.DISABLED, "KEDADisabled", "MSO_OPERATOR_KEDA=off"),
        (Keda.FORBIDDEN, "KEDAForbidden", "may not manage ScaledObjects"),
    ],
)
def test_without_keda_the_hpa_scales_on_cpu_and_says_why(keda: Keda, reason: str, why: str) -> None:
    spec = serving(**GPU, autoscaling={"targetCPUUtilizationPercentage": 70})
    choice = choose_autoscaler(spec, keda)
    assert (choice.kind, choice.metric, choice.target, choice.reason) == (
        "HorizontalPodAutoscaler",
        "cpu",
        "70%",
        reason,
    )
    assert choice.message.startswith("metric concurrency needs KEDA and ")
    assert why in choice.message
    assert choice.message.endswith(
        "the HPA scales on CPU utilisation (target 70% of requests) instead"
    )
    assert choice.status("digits").name == "digits-predictor"


@pytest.mark.parametrize("keda", list(Keda))
def test_metric_cpu_always_gets_the_hpa(keda: Keda) -> None:
    choice = choose_autoscaler(serving(**GPU, autoscaling={"metric": "cpu"}), keda)
    assert (choice.kind, choice.reason, choice.target) == (
        "HorizontalPodAutoscaler",
        "CPUMetric",
        "80%",
    )


def test_scaled_object_scrapes_every_predictor_pod(owner: Owner) -> None:
    spec = serving(
        **GPU,
        minReplicas=2,
        maxReplicas=9,
        autoscaling={"target": 4, "scaleDownStabilizationSeconds": 45},
    )
    so = build_scaled_object(owner, spec)
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert so["metadata"]["name"] == "digits-predictor"
    assert so["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    assert ANNOTATION_SPEC_HASH in so["metadata"]["annotations"]
    body = so["spec"]
    assert body["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "digits-predictor",
    }
    assert (body["minReplicaCount"], body["maxReplicaCount"]) == (2, 9)
    assert "replicas" not in body  # KEDA's HPA owns replicas
    (trigger,) = body["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("metrics-api", "AverageValue")
    assert trigger["metadata"] == {
        "url": "http://digits-predictor.ml.svc.cluster.local:9090/metrics",
        "format": "prometheus",
        "valueLocation": "modelservice_inflight_requests",
        "aggregateFromKubeServiceEndpoints": "true",
        "aggregationType": "sum",  # the HPA divides the sum by the replicas
        "targetValue": "4",
    }
    behavior = body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 45}}


def test_scaled_object_on_queue_depth_and_its_hash_follows_the_target(owner: Owner) -> None:
    a = build_scaled_object(owner, serving(autoscaling={"metric": "queueDepth"}))
    b = build_scaled_object(owner, serving(autoscaling={"metric": "queueDepth", "target": 64}))
    assert a["spec"]["triggers"][0]["metadata"]["valueLocation"] == "modelservice_queue_depth"
    assert a["spec"]["triggers"][0]["metadata"]["targetValue"] == "32"
    assert "advanced" not in a["spec"]
    hashes = {m["metadata"]["annotations"][ANNOTATION_SPEC_HASH] for m in (a, b)}
    assert len(hashes) == 2


def test_scaled_object_refuses_metric_cpu(owner: Owner) -> None:
    with pytest.raises(ValueError, match="metric cpu"):
        build_scaled_object(owner, serving(autoscaling={"metric": "cpu"}))
