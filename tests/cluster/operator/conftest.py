"""Fixtures for the operator's cluster tests: the CRD and the real operator process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opharness import CRD, OperatorProcess, free_port

from localcluster.kubectl import KubeCluster, wait_for


@pytest.fixture(scope="session")
def crd(kube_cluster: KubeCluster) -> KubeCluster:
    """The ModelService CRD, applied and established."""
    kube_cluster.kubectl("apply", "-f", str(CRD))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modelservices.modelservice.dev",
    )
    # The discovery cache of a fresh CRD can lag; wait until kubectl knows the short name.
    wait_for("ms to be served", lambda: kube_cluster.kubectl("get", "ms", "-A") is not None)
    return kube_cluster


@pytest.fixture
def operator(
    crd: KubeCluster, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """The operator watching this test's namespace; its log is printed when a test fails."""
    op = OperatorProcess(crd, namespace, tmp_path)
    op.start()
    yield op
    op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(f"\n--- operator log ---\n{op.logs()[-20000:]}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def shared_namespace(crd: KubeCluster) -> Iterator[str]:
    """One namespace for a whole module of apply-only tests (e.g. the validation table)."""
    import uuid

    name = f"ms-validation-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", name)
    yield name
    crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def metered(
    crd: KubeCluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, int]]:
    """The operator with its Prometheus /metrics on a free port."""
    port = free_port()
    op = OperatorProcess(
        crd, namespace, tmp_path, extra_env={"MSO_OPERATOR_METRICS_PORT": str(port)}
    )
    op.start()
    yield op, port
    op.stop()
