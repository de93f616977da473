"""`kubectl apply -k deploy/default` on the local cluster: install, change, uninstall.

deploy/default installs into the fixed namespace modelservice-system with fixed
cluster-scoped names, so the test owns that namespace for its duration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.kubectl import KubeCluster, wait_for

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "modelservice-system"
CRD = "modelservices.modelservice.dev"
PART_OF = "app.kubernetes.io/part-of=modelservice-operator"
APPLY = ("apply", "--server-side", "--force-conflicts", "--field-manager=mso-kustomize-test")


def operator_env(cluster: KubeCluster) -> dict[str, str]:
    pods = [
        p
        for p in cluster.get(
            "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=modelservice-operator"
        )["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]
    envs = [
        {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]} for pod in pods
    ]
    # ValueError: wait_for retries while a rollout is under way (the replicas differ).
    if len(pods) != 2 or any(env != envs[0] for env in envs):
        raise ValueError(f"{len(pods)} ready operator pods")
    return envs[0]


@pytest.fixture
def kustomize_install(kube_cluster: KubeCluster) -> Iterator[None]:
    yield
    kube_cluster.kubectl(
        "delete",
        "-k",
        str(REPO / "deploy" / "default"),
        "-l",
        PART_OF,
        "--ignore-not-found",
        "--wait=false",
        check=False,
    )


def test_apply_change_delete(
    kube_cluster: KubeCluster, kustomize_install: None, tmp_path: Path
) -> None:
    kube_cluster.kubectl(*APPLY, "-k", str(REPO / "deploy" / "default"))
    kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    kube_cluster.kubectl(
        "rollout", "status", "-n", NAMESPACE, "deployment/modelservice-operator", "--timeout=90s"
    )
    assert operator_env(kube_cluster)["MSO_OPERATOR_NAMESPACES"] == ""

    # A user's overlay on deploy/default (kustomize wants a relative path to it): a changed
    # setting reaches the running pod.
    (tmp_path / "kustomization.yaml").write_text(
        f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(REPO / "deploy" / "default", tmp_path)}
patches:
  - target: {{kind: Deployment, name: modelservice-operator}}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/env/1/value
        value: registry.example.com/serving:v2
"""
    )
    kube_cluster.kubectl(*APPLY, "-k", str(tmp_path))
    kube_cluster.kubectl(
        "rollout", "status", "-n", NAMESPACE, "deployment/modelservice-operator", "--timeout=90s"
    )
    wait_for(
        "the changed default image in the running operator",
        lambda: (
            operator_env(kube_cluster)["MSO_OPERATOR_DEFAULT_IMAGE"]
            == "registry.example.com/serving:v2"
        ),
        timeout=90,
    )

    # Uninstall everything but the CRD (and so every ModelService) by the part-of label.
    kube_cluster.kubectl(
        "delete",
        "-k",
        str(REPO / "deploy" / "default"),
        "-l",
        PART_OF,
        "--wait=true",
        "--timeout=120s",
    )
    leftovers = kube_cluster.get("clusterroles,clusterrolebindings", "-l", PART_OF)["items"]
    assert [
        o["metadata"]["name"]
        for o in leftovers
        if o["metadata"]["name"].startswith("modelservice-operator")
    ] == []
    assert kube_cluster.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found").strip() == ""
    assert kube_cluster.get("crd", CRD)["metadata"]["name"] == CRD
