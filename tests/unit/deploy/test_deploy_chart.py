"""The Helm chart: lint, schema, CRD, the operator Deployment and the values that reach it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelservice_operator.settings import OperatorSettings

from .conftest import CHART, DEPLOY, Manifests, by_kind, one

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRD_NAME = "modelservices.modelservice.dev.yaml"
Helm = Callable[..., subprocess.CompletedProcess[str]]


def operator_container(manifests: Manifests) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(manifests: Manifests) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in operator_container(manifests)["env"]}


def test_chart_crd_is_byte_identical_to_deploy_crd() -> None:
    """ONE canonical CRD: deploy/crd. Refresh the chart's copy with `make sync-crd`."""
    canonical = (DEPLOY / "crd" / CRD_NAME).read_bytes()
    copy = (CHART / "crds" / CRD_NAME).read_bytes()
    assert copy == canonical, "charts/modelservice-operator/crds is stale: run `make sync-crd`"
    assert [p.name for p in (CHART / "crds").iterdir()] == [CRD_NAME]


def test_crd_is_not_a_template() -> None:
    """crds/ is installed by Helm before the templates and never deleted by `helm uninstall`."""
    for template in (CHART / "templates").rglob("*.yaml"):
        assert "CustomResourceDefinition" not in template.read_text(), template


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "modelservice-operator"
    assert chart["appVersion"]
    assert chart["version"]
    for path in (
        "values.yaml",
        "values.schema.json",
        "templates/_helpers.tpl",
        "templates/NOTES.txt",
        ".helmignore",
    ):
        assert (CHART / path).is_file(), path
    assert list((CHART / "templates" / "tests").glob("*.yaml")), "helm test hooks"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(helm: Helm, values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("watchNamespaces[0]=Team_A", "/watchNamespaces/0"),
        ("image.pullPolicy=Sometimes", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ("gpu.resourceName=gpu", "/gpu/resourceName"),
        ("resources.limits.memory=lots", "/resources/limits/memory"),
        ("replicaCount=0", "/replicaCount"),
        ("maxConcurrentReconciles=0", "/maxConcurrentReconciles"),
        ("leaderElection.leaseDurationSeconds=ten", "/leaderElection/leaseDurationSeconds"),
        ("reconcileIntervalSeconds=0", "/reconcileIntervalSeconds"),
        ("metrics.port=8080", "/metrics/port"),
        ("serving.defaultImage=", "/serving/defaultImage"),
    ],
)
def test_schema_refuses_bad_values_clearly(helm: Helm, setting: str, message: str) -> None:
    result = helm("template", "mso", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_service_monitor_without_service_is_refused(helm: Helm) -> None:
    result = helm("template", "mso", str(CHART), "--set", "metrics.serviceMonitor.enabled=true")
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["replicaCount=2", "leaderElection.enabled=false"],
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            ["leaderElection.renewDeadlineSeconds=8"],
            "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
    ],
)
def test_two_active_operators_are_refused(helm: Helm, sets: list[str], message: str) -> None:
    args = [arg for value in sets for arg in ("--set", value)]
    result = helm("template", "mso", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_default_render_is_two_restricted_replicas_electing_one_leader(
    render_chart: Callable[..., Manifests],
) -> None:
    manifests = render_chart()
    deployment = one(manifests, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = operator_container(manifests)["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["MSO_OPERATOR_LEADER_ELECTION"]["value"] == "true"
    assert by_name["MSO_OPERATOR_LEADER_ELECTION_ID"]["value"] == "mso-modelservice-operator"
    assert by_name["MSO_OPERATOR_IDENTITY"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    assert by_name["MSO_OPERATOR_LEADER_ELECTION_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert by_name["MSO_OPERATOR_LEASE_DURATION_S"]["value"] == "8"
    assert by_name["MSO_OPERATOR_MAX_CONCURRENT_RECONCILES"]["value"] == "10"
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    role = one(manifests, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "ops"
    binding = one(manifests, "RoleBinding", "-leader-election")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_one_replica_without_election_is_recreated(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(sets=["replicaCount=1", "leaderElection.enabled=false"])
    spec = one(manifests, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert "MSO_OPERATOR_LEADER_ELECTION" not in env_of(manifests)
    assert not by_kind(manifests, "Role")


def test_default_render_is_restricted(
    render_chart: Callable[..., Manifests],
) -> None:
    manifests = render_chart()
    deployment = one(manifests, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(manifests)
    assert container["image"] == "modelservice-operator:0.1.0"  # appVersion
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert env_of(manifests)["MSO_OPERATOR_NAMESPACES"] == ""
    assert not by_kind(manifests, "Service")
    assert not by_kind(manifests, "ServiceMonitor")
    assert one(manifests, "CustomResourceDefinition")  # --include-crds


def test_every_operator_env_var_is_a_setting(render_chart: Callable[..., Manifests]) -> None:
    """Env names follow operator/modelservice_operator/settings.py, never a guess."""
    known = {f"MSO_OPERATOR_{field.upper()}" for field in OperatorSettings.model_fields}
    for values in CI_VALUES:
        unknown = set(env_of(render_chart(values))) - known
        assert not unknown, f"{values.name}: {unknown}"


def test_values_reach_the_operator(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(CHART / "ci" / "customized-values.yaml")
    env = env_of(manifests)
    assert (
        env["MSO_OPERATOR_DEFAULT_IMAGE"]
        == "registry.example.com/ml/modelservice-serving:0.1.0-gpu"
    )
    assert env["MSO_OPERATOR_GPU_RESOURCE"] == "amd.com/gpu"
    assert env["MSO_OPERATOR_GPU_TOLERATION_KEY"] == "amd.com/gpu"
    assert env["MSO_OPERATOR_GPU_PRODUCT_LABEL"] == "amd.com/gpu.product-name"
    assert env["MSO_OPERATOR_RECONCILE_INTERVAL_S"] == "30"
    assert env["MSO_OPERATOR_MAX_CONCURRENT_RECONCILES"] == "25"
    assert env["MSO_OPERATOR_LOG_TAIL_LINES"] == "50"  # extraEnv
    pod = one(manifests, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "ml-platform"}
    assert pod["metadata"]["labels"]["example.com/cost-center"] == "ml"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["spec"]["affinity"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    container = operator_container(manifests)
    assert container["image"] == "registry.example.com/ml/modelservice-operator:0.1.0-rc.1"
    assert container["resources"]["limits"]["memory"] == "512Mi"


def test_watched_namespaces_reach_the_operator(render_chart: Callable[..., Manifests]) -> None:
    env = env_of(render_chart(CHART / "ci" / "namespaced-values.yaml"))
    assert env["MSO_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_metrics_toggle(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(CHART / "ci" / "metrics-values.yaml")
    service = one(manifests, "Service", "-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in operator_container(
        manifests
    )["ports"]
    assert env_of(manifests)["MSO_OPERATOR_METRICS_PORT"] == "9090"


def test_metrics_off_by_default(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(CHART / "ci" / "default-values.yaml")
    assert "MSO_OPERATOR_METRICS_PORT" not in env_of(manifests)
    assert all(p["name"] != "metrics" for p in operator_container(manifests)["ports"])


def test_helm_test_hook_uses_the_operator_identity(
    render_chart: Callable[..., Manifests],
) -> None:
    manifests = render_chart(CHART / "ci" / "namespaced-values.yaml")
    job = one(manifests, "Job", "-test-access")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    assert "/namespaces/team-a/modelservices" in pod["containers"][0]["args"][0]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_existing_service_account(render_chart: Callable[..., Manifests], helm: Helm) -> None:
    manifests = render_chart(sets=["serviceAccount.create=false", "serviceAccount.name=ops-sa"])
    assert not by_kind(manifests, "ServiceAccount")
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "ops-sa"
    )
    result = helm("template", "mso", str(CHART), "--set", "serviceAccount.create=false")
    assert "serviceAccount.name is required" in result.stderr


def test_notes_say_what_to_apply_next(helm: Helm, tmp_path: Path) -> None:
    """NOTES.txt rendered through a copy of the chart (helm template never prints it)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files").mkdir()
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n'
    )
    for values, namespace in ((None, "ops"), (CHART / "ci" / "namespaced-values.yaml", "team-a")):
        args = ["template", "mso", str(chart), "-n", "ops", "--show-only", "templates/notes.yaml"]
        result = helm(*args, *(["-f", str(values)] if values else []))
        assert result.returncode == 0, result.stderr
        notes = yaml.safe_load(result.stdout)["notes"]
        assert "kubectl apply" in notes
        assert "deploy/samples/" in notes
        assert "kubectl get modelservices" in notes
        assert "helm test mso -n ops" in notes
        if values:
            assert f"-n {namespace} -f deploy/samples/" in notes
