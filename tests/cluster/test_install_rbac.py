"""The chart's RBAC is enough, and no more: the operator runs as the chart's ServiceAccount.

The chart is installed watching the test's namespace (its operator pod runs no code on the
simulated nodes). The real operator then runs here as a subprocess, authenticated with a
token of the chart's ServiceAccount, so the API server authorises every call it makes
against exactly the chart's (Cluster)Roles; it must drive the sample ModelService to Ready
without a single Forbidden. The operator process and the sample come from the operator's
own cluster harness (tests/cluster/operator/opharness.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import KubeCluster, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelservice-operator"
RELEASE = "mso"
SERVICE_ACCOUNT = f"{RELEASE}-modelservice-operator"

# The operator's harness (tests/cluster/operator/, on pytest's pythonpath).
opharness = pytest.importorskip("opharness", reason="the operator's cluster harness")


def token_kubeconfig(cluster: KubeCluster, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token)."""
    admin = json.loads(cluster.kubeconfig.read_text())
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=1h"
    ).strip()
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": SERVICE_ACCOUNT,
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def chart_release(kube_cluster: KubeCluster, namespace: str) -> Iterator[str]:
    """The chart, watching this test's namespace; uninstalled afterwards."""
    kube_cluster.helm(
        "install", "-n", namespace, RELEASE, str(CHART),
        "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s",
    )  # fmt: skip
    yield namespace
    kube_cluster.helm("uninstall", "-n", namespace, RELEASE, "--wait", check=False)


def change_serving(cluster: KubeCluster, namespace: str, name: str, min_replicas: int) -> None:
    patch = {"spec": {"serving": {"minReplicas": min_replicas}}}
    cluster.kubectl(
        "patch", "modelservice", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )


def can_i(cluster: KubeCluster, namespace: str, *args: str) -> bool:
    """`kubectl auth can-i` as the chart's ServiceAccount."""
    subject = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    answer = cluster.kubectl("auth", "can-i", *args, "--as", subject, check=False)
    return answer.strip() == "yes"


def test_operator_with_chart_permissions_drives_sample_to_ready(
    kube_cluster: KubeCluster, chart_release: str, tmp_path: Path
) -> None:
    namespace = chart_release
    as_operator = KubeCluster(
        kubeconfig=token_kubeconfig(kube_cluster, namespace, tmp_path / "operator.kubeconfig"),
        bin_dir=kube_cluster.bin_dir,
    )
    assert as_operator.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == (
        f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    )
    # With leader election as the chart runs it: the Lease in the release namespace (the
    # chart's Role) is part of what must be enough.
    operator = opharness.OperatorProcess(
        as_operator,
        namespace,
        tmp_path,
        extra_env={
            "MSO_OPERATOR_LEADER_ELECTION": "true",
            "MSO_OPERATOR_LEADER_ELECTION_NAMESPACE": namespace,
            "MSO_OPERATOR_LEADER_ELECTION_ID": "rbac-test",
        },
    )
    operator.start()
    try:
        service = opharness.apply(kube_cluster, opharness.sample_manifest(), namespace)
        status = service.wait_phase("Ready", timeout=120)
        assert status["phase"] == "Ready"
        # Changes exercise the patch and delete verbs: two replicas bring a PDB and patch
        # the Deployment and the HPA; back to one deletes the PDB.
        change_serving(kube_cluster, namespace, service.name, min_replicas=2)
        wait_for("the PDB", lambda: service.children("poddisruptionbudgets"), timeout=60)
        change_serving(kube_cluster, namespace, service.name, min_replicas=1)
        wait_for("no PDB", lambda: not service.children("poddisruptionbudgets"), timeout=60)
        service.wait_phase("Ready", timeout=60)
        lease = kube_cluster.get("lease", "rbac-test", "-n", namespace)
        assert lease["spec"]["holderIdentity"]
    finally:
        operator.stop()
    logs = operator.logs()
    for refusal in ("Forbidden", "forbidden", " 403"):
        assert refusal not in logs, f"{refusal!r} in the operator log:\n{logs[-5000:]}"


# Never needed by the operator (the unit test test_deploy_rbac.py lists what is).
UNUSED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("get", "configmaps"),
    ("delete", "modelservices.modelservice.dev"),
    ("create", "modelservices.modelservice.dev"),
    ("update", "modelservices.modelservice.dev"),
    # kopf keeps no annotations on ModelServices: plain event and index handlers only
    ("patch", "modelservices.modelservice.dev"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods", "--subresource=exec"),
    ("delete", "persistentvolumeclaims"),
    ("delete", "deployments.apps"),
    ("get", "services"),  # read from the watch-fed cache, never GET
    ("get", "deployments.apps"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts", "--subresource=token"),
    ("patch", "events"),
    ("*", "*"),
]
# Granted, but not exercised on this cluster: simulated pods have no log (and the log reader
# treats a refusal as "no log yet"), and only clusters with the
# OwnerReferencesPermissionEnforcement admission plugin check finalizers on ownerReferences.
NOT_EXERCISED = [
    ("get", "pods", "--subresource=log"),
    ("update", "modelservices.modelservice.dev", "--subresource=finalizers"),
]


def test_chart_grants_only_what_is_used(kube_cluster: KubeCluster, chart_release: str) -> None:
    namespace = chart_release
    granted_unused = [r for r in UNUSED if can_i(kube_cluster, namespace, *r, "-n", namespace)]
    assert granted_unused == []
    missing = [r for r in NOT_EXERCISED if not can_i(kube_cluster, namespace, *r, "-n", namespace)]
    assert missing == []
    # Nothing outside the watched namespace, nothing cluster-wide but kopf's reads.
    assert can_i(kube_cluster, namespace, "create", "jobs.batch", "-n", namespace)
    for verb, resource in (("create", "jobs.batch"), ("list", "modelservices.modelservice.dev")):
        assert not can_i(kube_cluster, namespace, verb, resource, "-n", "default")
        assert not can_i(kube_cluster, namespace, verb, resource, "--all-namespaces")
    assert can_i(kube_cluster, namespace, "watch", "customresourcedefinitions")
    assert not can_i(kube_cluster, namespace, "create", "customresourcedefinitions")
    assert not can_i(kube_cluster, namespace, "get", "nodes")
