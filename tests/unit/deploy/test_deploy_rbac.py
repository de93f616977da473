"""The operator's RBAC: exactly the reviewed verbs, the same in kustomize and in the chart.

``REVIEWED`` is the one place a permission is justified: adding a verb to the operator means
adding it here with the code that uses it, and to deploy/rbac (the chart must follow). The
cluster test tests/cluster/test_install_rbac.py proves the same set is enough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .conftest import CHART, DEPLOY, Manifests, by_kind, one

Permission = tuple[str, str, str]  # (apiGroup, resource, verb)

# In every watched namespace; why each one is needed:
REVIEWED_NAMESPACED: dict[Permission, str] = {
    ("modelservice.dev", "modelservices", "list"): "kopf: watch stream into the cache",
    ("modelservice.dev", "modelservices", "watch"): "kopf: watch stream into the cache",
    ("modelservice.dev", "modelservices/status", "patch"): "reconciler.apply.write_status",
    ("modelservice.dev", "modelservices/finalizers", "update"): "blockOwnerDeletion owner refs",
    ("", "events", "create"): "kopf handler events, kube.Kube.event",
    ("", "events", "list"): "kube.Kube.list_events: Karpenter's word on pending pods",
    ("batch", "jobs", "list"): "kopf watch into the cache (handlers, @kopf.index)",
    ("batch", "jobs", "watch"): "kopf watch into the cache; handlers.on_child_event",
    ("batch", "jobs", "create"): "kube.Kube.apply creating one training Job per version",
    ("batch", "jobs", "patch"): "kube.Kube.apply; the training result annotation",
    ("batch", "jobs", "delete"): "superseded, beyond historyLimit, version taken",
    ("apps", "deployments", "list"): "kopf watch into the cache",
    ("apps", "deployments", "watch"): "kopf watch into the cache; handlers.on_child_event",
    ("apps", "deployments", "create"): "kube.Kube.apply creating it",
    ("apps", "deployments", "patch"): "kube.Kube.apply (server-side apply) on drift",
    ("", "services", "list"): "kopf watch into the cache",
    ("", "services", "watch"): "kopf watch into the cache",
    ("", "services", "create"): "kube.Kube.apply creating it",
    ("", "services", "patch"): "kube.Kube.apply on drift",
    ("", "services", "delete"): "a pruned multi-worker Job's headless Service",
    ("autoscaling", "horizontalpodautoscalers", "list"): "kopf watch into the cache",
    ("autoscaling", "horizontalpodautoscalers", "watch"): "kopf watch into the cache",
    ("autoscaling", "horizontalpodautoscalers", "create"): "kube.Kube.apply creating it",
    ("autoscaling", "horizontalpodautoscalers", "patch"): "kube.Kube.apply on drift",
    ("policy", "poddisruptionbudgets", "list"): "kopf watch into the cache",
    ("policy", "poddisruptionbudgets", "watch"): "kopf watch into the cache",
    ("policy", "poddisruptionbudgets", "create"): "kube.Kube.apply creating it",
    ("policy", "poddisruptionbudgets", "patch"): "kube.Kube.apply on drift",
    ("policy", "poddisruptionbudgets", "delete"): "PDB no longer applies",
    ("networking.k8s.io", "networkpolicies", "list"): "kopf watch into the cache",
    ("networking.k8s.io", "networkpolicies", "watch"): "kopf watch into the cache",
    ("networking.k8s.io", "networkpolicies", "create"): "kube.Kube.apply creating it",
    ("networking.k8s.io", "networkpolicies", "patch"): "kube.Kube.apply on drift",
    ("", "persistentvolumeclaims", "list"): "kopf watch into the cache",
    ("", "persistentvolumeclaims", "watch"): "kopf watch into the cache",
    ("", "persistentvolumeclaims", "create"): "kube.Kube.apply creating the model store",
    ("", "persistentvolumeclaims", "patch"): "kube.Kube.apply (a PATCH even when creating)",
    ("", "pods", "list"): "kopf watch into the cache",
    ("", "pods", "watch"): "kopf watch into the cache; handlers.on_child_event",
    ("", "pods/log", "get"): "training progress (log tail)",
}
# Cluster-scoped, whatever the namespaces: kopf's CRD observer.
REVIEWED_FRAMEWORK: dict[Permission, str] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "kopf resource observer",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "kopf resource observer",
}
# Cluster-scoped, only when watching a list of namespaces: kopf's namespace observer.
REVIEWED_NAMESPACE_OBSERVER: dict[Permission, str] = {
    ("", "namespaces", "list"): "kopf namespace observer (--namespace only)",
    ("", "namespaces", "watch"): "kopf namespace observer (--namespace only)",
}
# In the operator's own namespace only (a Role): the leader-election Lease.
REVIEWED_LEADER_ELECTION: dict[Permission, str] = {
    ("coordination.k8s.io", "leases", "get"): "leader.Leadership reads the Lease",
    ("coordination.k8s.io", "leases", "create"): "leader.Leadership, the first replica",
    ("coordination.k8s.io", "leases", "update"): "renew, take over, release (resourceVersion)",
}
# Never granted: no feature reads credentials or configuration objects.
FORBIDDEN_RESOURCES = {"secrets", "configmaps", "serviceaccounts/token", "*"}


def permissions(role: dict[str, Any]) -> set[Permission]:
    """Flatten a (Cluster)Role's rules into (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def load_yaml(path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / path).read_text())
    return loaded


