"""GPU nodes on demand: Karpenter (kwok provider) adds simulated GPU nodes for predictor
replicas that do not fit, the status says what it waits for, and empty nodes go again.

Needs the autoscalers ``make cluster`` starts (``MSO_AUTOSCALERS=0`` opts out, and says so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from opharness import MS, OperatorProcess, apply, sample_manifest

from localcluster import addons
from localcluster.kubectl import KubeCluster, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"


@pytest.fixture(scope="module")
def karpenter(kube_cluster: KubeCluster) -> KubeCluster:
    """Karpenter runs in this cluster; its absence is an error, not a skip, unless opted out."""
    if "karpenter" not in addons.wanted_parts():
        pytest.skip("MSO_AUTOSCALERS=0: the cluster runs without Karpenter, by request")
    state_file = Path(kube_cluster.kubeconfig).parent / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    pids = (state.get("autoscalers") or {}).get("pids") or {}
    assert "karpenter" in pids, "Karpenter is not running: " + str(
        state.get("autoscalers_unavailable") or "the cluster was started without it"
    )
    return kube_cluster


def karpenter_claims(cluster: KubeCluster, nodepool: str = "gpu-h100") -> list[str]:
    items = cluster.get("nodeclaims", "-l", f"karpenter.sh/nodepool={nodepool}")["items"]
    return sorted(
        i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp")
    )


def whole_node_predictor(replicas: int, product: str = H100) -> dict[str, Any]:
    """A predictor whose every replica takes a whole 8-GPU node."""
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["serving"].update(
        {"minReplicas": replicas, "maxReplicas": replicas, "gpu": {"count": 8, "product": product}}
    )
    return manifest


def ready_condition(ms: MS) -> dict[str, Any]:
    return ms.condition("Ready")


def test_replicas_beyond_the_gpu_nodes_get_nodeclaims_then_consolidate(
    karpenter: KubeCluster, operator: OperatorProcess, namespace: str
) -> None:
    before = karpenter_claims(karpenter)
    # The static H100 node takes one such replica; two more need two new nodes.
    ms = apply(operator.cluster, whole_node_predictor(3), namespace)
    started = time.monotonic()
    waiting = ms.wait(
        "Ready reason ScalingUp",
        lambda s: next(
            (
                c
                for c in s.get("conditions") or []
                if c["type"] == "Ready" and c["reason"] == "ScalingUp"
            ),
            None,
        ),
        timeout=180,
    )
    assert "GPU node" in waiting["message"]
    assert "(NodeClaims " in waiting["message"]
    assert H100 in waiting["message"]
    assert ms.status()["phase"] != "Failed"
    # ScalingUp is already phase Ready (one replica serves); wait for all three.
    status = ms.wait(
        "3/3 ready",
        lambda s: s if (s.get("serving") or {}).get("readyReplicas") == 3 else None,
        timeout=180,
    )
    took = time.monotonic() - started
    assert status["phase"] == "Ready"
    ready = ready_condition(ms)
    assert (ready["status"], ready["reason"]) == ("True", "Serving")
    claims = karpenter_claims(karpenter)
    new = [c for c in claims if c not in before]
    # Two when the static H100 node is free; more when other tests hold its GPUs.
    assert len(new) >= 2, claims
    nodes = karpenter.get("nodes", "-l", "karpenter.sh/nodepool=gpu-h100")["items"]
    for node in nodes:
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == H100
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in (
            node["spec"].get("taints") or []
        )
    print(f"3 whole-node replicas Ready in {took:.1f}s with NodeClaims {new}")

    # One replica is enough again: Karpenter consolidates the empty nodes away.
    apply(operator.cluster, whole_node_predictor(1), namespace)
    started = time.monotonic()
    # The one replica left may sit on one of the new nodes; the other new node(s) go.
    wait_for(
        "Karpenter to remove the emptied GPU nodes",
        lambda: len(set(new) & set(karpenter_claims(karpenter))) <= 1,
        timeout=180,
    )
    print(f"emptied nodes consolidated in {time.monotonic() - started:.1f}s")
    ms.wait(
        "1/1 ready",
        lambda s: (s.get("serving") or {}).get("ready") == "1/1" and s["phase"] == "Ready",
        timeout=60,
    )


def test_gpu_ask_no_nodepool_can_satisfy_waits_with_both_reasons(
    karpenter: KubeCluster, operator: OperatorProcess, namespace: str
) -> None:
    ms = apply(operator.cluster, whole_node_predictor(1, product="NVIDIA-B200"), namespace)
    ready = ms.wait(
        "Karpenter's reason in Ready",
        lambda s: next(
            (
                c
                for c in s.get("conditions") or []
                if c["type"] == "Ready" and "Karpenter: " in c["message"]
            ),
            None,
        ),
        timeout=120,
    )
    assert ready["reason"] == "Unschedulable"
    assert "nodes are available" in ready["message"]  # the scheduler's words
    time.sleep(10)
    status = ms.status()
    assert status["phase"] == "Deploying"  # waiting, never Failed
    claims = karpenter.get("nodeclaims", "-l", "nvidia.com/gpu.product=NVIDIA-B200")["items"]
    assert claims == []  # nothing launched that could never take the pod
