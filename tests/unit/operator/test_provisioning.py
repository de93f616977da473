"""Pending predictor pods: waiting for Karpenter's NodeClaims is ScalingUp, never Failed."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator.conditions import Observed, ServingObservation, compute
from modelservice_operator.diagnosis import Stuck
from modelservice_operator.provisioning import diagnose_scale_up

pytestmark = pytest.mark.unit

H100 = "NVIDIA-H100-80GB-HBM3"
SCHEDULER = Stuck(
    "Unschedulable",
    "pod p-2: 0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
)


def pod(name: str, pending: bool = True) -> dict[str, Any]:
    conditions = (
        [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
        if pending
        else [{"type": "PodScheduled", "status": "True"}]
    )
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def event(pod_name: str, reason: str, message: str, at: str) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "Pod", "name": pod_name},
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
    }


def nominated(pod_name: str, claim: str, at: str = "2026-12-01T03:00:00Z") -> dict[str, Any]:
    return event(pod_name, "Nominated", f"Pod should schedule on: nodeclaim/{claim}", at)


def test_nominated_nodeclaims_are_scaling_up_with_count_names_and_product() -> None:
    pods = [pod("p-1", pending=False), pod("p-2"), pod("p-3"), pod("p-4")]
    events = [
        nominated("p-2", "gpu-h100-abcde"),
        nominated("p-3", "gpu-h100-fghij"),
        nominated("p-4", "gpu-h100-fghij"),  # two pods share one 8-GPU node
        nominated("p-1", "gpu-h100-old"),  # scheduled already: not waiting
        event("p-2", "FailedScheduling", "0/5 nodes are available", "2026-12-01T03:00:01Z"),
    ]
    stuck = diagnose_scale_up(pods, events, SCHEDULER, True, H100)
    assert stuck == Stuck(
        "ScalingUp",
        f"waiting for 2 GPU nodes {H100} (NodeClaims gpu-h100-abcde, gpu-h100-fghij) "
        "for 3 pending pods",
    )


def test_karpenter_refusal_keeps_unschedulable_with_both_reasons() -> None:
    events = [
        nominated("p-2", "gpu-h100-abcde", at="2026-12-01T03:00:00Z"),
        event(
            "p-2",
            "FailedScheduling",
            'Failed to schedule pod, incompatible with nodepool "gpu-h100", '
            'incompatible requirements, label "nvidia.com/gpu.product" does not have known '
            "values",
            "2026-12-01T03:00:05Z",
        ),
    ]
    stuck = diagnose_scale_up([pod("p-2")], events, SCHEDULER, True, "NVIDIA-B200")
    assert stuck.reason == "Unschedulable"
    assert stuck.message.startswith(SCHEDULER.message + "; Karpenter: incompatible with nodepool")


def test_without_a_node_autoscaler_the_scheduler_verdict_stays() -> None:
    assert diagnose_scale_up([pod("p-2")], [], SCHEDULER, True, H100) == SCHEDULER
    crash = Stuck("CrashLoopBackOff", "x")
    assert diagnose_scale_up([pod("p-2")], [nominated("p-2", "c")], crash, True, H100) == crash


def test_one_node_for_one_cpu_pod() -> None:
    stuck = diagnose_scale_up([pod("p-2")], [nominated("p-2", "c-1")], SCHEDULER, False)
    assert stuck.message == "waiting for 1 node (NodeClaims c-1) for 1 pending pod"


def observed(ready: int, replicas: int, stuck: Stuck) -> Observed:
    return Observed(
        generation=1,
        trains=False,
        served_version=1,
        desired_version=1,
        serving=ServingObservation(
            version=1,
            replicas=replicas,
            ready_replicas=ready,
            available_replicas=ready,
            rolled_out=True,
            stuck=stuck,
        ),
    )


def test_scaling_up_while_serving_is_ready_not_degraded() -> None:
    wait = Stuck("ScalingUp", "waiting for 2 GPU nodes (NodeClaims a, b) for 3 pending pods")
    phase, conds = compute(observed(1, 4, wait), [], "2026-12-01T03:00:00Z")
    ready = next(c for c in conds if c.type == "Ready")
    assert (phase, ready.status, ready.reason) == ("Ready", "True", "ScalingUp")
    assert ready.message == "1/4 ready, " + wait.message
    # With no replica ready yet it is still progress: Deploying, never Failed.
    phase, conds = compute(observed(0, 2, wait), [], "2026-12-01T03:00:00Z")
    ready = next(c for c in conds if c.type == "Ready")
    assert (phase, ready.status, ready.reason) == ("Deploying", "False", "ScalingUp")
