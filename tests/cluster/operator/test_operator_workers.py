"""Several training workers on simulated GPU nodes: an Indexed Job, names, one version.

Four workers with one A100 each fill the simulated 4-GPU A100 node; the operator makes the
headless Service that names them, each pod gets its completion index and TF_CONFIG, and the
version the chief reports is gated and served once.
"""

from __future__ import annotations

import json
import re
from typing import Any

from opharness import OperatorProcess, apply, sample_manifest


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], value)


def test_four_gpu_workers_train_one_version(operator: OperatorProcess, namespace: str) -> None:
    cluster = operator.cluster
    manifest = sample_manifest(accuracy=0.96)
    manifest["spec"]["training"].update(
        workers=4, gpu={"count": 1, "product": "NVIDIA-A100-SXM4-40GB"}
    )
    ms = apply(cluster, manifest, namespace)
    status = ms.wait_phase("Ready", timeout=120)
    assert status["model"]["version"] == 1
    assert [v["version"] for v in status["versions"]] == [1]
    assert status["versions"][0]["qualityGate"] == "Passed"

    (job,) = ms.children("job")
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["podFailurePolicy"]["rules"][-1]["action"] == "FailJob"
    assert job["status"]["succeeded"] == 4

    service = cluster.get("service", name, "-n", namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["name"] == "digits"

    pods = cluster.get("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={name}")
    placed = {}
    for pod in pods["items"]:
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        spec = pod["spec"]
        assert spec["hostname"] == f"{name}-{index}"
        assert spec["subdomain"] == name
        (container,) = spec["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        env = {e["name"]: e.get("value") for e in container["env"]}
        config = json.loads(_expand(env["TF_CONFIG"], {"MSO_WORKER_INDEX": index}))
        assert config["task"] == {"type": "worker", "index": int(index)}
        assert config["cluster"]["worker"][int(index)].startswith(f"{name}-{index}.{name}:")
        placed[int(index)] = spec["nodeName"]
    # One worker per GPU: all four on the 4-GPU A100 node, as the product asks.
    assert placed == {i: "gpu-a100-1" for i in range(4)}


def test_more_gpu_workers_than_gpus_say_why(operator: OperatorProcess, namespace: str) -> None:
    """Five one-GPU workers on the 4-GPU product: the fifth cannot be placed, and status says so."""
    cluster = operator.cluster
    manifest = sample_manifest(accuracy=0.96)
    manifest["spec"]["training"].update(
        workers=5, gpu={"count": 1, "product": "NVIDIA-A100-SXM4-40GB"}
    )
    manifest["spec"]["training"]["podAnnotations"]["sim.modelservice.dev/duration"] = "10m"
    ms = apply(cluster, manifest, namespace)

    def unschedulable(status: dict[str, Any]) -> dict[str, Any] | None:
        for cond in status.get("conditions") or []:
            if cond["type"] == "Trained" and cond["reason"] == "Unschedulable":
                return dict(cond)
        return None

    trained = ms.wait("Trained=Unschedulable", unschedulable, timeout=90)
    # The scheduler's own words: no node has a fifth free GPU of that product.
    assert "nvidia.com/gpu" in trained["message"]
