"""Fixtures of the real-node e2e tier: images on the node, the operator by Helm, a namespace.

Everything here runs for real on the local cluster's real node (``hack/localcluster/realnode.py``):
the operator image and the serving image are built with Docker and loaded into the node's
containerd, the operator is installed by its Helm chart watching only this session's
namespace (other tests on the same cluster run their own operators), and tests create
ModelServices there. Without a real node (a machine that cannot run one, or a cluster
started before it existed) the tier is skipped with the exact reason.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster

REPO = Path(__file__).resolve().parents[2]

CLUSTER_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))


@pytest.fixture(scope="session")
def real_node(kube_cluster: KubeCluster) -> dict[str, object]:
    """The real node's record; skips the test when the cluster has none."""
    node = rw.real_node_state(CLUSTER_DIR)
    if node is None:
        pytest.skip(rw.no_real_node_reason(CLUSTER_DIR))
    return node


@pytest.fixture(scope="session")
def real_images(real_node: dict[str, object]) -> tuple[str, str]:
    """(operator image, serving image), built and loaded into the real node once."""
    return rw.build_and_load_images(CLUSTER_DIR)


@pytest.fixture(scope="session")
def real_namespace(kube_cluster: KubeCluster, real_images: tuple[str, str]) -> Iterator[str]:
    """A namespace watched by this session's own operator (Helm chart, on the real node)."""
    suffix = uuid.uuid4().hex[:6]
    namespace, system, release = f"real-{suffix}", f"real-{suffix}-system", f"mso-{suffix}"
    kube_cluster.kubectl("create", "namespace", namespace)
    try:
        rw.install_operator(
            kube_cluster,
            release,
            system,
            [namespace],
            real_images[0],
            # The chart's admission policy refuses spec.training.image by default; an admin
            # allows the CNN sample's own image (tests/e2e/test_training_real_node.py).
            admissionPolicy={"trainingImagePrefixes": ["digits-cnn:"]},
        )
    except Exception:
        print(kube_cluster.kubectl("describe", "pods", "-n", system, check=False))
        raise
    yield namespace
    if os.environ.get("MSO_KEEP_E2E"):
        return
    kube_cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", check=False)
    rw.uninstall_operator(kube_cluster, release, system)
    kube_cluster.kubectl(
        "delete", "pv", "-l", f"modelservice.dev/e2e={namespace}", "--wait=false", check=False
    )
    rw.remove_store(namespace)


def describe(kube_cluster: KubeCluster, namespace: str, name: str) -> str:
    """What a failing test prints: the ModelService's status and its pods."""
    ms = kube_cluster.kubectl("get", "ms", name, "-n", namespace, "-o", "json", check=False)
    pods = kube_cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    try:
        status = json.dumps(json.loads(ms).get("status"), indent=1)
    except json.JSONDecodeError:
        status = ms
    return f"status: {status}\npods:\n{pods}"