def test_kustomize_manager_role_is_exactly_the_reviewed_set() -> None:
    role = load_yaml("rbac/common/manager_role.yaml")
    assert permissions(role) == set(REVIEWED_NAMESPACED)


def test_kustomize_leader_election_role_is_exactly_the_reviewed_set() -> None:
    role = load_yaml("rbac/common/leader_election_role.yaml")
    assert role["kind"] == "Role"
    assert permissions(role) == set(REVIEWED_LEADER_ELECTION)


def test_chart_leader_election_rules_are_the_kustomize_rules_comments_included() -> None:
    canonical = (DEPLOY / "rbac" / "common" / "leader_election_role.yaml").read_text()
    rules = canonical[canonical.index("rules:\n") :]
    assert rules in (CHART / "templates" / "rbac.yaml").read_text()


def test_kustomize_framework_roles_are_exactly_the_reviewed_sets() -> None:
    assert permissions(load_yaml("rbac/common/framework_role.yaml")) == set(REVIEWED_FRAMEWORK)
    observer = load_yaml("rbac/namespaced/namespace_observer_role.yaml")
    assert permissions(observer) == set(REVIEWED_NAMESPACE_OBSERVER)


def all_rbac_files() -> list[str]:
    return sorted(
        str(p.relative_to(DEPLOY)) for p in (DEPLOY / "rbac").rglob("*.yaml") if "role" in p.name
    )


@pytest.mark.parametrize("path", all_rbac_files())
def test_no_wildcards_and_no_secrets(path: str) -> None:
    document = load_yaml(path)
    for rule in document.get("rules", []):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"{path}: wildcard in {field}"
        assert not FORBIDDEN_RESOURCES & set(rule["resources"]), f"{path}: {rule['resources']}"
        assert not rule.get("resourceNames"), "names would make a verb silently partial"


def test_every_rule_is_commented_with_its_user() -> None:
    """Each rule in the kustomize roles says who uses it (kopf or this operator)."""
    for path in all_rbac_files():
        lines = (DEPLOY / path).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                above = [x.strip() for x in lines[max(0, index - 6) : index]]
                assert any(x.startswith("#") for x in above), f"{path}:{index + 1} uncommented"


def chart_rbac(manifests: Manifests) -> dict[str, set[Permission]]:
    """The chart's ClusterRoles by name suffix (-framework, -manager, -namespaces)."""
    return {
        role["metadata"]["name"].rsplit("-", 1)[1]: permissions(role)
        for role in by_kind(manifests, "ClusterRole")
    }


def test_chart_cluster_wide_grants_the_reviewed_set(
    render_chart: Callable[..., Manifests],
) -> None:
    manifests = render_chart()
    assert chart_rbac(manifests) == {
        "framework": set(REVIEWED_FRAMEWORK),
        "manager": set(REVIEWED_NAMESPACED),
    }
    # The only namespaced grant: the Lease, in the release namespace.
    assert [permissions(r) for r in by_kind(manifests, "Role")] == [set(REVIEWED_LEADER_ELECTION)]
    assert [b["metadata"]["namespace"] for b in by_kind(manifests, "RoleBinding")] == ["ops"]
    binding = one(manifests, "ClusterRoleBinding", "-manager")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mso-modelservice-operator", "namespace": "ops"}
    ]


def test_chart_namespaced_binds_manager_role_only_in_watched_namespaces(
    render_chart: Callable[..., Manifests],
) -> None:
    manifests = render_chart(CHART / "ci" / "namespaced-values.yaml")
    assert chart_rbac(manifests) == {
        "framework": set(REVIEWED_FRAMEWORK),
        "manager": set(REVIEWED_NAMESPACED),
        "namespaces": set(REVIEWED_NAMESPACE_OBSERVER),
    }
    bindings = [
        b for b in by_kind(manifests, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["name"].endswith("-manager")
        assert binding["subjects"][0]["namespace"] == "ops"
    cluster_bindings = {b["roleRef"]["name"] for b in by_kind(manifests, "ClusterRoleBinding")}
    assert not any(name.endswith("-manager") for name in cluster_bindings)


def test_chart_manager_rules_are_the_kustomize_rules_comments_included(
    helm: Callable[..., Any],
) -> None:
    """One set of rules, written twice: the chart's copy is the kustomize file's, verbatim."""
    canonical = (DEPLOY / "rbac" / "common" / "manager_role.yaml").read_text()
    rules = canonical[canonical.index("rules:\n") :]
    assert rules in (CHART / "templates" / "rbac.yaml").read_text()


def test_chart_rbac_can_be_turned_off(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(sets=["rbac.create=false"])
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(manifests, kind)


def test_kustomize_overlays_bind_the_reviewed_roles(
    kustomize: Callable[[str], Manifests],
) -> None:
    default = kustomize("default")
    assert {r["metadata"]["name"] for r in by_kind(default, "ClusterRole")} == {
        "modelservice-operator-framework",
        "modelservice-operator-manager",
    }
    namespaced = kustomize("namespaced")
    binding = next(
        b for b in by_kind(namespaced, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"
    )
    assert binding["metadata"]["namespace"] == "modelservice-workloads"
    assert binding["subjects"][0]["namespace"] == "modelservice-system"
    manager_bindings = [
        b
        for b in by_kind(namespaced, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "modelservice-operator-manager"
    ]
    assert not manager_bindings, "a namespaced operator must not get the manager role cluster-wide"
