"""The local cluster is a real one: API server validation, scheduling, controllers.

Every assertion here is the verdict of a real Kubernetes component (the API
server's CEL and admission, the scheduler, the Job, Deployment and garbage
collection controllers) on simulated nodes, so the rest of the suite can rely
on the cluster behaving as a production one would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from localcluster.kubectl import KubeCluster, KubectlError, wait_for
from localcluster.state import HERE

PINNED = dict(
    line.split("=", 1)
    for line in (HERE / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
K8S_VERSION = PINNED["K8S_VERSION"]
GPU_NODES = {"gpu-h100-1", "gpu-a100-1"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod(name: str, **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", {})
    resources = spec.pop("resources", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "resources": resources}],
            **spec,
        },
    }


def test_binaries_report_their_pinned_version(kube_cluster: KubeCluster) -> None:
    versions = json.loads(kube_cluster.kubectl("version", "-o", "json"))
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert kube_cluster.helm("version", "--short").strip() == PINNED["HELM_VERSION"]


def test_simulated_nodes_offer_cpus_gpus_and_mig(kube_cluster: KubeCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube_cluster.get("nodes")["items"]}
    cpu_only = [
        n for n in nodes.values() if "nvidia.com/gpu.product" not in n["metadata"]["labels"]
    ]
    assert len(cpu_only) >= 2
    h100 = nodes["gpu-h100-1"]
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert h100["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in h100["spec"][
        "taints"
    ]
    assert nodes["gpu-a100-1"]["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert nodes["gpu-mig-1"]["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] == "7"
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", node["metadata"]["name"]


def test_cel_rule_refuses_an_invalid_object(kube_cluster: KubeCluster, namespace: str) -> None:
    group = f"{namespace}.test.modelservice.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "low": {"type": "integer", "minimum": 0},
                                        "high": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.low <= self.high",
                                            "message": "spec.low must not exceed spec.high",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube_cluster.apply(crd)
    try:
        kube_cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/ranges.{group}", "--timeout=30s"
        )

        def manifest(low: int, high: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Range",
                "metadata": {"name": f"r{low}-{high}", "namespace": namespace},
                "spec": {"low": low, "high": high},
            }

        # Discovery of a new CRD takes a moment to reach kubectl's cache.
        wait_for("the new kind to be served", lambda: kube_cluster.apply(manifest(1, 2)))
        with pytest.raises(KubectlError) as refused:
            kube_cluster.apply(manifest(5, 2))
        assert "spec.low must not exceed spec.high" in str(refused.value)
        with pytest.raises(KubectlError) as below_minimum:
            kube_cluster.apply(manifest(-1, 2))
        assert "should be greater than or equal to 0" in str(below_minimum.value)
    finally:
        kube_cluster.kubectl("delete", "crd", f"ranges.{group}", "--wait=false")


def test_gpu_pod_lands_on_a_gpu_node(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(
        pod(
            "two-gpus",
            tolerations=[GPU_TOLERATION],
            resources={"limits": {"nvidia.com/gpu": "2"}},
        ),
        namespace,
    )
    node = wait_for(
        "the GPU pod to be scheduled",
        lambda: kube_cluster.get("pod", "two-gpus", "-n", namespace)["spec"].get("nodeName"),
    )
    assert node in GPU_NODES
    wait_for(
        "the GPU pod to run",
        lambda: (
            kube_cluster.get("pod", "two-gpus", "-n", namespace)["status"]["phase"] == "Running"
        ),
    )


def test_mig_pod_lands_on_the_mig_node(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(
        pod(
            "mig-slice",
            tolerations=[GPU_TOLERATION],
            resources={"limits": {"nvidia.com/mig-1g.10gb": "1"}},
        ),
        namespace,
    )
    node = wait_for(
        "the MIG pod to be scheduled",
        lambda: kube_cluster.get("pod", "mig-slice", "-n", namespace)["spec"].get("nodeName"),
    )
    assert node == "gpu-mig-1"


def test_gpu_ask_no_node_holds_stays_pending_with_the_schedulers_reason(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.apply(
        pod(
            "too-many-gpus",
            tolerations=[GPU_TOLERATION],
            resources={"limits": {"nvidia.com/gpu": "64"}},
        ),
        namespace,
    )

    def scheduling_failure() -> str | None:
        events = kube_cluster.get(
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=too-many-gpus,reason=FailedScheduling",
        )["items"]
        return events[0]["message"] if events else None

    message = wait_for("a FailedScheduling event", scheduling_failure)
    assert "Insufficient nvidia.com/gpu" in message
    assert message.startswith(f"0/{len(kube_cluster.get('nodes')['items'])} nodes are available")
    found = kube_cluster.get("pod", "too-many-gpus", "-n", namespace)
    assert found["status"]["phase"] == "Pending"
    assert "nodeName" not in found["spec"]
    scheduled = next(c for c in found["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == "Unschedulable"


def job(name: str, annotations: dict[str, str], backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                },
            },
        },
    }


def job_condition(kube_cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any] | None:
    conditions = kube_cluster.get("job", name, "-n", namespace)["status"].get("conditions", [])
    final = [c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
    return final[0] if final else None


def job_pod(kube_cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    pods = kube_cluster.get("pods", "-n", namespace, "-l", f"job-name={name}")["items"]
    return dict(pods[0])


def test_job_completes_with_its_scripted_termination_message(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    result = '{"status": "Succeeded", "metrics": {"accuracy": 0.97}}'
    kube_cluster.apply(
        job("trains", {"sim.modelservice.dev/termination-message": result}), namespace
    )
    condition = wait_for(
        "the Job to finish", lambda: job_condition(kube_cluster, namespace, "trains")
    )
    assert condition["type"] == "Complete"
    terminated = job_pod(kube_cluster, namespace, "trains")["status"]["containerStatuses"][0][
        "state"
    ]["terminated"]
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"]) == json.loads(result)


def test_job_pod_can_be_scripted_to_fail_after_a_while(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.apply(
        job(
            "ooms",
            {
                "sim.modelservice.dev/outcome": "fail",
                "sim.modelservice.dev/reason": "OOMKilled",
                "sim.modelservice.dev/exit-code": "137",
                "sim.modelservice.dev/duration": "3s",
                "sim.modelservice.dev/termination-message": "out of memory in epoch 2",
            },
        ),
        namespace,
    )
    running = wait_for(
        "the Job's pod to run",
        lambda: job_pod(kube_cluster, namespace, "ooms")["status"]["phase"] == "Running",
    )
    assert running
    assert job_condition(kube_cluster, namespace, "ooms") is None
    condition = wait_for(
        "the Job to fail", lambda: job_condition(kube_cluster, namespace, "ooms"), timeout=60
    )
    assert condition["type"] == "Failed"
    assert condition["reason"] == "BackoffLimitExceeded"
    terminated = job_pod(kube_cluster, namespace, "ooms")["status"]["containerStatuses"][0][
        "state"
    ]["terminated"]
    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
    assert terminated["message"] == "out of memory in epoch 2"


def deployment(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    }


def test_deployment_becomes_available(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(deployment("web"), namespace)
    kube_cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=60s"
    )
    assert kube_cluster.get("deployment", "web", "-n", namespace)["status"]["readyReplicas"] == 2


def test_pod_can_be_scripted_to_crash_loop(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(
        deployment(
            "crashes",
            {
                "sim.modelservice.dev/waiting-reason": "CrashLoopBackOff",
                "sim.modelservice.dev/waiting-message": "back-off 5m0s restarting failed container",
                "sim.modelservice.dev/last-reason": "OOMKilled",
            },
        ),
        namespace,
    )

    def waiting_status() -> dict[str, Any] | None:
        pods = kube_cluster.get("pods", "-n", namespace, "-l", "app=crashes")["items"]
        statuses = pods[0]["status"].get("containerStatuses", []) if pods else []
        return statuses[0] if statuses and "waiting" in statuses[0]["state"] else None

    status = wait_for("the crash loop", waiting_status)
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert status["ready"] is False
    found = kube_cluster.get("deployment", "crashes", "-n", namespace)
    assert found["status"].get("readyReplicas", 0) == 0


def test_deleting_an_owner_collects_its_children(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(deployment("owned"), namespace)
    kube_cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/owned", "--timeout=60s"
    )
    assert kube_cluster.get("replicasets", "-n", namespace, "-l", "app=owned")["items"]
    kube_cluster.kubectl("delete", "deployment", "owned", "-n", namespace, "--wait=false")
    wait_for(
        "the ReplicaSet and pods to be collected",
        lambda: (
            not kube_cluster.get("replicasets,pods", "-n", namespace, "-l", "app=owned")["items"]
        ),
    )


def test_restricted_namespace_refuses_a_privileged_pod(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    privileged = pod("privileged")
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(KubectlError) as refused:
        kube_cluster.apply(privileged, namespace)
    assert 'violates PodSecurity "restricted:latest"' in str(refused.value)
    assert "privileged" in str(refused.value)
    compliant = pod("restricted", securityContext={"runAsNonRoot": True})
    compliant["spec"]["containers"][0]["securityContext"] = RESTRICTED_CONTAINER
    kube_cluster.apply(compliant, namespace)
    assert kube_cluster.get("pod", "restricted", "-n", namespace)["metadata"]["name"]


def test_persistent_volume_claims_bind_through_the_default_class(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        namespace,
    )
    wait_for(
        "the claim to bind",
        lambda: (
            kube_cluster.get("pvc", "models", "-n", namespace)["status"].get("phase") == "Bound"
        ),
    )
