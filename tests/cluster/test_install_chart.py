"""The Helm chart on the local cluster: dry run, install, test, upgrade, uninstall."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kubectl import KubeCluster, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelservice-operator"
CRD = "modelservices.modelservice.dev"
RELEASE = "mso"
# The chart's cluster-scoped objects carry the release's instance label.
CLUSTER_KINDS = "clusterroles,clusterrolebindings"
NAMESPACED_KINDS = "deployments,serviceaccounts,rolebindings,services,jobs,pods"


REPLICAS = 2  # values.yaml replicaCount: one leader, one standby


def instance_selector(release: str) -> str:
    return f"app.kubernetes.io/instance={release},app.kubernetes.io/part-of=modelservice-operator"


def operator_pod_env(cluster: KubeCluster, namespace: str) -> dict[str, str]:
    """Env of the operator container, the same in every running (not terminating) replica."""
    pods = [
        pod
        for pod in cluster.get("pods", "-n", namespace, "-l", instance_selector(RELEASE))["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and pod["metadata"]["labels"].get("app.kubernetes.io/component") != "test"
    ]
    envs = [
        {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]} for pod in pods
    ]
    # ValueError: wait_for retries while a rollout is under way (replicas differ).
    if len(pods) != REPLICAS or any(env != envs[0] for env in envs):
        raise ValueError(f"{len(pods)} operator pods, {len(envs)} envs")
    return envs[0]


@pytest.mark.parametrize(
    "values", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name
)
def test_template_passes_server_side_dry_run(
    kube_cluster: KubeCluster, namespace: str, values: Path
) -> None:
    """Every ci/ variant renders objects the API server accepts (hooks and the CRD included)."""
    rendered = kube_cluster.helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values),
        "--include-crds",
        # The namespaced variant's RoleBindings need namespaces that exist.
        *(["--set", f"watchNamespaces={{{namespace}}}"] if "namespaced" in values.name else []),
    )
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    # ServiceMonitor needs the Prometheus Operator's CRD, which this cluster does not have;
    # the unit tests check its shape.
    documents = [d for d in documents if d["kind"] != "ServiceMonitor"]
    kube_cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        # The CRD may already be installed by another manager (the operator tests apply it
        # client-side); a dry run may take its fields without conflict, it changes nothing.
        "--force-conflicts",
        "--field-manager=mso-test",
        "-f",
        "-",
        input="\n---\n".join(json.dumps(d) for d in documents),
    )


def test_install_upgrade_uninstall(kube_cluster: KubeCluster, namespace: str) -> None:
    release = ["-n", namespace, RELEASE, str(CHART)]
    output = kube_cluster.helm(
        "install",
        *release,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--wait",
        "--timeout",
        "120s",
    )
    assert "helm test" in output  # NOTES.txt says what to do next
    assert f"-n {namespace} -f deploy/samples/" in output
    crd = kube_cluster.get("crd", CRD)
    assert any(
        c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"]
    )
    env = operator_pod_env(kube_cluster, namespace)
    assert env["MSO_OPERATOR_NAMESPACES"] == namespace
    assert env["MSO_OPERATOR_DEFAULT_IMAGE"] == "modelservice-serving:0.1.0"

    # helm test: a Job as the operator's ServiceAccount (kwok completes Job pods).
    kube_cluster.helm("test", RELEASE, "-n", namespace, "--timeout", "120s")

    # A changed value reaches every replica (a rolling update, one new pod at a time).
    kube_cluster.helm(
        "upgrade",
        *release,
        "--reuse-values",
        "--set",
        "serving.defaultImage=serving:v2",
        "--set",
        "gpu.resourceName=amd.com/gpu",
        "--wait",
        "--timeout",
        "120s",
    )
    env = wait_for(
        "the upgraded operator pod",
        lambda: (
            (e := operator_pod_env(kube_cluster, namespace))["MSO_OPERATOR_DEFAULT_IMAGE"]
            == "serving:v2"
            and e
        ),
        timeout=90,
    )
    assert env["MSO_OPERATOR_GPU_RESOURCE"] == "amd.com/gpu"
    assert env["MSO_OPERATOR_NAMESPACES"] == namespace  # --reuse-values kept it
    history = kube_cluster.helm("history", RELEASE, "-n", namespace, "-o", "json")
    assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]

    kube_cluster.helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s")
    selector = instance_selector(RELEASE)
    leftover_cluster = kube_cluster.get(CLUSTER_KINDS, "-l", selector)["items"]
    # Only this release's cluster objects (named after its namespace) count.
    leftover_cluster = [o for o in leftover_cluster if namespace in o["metadata"]["name"]]
    assert leftover_cluster == []

    def nothing_left() -> bool:
        items: list[dict[str, Any]] = kube_cluster.get(
            NAMESPACED_KINDS, "-n", namespace, "-l", selector
        )["items"]
        return not items

    wait_for("the release's namespaced objects to go", nothing_left, timeout=60)
    assert kube_cluster.get("crd", CRD)["metadata"]["name"] == CRD  # the CRD is kept


def test_schema_error_is_clear_on_install(kube_cluster: KubeCluster, namespace: str) -> None:
    result = subprocess.run(
        [
            str(kube_cluster.bin_dir / "helm"),
            "--kubeconfig",
            str(kube_cluster.kubeconfig),
            "install",
            "-n",
            namespace,
            RELEASE,
            str(CHART),
            "--set",
            "watchNamespaces={Bad_NS}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "/watchNamespaces/0" in result.stderr
    assert kube_cluster.helm("list", "-n", namespace, "-q").strip() == ""
