"""The kustomize tree: deploy/default and deploy/namespaced render a complete operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelservice_operator.settings import OperatorSettings

from .conftest import DEPLOY, Manifests, by_kind, one

OPERATOR_NAMESPACE = "modelservice-system"


def operator_env(manifests: Manifests) -> dict[str, str]:
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_default_installs_crd_rbac_and_two_restricted_replicas_electing_one(
    kustomize: Callable[[str], Manifests],
) -> None:
    manifests = kustomize("default")
    assert sorted(m["kind"] for m in manifests) == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "NetworkPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    crd = one(manifests, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "modelservices.modelservice.dev"
    deployment = one(manifests, "Deployment")
    assert deployment["metadata"]["namespace"] == OPERATOR_NAMESPACE
    spec: dict[str, Any] = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["MSO_OPERATOR_LEADER_ELECTION"]["value"] == "true"
    assert env["MSO_OPERATOR_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    lease_role = one(manifests, "Role")
    assert lease_role["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert one(manifests, "RoleBinding")["roleRef"]["name"] == lease_role["metadata"]["name"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["image"] == "modelservice-operator:0.1.0"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    for binding in by_kind(manifests, "ClusterRoleBinding"):
        assert binding["subjects"][0]["namespace"] == OPERATOR_NAMESPACE


def test_operator_objects_but_the_crd_carry_the_uninstall_label(
    kustomize: Callable[[str], Manifests],
) -> None:
    """`kubectl delete -k deploy/default -l app.kubernetes.io/part-of=...` keeps the CRD."""
    for manifest in kustomize("default"):
        labels = manifest["metadata"].get("labels") or {}
        labelled = labels.get("app.kubernetes.io/part-of") == "modelservice-operator"
        assert labelled == (manifest["kind"] != "CustomResourceDefinition"), manifest["kind"]


def test_env_vars_are_settings(kustomize: Callable[[str], Manifests]) -> None:
    known = {f"MSO_OPERATOR_{field.upper()}" for field in OperatorSettings.model_fields}
    for overlay in ("default", "namespaced"):
        assert set(operator_env(kustomize(overlay))) <= known


def test_namespaced_overlay_watches_one_namespace(kustomize: Callable[[str], Manifests]) -> None:
    manifests = kustomize("namespaced")
    assert operator_env(manifests)["MSO_OPERATOR_NAMESPACES"] == "modelservice-workloads"
    assert operator_env(kustomize("default"))["MSO_OPERATOR_NAMESPACES"] == ""


def test_kustomize_uses_the_canonical_crd_file() -> None:
    kustomization = (DEPLOY / "crd" / "kustomization.yaml").read_text()
    assert "modelservices.modelservice.dev.yaml" in kustomization


def test_metrics_port_is_served_and_declared(kustomize: Callable[[str], Manifests]) -> None:
    manifests = kustomize("default")
    port = int(operator_env(manifests)["MSO_OPERATOR_METRICS_PORT"])
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
