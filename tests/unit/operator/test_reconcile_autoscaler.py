"""The reconcile makes one autoscaler: KEDA's ScaledObject when it is served, else the HPA."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fakekube import FakeKube

from modelservice_operator.reconciler import reconcile
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

NS = "ml"
KEDA = ("keda.sh/v1alpha1", "scaledobjects")
# Discovery is checked at every reconcile here (the operator reuses it for 30 s).
SETTINGS = OperatorSettings(keda_check_interval_s=0)


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "digits", "namespace": NS, "uid": "ms-uid", "generation": 1},
            "spec": {
                "model": {"uri": "pvc://models/v1"},  # serves at once, no training
                "serving": {"maxReplicas": 4, "gpu": {"count": 1}},
            },
        }
    )
    return fake


async def run(kube: FakeKube, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    """Two reconciles: the first creates the predictor, the second observes it."""
    body = kube.objects[("ModelService", NS, "digits")]
    await reconcile(kube, copy.deepcopy(body), settings)  # type: ignore[arg-type]
    body = kube.objects[("ModelService", NS, "digits")]
    await reconcile(kube, copy.deepcopy(body), settings)  # type: ignore[arg-type]
    return kube.objects[("ModelService", NS, "digits")]


def autoscaler(ms: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = ms["status"]["serving"]["autoscaler"]
    return found


async def test_keda_served_gets_a_scaled_object_and_no_hpa(kube: FakeKube) -> None:
    kube.served.add(KEDA)
    ms = await run(kube)
    (so,) = kube.of("ScaledObject")
    assert so["spec"]["triggers"][0]["metadata"]["valueLocation"] == (
        "modelservice_inflight_requests"
    )
    assert kube.of("HorizontalPodAutoscaler") == []
    assert autoscaler(ms) == {
        "kind": "ScaledObject",
        "name": "keda-hpa-digits-predictor",
        "metric": "concurrency",
        "target": "32",
        "reason": "KEDAInstalled",
        "message": "KEDA scales on inference requests in flight per pod (target 32), "
        "scraped from every predictor pod",
    }
    writes = len(kube.writes)
    await run(kube)
    assert len(kube.writes) == writes  # idempotent: nothing to create, patch or delete


async def test_without_keda_the_hpa_and_the_reason(kube: FakeKube) -> None:
    ms = await run(kube)
    assert len(kube.of("HorizontalPodAutoscaler")) == 1
    assert kube.of("ScaledObject") == []
    status = autoscaler(ms)
    assert (status["kind"], status["metric"], status["reason"]) == (
        "HorizontalPodAutoscaler",
        "cpu",
        "KEDANotInstalled",
    )
    assert "metric concurrency needs KEDA" in status["message"]


async def test_keda_installed_later_replaces_the_hpa_and_back(kube: FakeKube) -> None:
    await run(kube)
    assert len(kube.of("HorizontalPodAutoscaler")) == 1
    kube.served.add(KEDA)
    await run(kube)
    assert len(kube.of("ScaledObject")) == 1
    assert kube.of("HorizontalPodAutoscaler") == []  # two autoscalers would fight
    # The user switches to cpu: the HPA comes back and the ScaledObject goes.
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["serving"]["autoscaling"] = {"metric": "cpu"}
    ms["metadata"]["generation"] = 2
    ms = await run(kube)
    assert len(kube.of("HorizontalPodAutoscaler")) == 1
    assert kube.of("ScaledObject") == []
    assert autoscaler(ms)["reason"] == "CPUMetric"


async def test_scaled_objects_forbidden_fall_back_to_the_hpa(kube: FakeKube) -> None:
    kube.served.add(KEDA)
    kube.forbidden.add("ScaledObject")
    ms = await run(kube)
    assert len(kube.of("HorizontalPodAutoscaler")) == 1
    assert autoscaler(ms)["reason"] == "KEDAForbidden"
    assert ms["status"]["phase"] != "Failed"


async def test_keda_off_never_looks(kube: FakeKube) -> None:
    kube.served.add(KEDA)
    ms = await run(kube, OperatorSettings(keda="off"))
    assert kube.of("ScaledObject") == []
    assert autoscaler(ms)["reason"] == "KEDADisabled"


async def test_hpa_not_ours_is_left_alone(kube: FakeKube) -> None:
    kube.served.add(KEDA)
    kube.put(
        {
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "digits-predictor", "namespace": NS},
            "spec": {},
        }
    )
    await run(kube)
    assert len(kube.of("HorizontalPodAutoscaler")) == 1  # a user's object: never deleted


async def test_pending_pods_with_nodeclaims_say_scaling_up(kube: FakeKube) -> None:
    await run(kube)
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    d["spec"]["replicas"] = 3  # the autoscaler asked for more
    d["status"] = {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    labels = d["spec"]["template"]["metadata"]["labels"]
    for i, scheduled in enumerate((True, False, False)):
        kube.put(
            {
                "kind": "Pod",
                "metadata": {"name": f"p-{i}", "namespace": NS, "labels": labels},
                "status": {
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"}
                        if scheduled
                        else {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
                        }
                    ]
                },
            }
        )
    for i in (1, 2):
        kube.put(
            {
                "kind": "Event",
                "metadata": {"name": f"e-{i}", "namespace": NS},
                "involvedObject": {"kind": "Pod", "name": f"p-{i}"},
                "reason": "Nominated",
                "message": f"Pod should schedule on: nodeclaim/gpu-h100-{i}",
            }
        )
    ms = await run(kube)
    ready = next(c for c in ms["status"]["conditions"] if c["type"] == "Ready")
    assert ms["status"]["phase"] == "Ready"
    assert (ready["status"], ready["reason"]) == ("True", "ScalingUp")
    assert "waiting for 2 GPU nodes (NodeClaims gpu-h100-1, gpu-h100-2)" in ready["message"]
    assert ("Normal", "ScalingUp") in [(t, r) for t, r, _ in kube.events]
