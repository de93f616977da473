"""KEDA ScaledObjects are granted only when asked for: chart value keda.enabled, or the
kustomize component deploy/components/keda; both grant the same reviewed rules."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import Manifests, by_kind, one
from .test_deploy_rbac import REVIEWED_NAMESPACED, Permission, permissions

# Added to the manager role with KEDA; why each one is needed:
REVIEWED_KEDA: dict[Permission, str] = {
    ("keda.sh", "scaledobjects", "list"): "reconciler.observe: the predictor's ScaledObject",
    ("keda.sh", "scaledobjects", "create"): "kube.Kube.apply when it creates",
    ("keda.sh", "scaledobjects", "patch"): "kube.Kube.apply (server-side apply)",
    ("keda.sh", "scaledobjects", "delete"): "metric changed to cpu: the HPA takes over",
    ("autoscaling", "horizontalpodautoscalers", "delete"): "KEDA took over from the HPA",
}


def keda_env(manifests: Manifests) -> str:
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    values = [e["value"] for e in container["env"] if e["name"] == "MSO_OPERATOR_KEDA"]
    assert len(values) == 1, container["env"]
    return str(values[0])


def manager_rules(manifests: Manifests) -> set[Permission]:
    return permissions(one(manifests, "ClusterRole", "-manager"))


def test_chart_grants_scaled_objects_only_with_keda_enabled(
    render_chart: Callable[..., Manifests],
) -> None:
    default = render_chart()
    assert manager_rules(default) == set(REVIEWED_NAMESPACED)
    assert keda_env(default) == "off"
    keda = render_chart(sets=["keda.enabled=true"])
    assert manager_rules(keda) == set(REVIEWED_NAMESPACED) | set(REVIEWED_KEDA)
    assert keda_env(keda) == "auto"


def test_kustomize_component_grants_the_same(kustomize: Callable[[str], Manifests]) -> None:
    default = kustomize("default")
    assert manager_rules(default) == set(REVIEWED_NAMESPACED)
    assert keda_env(default) == "off"
    keda = kustomize("keda")
    assert manager_rules(keda) == set(REVIEWED_NAMESPACED) | set(REVIEWED_KEDA)
    assert keda_env(keda) == "auto"
    names = {r["metadata"]["name"] for r in by_kind(keda, "ClusterRole")}
    assert names == {"modelservice-operator-framework", "modelservice-operator-manager"}
