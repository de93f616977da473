"""The operator end to end on simulated nodes: train, gate, serve, change, fail, delete."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opharness import (
    MS,
    OperatorProcess,
    apply,
    sample_manifest,
    sim_failure,
    sim_success,
    wait_until,
)

from localcluster.kubectl import KubeCluster


def _version(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"].get("modelservice.dev/version"))


def _all_true(ms: MS) -> bool:
    conds = ms.status().get("conditions") or []
    return {c["type"]: c["status"] for c in conds} == {
        "Trained": "True",
        "QualityGatePassed": "True",
        "ServingReady": "True",
        "Ready": "True",
    }


def test_sample_reaches_ready(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    status = ms.wait_phase("Ready")
    assert _all_true(ms)
    assert status["model"]["version"] == 1
    assert status["model"]["metrics"] == {"accuracy": 0.97, "loss": 0.1}
    assert status["model"]["uri"] == "pvc://digits-models/v1"
    assert status["serving"]["ready"] == "1/1"
    url = f"http://digits-predictor.{namespace}.svc.cluster.local:8080/v2/models/digits"
    assert status["serving"]["url"] == url
    grpc_target = f"digits-predictor.{namespace}.svc.cluster.local:8081"
    assert status["serving"]["grpcAddress"] == grpc_target
    assert status["observedGeneration"] == 1
    assert status["training"]["epochs"] == 5
    for cond in status["conditions"]:
        assert cond["observedGeneration"] == 1
        assert cond["lastTransitionTime"]
        assert cond["reason"]

    # kubectl get ms shows the columns.
    table = cluster.kubectl("get", "ms", "digits", "-n", namespace)
    header, row = table.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "VERSION", "ACCURACY", "READY", "URL", "AGE"]
    assert row.split()[:6] == ["digits", "Ready", "1", "0.97", "1/1", url]

    # The predictor: GPU limit, product selector, toleration, on the H100 node.
    (deploy,) = ms.children("deployment")
    pod_spec = deploy["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    (pod,) = cluster.get("pods", "-n", namespace, "-l", "modelservice.dev/component=predictor")[
        "items"
    ]
    assert pod["spec"]["nodeName"] == "gpu-h100-1"
    assert len(ms.children("hpa")) == 1
    assert len(ms.children("service")) == 1
    assert ms.children("pdb") == []
    (job,) = ms.children("job")
    assert all(ref["controller"] for ref in job["metadata"]["ownerReferences"])

    # Events are posted in the background, after the status that they follow.
    wait_until("the Serving event", lambda: "Serving" in ms.events().split(), 10)
    assert "TrainingStarted" in ms.events().split()
    # Status is written only on change: Ready and quiet, the resourceVersion stands still.
    before = ms.get()["metadata"]["resourceVersion"]
    time.sleep(3)  # three resyncs at the tests' 1 s interval
    assert ms.get()["metadata"]["resourceVersion"] == before


@pytest.fixture
def big_gpu_node(kube_cluster: KubeCluster) -> Iterator[Any]:
    """A callable that adds a simulated 16-GPU H100 node; removed after the test."""
    name = f"gpu-h100-big-{uuid.uuid4().hex[:5]}"

    def add() -> None:
        resources = {
            "cpu": "96",
            "memory": "1Ti",
            "pods": "110",
            "nvidia.com/gpu": "16",
            "ephemeral-storage": "200Gi",  # child pods request it
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                },
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            },
            "status": {"capacity": resources, "allocatable": resources},
        }
        kube_cluster.kubectl("create", "-f", "-", input=json.dumps(node))

    yield add
    kube_cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_unschedulable_gpu_ask_waits_and_recovers(
    operator: OperatorProcess, namespace: str, big_gpu_node: Any
) -> None:
    manifest = sample_manifest(accuracy=0.95)
    manifest["spec"]["serving"]["gpu"]["count"] = 16  # no node has 16 H100s
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait(
        "Ready=False Unschedulable",
        lambda s: any(
            c["type"] == "Ready" and c["reason"] == "Unschedulable"
            for c in s.get("conditions") or []
        ),
    )
    status = ms.status()
    assert status["phase"] == "Deploying"
    ready = ms.condition("Ready")
    assert ready["status"] == "False"
    assert "nodes are available" in ready["message"]
    assert "Insufficient nvidia.com/gpu" in ready["message"]

    # Events are posted in the background, after the status that they follow.
    wait_until(
        "the Unschedulable event",
        lambda: "Insufficient nvidia.com/gpu" in ms.events("message", reason="Unschedulable"),
        10,
    )

    big_gpu_node()
    ms.wait_phase("Ready", timeout=120)
    assert _all_true(ms)


def test_failed_gate_keeps_old_version_serving(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=0.97)
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait_phase("Ready")
    manifest["spec"]["training"]["epochs"] = 1
    manifest["spec"]["training"]["podAnnotations"] = sim_success(0.42)
    apply(operator.cluster, manifest, namespace)
    status = ms.wait_phase("Degraded")
    gate = ms.condition("QualityGatePassed")
    assert gate["status"] == "False"
    assert gate["reason"] == "BelowMinimum"
    assert "0.42" in gate["message"]
    assert "0.9" in gate["message"]
    assert status["model"]["version"] == 1
    assert status["training"]["version"] == 2
    (deploy,) = ms.children("deployment")
    assert _version(deploy) == "1"
    assert "--model-dir=/models/v1" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ms.condition("ServingReady")["status"] == "True"
    assert sorted(_version(j) for j in ms.children("job")) == ["1", "2"]


def test_failing_training_reports_failed(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=None)
    manifest["spec"]["training"]["backoffLimit"] = 0
    manifest["spec"]["training"]["podAnnotations"] = sim_failure(
        "DatasetNotFound", "dataset digitz is not known"
    )
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait_phase("Failed")
    ready = ms.condition("Ready")
    assert ready["reason"] == "BackoffLimitExceeded"
    assert "DatasetNotFound: dataset digitz is not known" in ready["message"]
    assert ms.condition("Trained")["reason"] == "BackoffLimitExceeded"
    assert ms.children("deployment") == []


def test_crashlooping_predictor_shows_oomkilled(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["serving"]["podAnnotations"] = {
        "sim.modelservice.dev/waiting-reason": "CrashLoopBackOff",
        "sim.modelservice.dev/waiting-message": "back-off 5m0s restarting failed container",
        "sim.modelservice.dev/last-reason": "OOMKilled",
    }
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait(
        "Ready reason OOMKilled",
        lambda s: any(
            c["type"] == "Ready" and c["reason"] == "OOMKilled" for c in s.get("conditions") or []
        ),
    )
    assert ms.status()["phase"] == "Deploying"


def test_serving_change_rolls_without_new_job(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=0.97)
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait_phase("Ready")
    (deploy,) = ms.children("deployment")
    before = deploy["metadata"]["annotations"]["modelservice.dev/spec-hash"]
    manifest["spec"]["serving"]["batching"]["maxBatchSize"] = 64
    apply(operator.cluster, manifest, namespace)

    def rolled() -> bool:
        (d,) = ms.children("deployment")
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        return "--max-batch-size=64" in args

    wait_until("the predictor to roll", rolled)
    ms.wait(
        "observedGeneration 2 and Ready",
        lambda s: s.get("observedGeneration") == 2 and s.get("phase") == "Ready",
    )
    (deploy,) = ms.children("deployment")
    assert deploy["metadata"]["annotations"]["modelservice.dev/spec-hash"] != before
    assert len(ms.children("job")) == 1
    assert ms.status()["model"]["version"] == 1


def test_deletion_cleans_up(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["serving"]["minReplicas"] = 2
    manifest["spec"]["storage"] = {"retainOnDelete": False}  # the store goes too
    ms = apply(operator.cluster, manifest, namespace)
    ms.wait_phase("Ready")
    assert len(ms.children("pdb")) == 1
    operator.cluster.kubectl("delete", "ms", "digits", "-n", namespace, "--wait=true")
    kinds = "jobs,deployments,services,hpa,pdb,pvc"

    def gone() -> bool:
        items = operator.cluster.get(kinds, "-n", namespace, "-l", "modelservice.dev/name=digits")
        return items["items"] == []

    wait_until("every child to be garbage-collected", gone, timeout=60)


def test_store_is_retained_and_found_again(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")
    (pvc,) = ms.children("pvc")
    assert "ownerReferences" not in pvc["metadata"]
    cluster.kubectl("delete", "ms", "digits", "-n", namespace, "--wait=true")

    def others_gone() -> bool:
        items = cluster.get(
            "jobs,deployments", "-n", namespace, "-l", "modelservice.dev/name=digits"
        )
        return items["items"] == []

    wait_until("the other children to be garbage-collected", others_gone, timeout=60)
    kept = cluster.get("pvc", "digits-models", "-n", namespace)
    assert kept["metadata"]["uid"] == pvc["metadata"]["uid"]
    assert kept["metadata"].get("deletionTimestamp") is None
    # A ModelService of the same name trains into the same store.
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")
    (again,) = ms.children("pvc")
    assert again["metadata"]["uid"] == pvc["metadata"]["uid"]
    (job,) = ms.children("job")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["digits-models"]


def test_model_uri_serves_without_training(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace=namespace,
    )
    manifest = {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "pretrained"},
        "spec": {"model": {"uri": "pvc://models/digits/v3"}},
    }
    ms = apply(cluster, manifest, namespace)
    status = ms.wait_phase("Ready")
    assert status["model"]["uri"] == "pvc://models/digits/v3"
    assert ms.children("job") == []
    (deploy,) = ms.children("deployment")
    pod_spec = deploy["spec"]["template"]["spec"]
    assert "--model-dir=/models/digits/v3" in pod_spec["containers"][0]["args"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["models"]


def test_https_model_uri_serves_from_an_emptydir(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=None)
    manifest["spec"].pop("training")
    manifest["spec"].pop("qualityGate")
    uri = "https://models.example.com/digits/v3.tar.gz"
    manifest["spec"]["model"] = {"uri": uri}
    ms = apply(operator.cluster, manifest, namespace)
    status = ms.wait_phase("Ready")
    assert status["model"]["uri"] == uri
    (deployment,) = ms.children("deployments")
    pod = deployment["spec"]["template"]["spec"]
    assert f"--model-uri={uri}" in pod["containers"][0]["args"]
    assert {"name": "model-cache", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    assert ms.children("persistentvolumeclaims") == []
