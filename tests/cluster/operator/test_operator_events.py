"""Status follows the children at once, and a ModelService never waits on the operator.

The operator's periodic resync is set to ten minutes here, so every step below (the Job
finishing, the gate, the predictor becoming available, a pod getting stuck) can only have
reached status through the watches on the children. And since the operator puts no
finalizer on a ModelService, one can be deleted while no operator runs at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opharness import MS, OperatorProcess, sample_manifest

from localcluster.kubectl import KubeCluster, wait_for

RESYNC_S = 600


@pytest.fixture
def slow_resync_operator(
    crd: KubeCluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator with a resync far longer than any test: only events can drive it."""
    op = OperatorProcess(crd, namespace, tmp_path, resync_interval_s=RESYNC_S)
    op.start()
    yield op
    op.stop()


def test_child_events_drive_status_without_the_resync(
    slow_resync_operator: OperatorProcess, kube_cluster: KubeCluster, namespace: str
) -> None:
    started = time.monotonic()
    kube_cluster.apply(sample_manifest(accuracy=0.95), namespace)
    ms = MS(kube_cluster, namespace, "digits")
    wait_for("Ready through child events", lambda: ms.status().get("phase") == "Ready", 60)
    assert time.monotonic() - started < RESYNC_S / 4
    assert ms.status()["model"]["version"] == 1

    # A pod of the predictor crashes: the pod's own event brings the reason into status.
    kube_cluster.kubectl(
        "patch", "ms", "digits", "-n", namespace, "--type=merge", "-p",
        '{"spec": {"serving": {"podAnnotations": {'
        '"sim.modelservice.dev/waiting-reason": "CrashLoopBackOff",'
        '"sim.modelservice.dev/waiting-message": "back-off restarting failed container",'
        '"sim.modelservice.dev/last-reason": "OOMKilled"}}}}',
    )  # fmt: skip

    def ready_reason() -> str | None:
        ready = [c for c in ms.status().get("conditions", []) if c["type"] == "Ready"]
        return ready[0]["reason"] if ready and ready[0]["status"] == "False" else None

    assert wait_for("the crash to reach status", ready_reason, 60) == "OOMKilled"


def test_no_finalizer_so_deletion_never_waits_for_the_operator(
    operator: OperatorProcess, kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.apply(sample_manifest(accuracy=0.95), namespace)
    ms = MS(kube_cluster, namespace, "digits")
    wait_for("Ready", lambda: ms.status().get("phase") == "Ready", 60)
    assert not ms.get()["metadata"].get("finalizers")

    operator.stop()
    kube_cluster.kubectl("delete", "ms", "digits", "-n", namespace, "--timeout=20s")
    wait_for(
        "children to be collected",
        lambda: (
            not kube_cluster.get(
                "deploy,job,svc,hpa", "-n", namespace, "-l", "modelservice.dev/name=digits"
            )["items"]
        ),
        60,
    )
