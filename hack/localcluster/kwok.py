"""The simulated (kwok) nodes: their shapes, kwok's stages, and the objects that make them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from localcluster.processes import run
from localcluster.state import HERE, STATE_DIR


@dataclass(frozen=True)
class SimulatedNode:
    """One kwok node: its name, size, GPUs and labels."""

    name: str
    cpu: str
    memory: str
    gpu_resource: str | None = None
    gpu_count: int = 0
    gpu_product: str | None = None


NODES = (
    SimulatedNode("cpu-1", "16", "64Gi"),
    SimulatedNode("cpu-2", "16", "64Gi"),
    SimulatedNode("gpu-h100-1", "96", "1Ti", "nvidia.com/gpu", 8, "NVIDIA-H100-80GB-HBM3"),
    SimulatedNode("gpu-a100-1", "64", "512Gi", "nvidia.com/gpu", 4, "NVIDIA-A100-SXM4-40GB"),
    SimulatedNode(
        "gpu-mig-1", "64", "512Gi", "nvidia.com/mig-1g.10gb", 7, "NVIDIA-A100-SXM4-40GB-MIG-1g.10gb"
    ),
)


def write_kwok_config(module_stages: Path, target: Path) -> None:
    """kwok's node stages from its module, with this project's pod stages."""
    docs = [
        (module_stages / "node" / "fast" / "node-initialize.yaml").read_text(),
        (
            module_stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml"
        ).read_text(),
        (module_stages / "pod" / "fast" / "pod-delete.yaml").read_text(),
        (HERE / "kwok-pod-stages.yaml").read_text(),
    ]
    target.write_text("\n---\n".join(doc.strip() for doc in docs) + "\n")


def cluster_objects() -> str:
    """Simulated nodes and the default StorageClass, as a JSON list."""
    items: list[dict[str, object]] = []
    for node in NODES:
        # ephemeral-storage: child pods request it, and a node without it fits none of them.
        resources: dict[str, str] = {
            "cpu": node.cpu,
            "memory": node.memory,
            "pods": "110",
            "ephemeral-storage": "200Gi",
        }
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        }
        taints: list[dict[str, str]] = []
        if node.gpu_resource:
            resources[node.gpu_resource] = str(node.gpu_count)
            labels["nvidia.com/gpu.product"] = str(node.gpu_product)
            labels["nvidia.com/gpu.count"] = str(node.gpu_count)
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "labels": labels,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "spec": {"taints": taints},
                "status": {"capacity": resources, "allocatable": resources},
            }
        )
    items.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
    )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def nodes() -> None:
    kubeconfig = STATE_DIR / "kubeconfig"
    kubectl = str(STATE_DIR / "bin" / "kubectl")
    columns = ",".join(
        [
            "NAME:.metadata.name",
            "READY:.status.conditions[?(@.type=='Ready')].status",
            "CPU:.status.allocatable.cpu",
            "MEMORY:.status.allocatable.memory",
            "GPU:.status.allocatable.nvidia\\.com/gpu",
            "MIG-1G.10GB:.status.allocatable.nvidia\\.com/mig-1g\\.10gb",
            "PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product",
        ]
    )
    run(kubectl, "--kubeconfig", kubeconfig, "version")
    run(kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", f"custom-columns={columns}")
