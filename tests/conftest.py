"""Test tiers and the local cluster, shared by every test.

Tests are marked by folder: ``tests/unit`` is ``unit``, ``tests/cluster`` is
``cluster`` and ``tests/e2e`` is ``e2e``. The session fixture ``kube_cluster``
starts the local cluster (or reuses a healthy one, or an existing cluster named
by ``KUBECONFIG`` with ``MSO_USE_EXISTING_CLUSTER=true``) only when a test asks
for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.kubectl import KubeCluster, wait_for
from localcluster.state import cli_argv, cli_env

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))
TIER_BY_FOLDER = {"unit": "unit", "cluster": "cluster", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        tier = TIER_BY_FOLDER.get(parts[0]) if len(parts) > 1 else None
        if tier and not any(item.iter_markers(tier)):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def kube_cluster() -> KubeCluster:
    """The local cluster, started (or reused) once per session."""
    subprocess.run(cli_argv("up"), env=cli_env(), check=True)
    return KubeCluster(kubeconfig=CLUSTER_DIR / "kubeconfig", bin_dir=CLUSTER_DIR / "bin")


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    # Namespace names are DNS labels: parametrized ids bring "[", "]", "." and more.
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, which a controller adds.
    wait_for(
        "the namespace's default ServiceAccount",
        lambda: kube_cluster.kubectl("get", "serviceaccount", "default", "-n", name),
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
