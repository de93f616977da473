"""Two operators, one active: SIGKILL the leader mid-flight, the standby takes over in time.

Both processes run as the chart's two replicas do (leader election on, the Lease in the
watched namespace, the default timing: 8 s lease, 6 s renew deadline, 2 s retry).
ModelServices keep being created while the leader is killed; the standby must hold the
Lease within 15 s (at most 8 s + two retry periods after the last renewal it saw) and every
ModelService must end with one Job and one Deployment.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from opharness import MS, OperatorProcess, apply, sample_manifest, sim_success

from localcluster.kubectl import KubeCluster, wait_for

TAKEOVER_LIMIT_S = 15.0
COUNT = 8


def holder(cluster: KubeCluster, namespace: str) -> str:
    """The Lease's holder ("" when released or absent)."""
    out = cluster.kubectl(
        "get", "lease", "modelservice-operator", "-n", namespace,
        "-o", "jsonpath={.spec.holderIdentity}", check=False,
    )  # fmt: skip
    return out.strip()


def replica(cluster: KubeCluster, namespace: str, tmp_path: Path, name: str) -> OperatorProcess:
    logs = tmp_path / name
    logs.mkdir()
    return OperatorProcess(
        cluster,
        namespace,
        logs,
        extra_env={
            "MSO_OPERATOR_LEADER_ELECTION": "true",
            "MSO_OPERATOR_LEADER_ELECTION_NAMESPACE": namespace,
            "MSO_OPERATOR_IDENTITY": name,
        },
    )


def test_sigkill_the_leader_while_creating_the_standby_takes_over_without_duplicates(
    crd: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    first, second = (replica(crd, namespace, tmp_path, n) for n in ("op-a", "op-b"))
    first.start()
    try:
        wait_for("op-a to lead", lambda: holder(crd, namespace) == "op-a", timeout=60)
        second.start()
        # op-b is up and standing by (a loaded machine takes seconds to start Python).
        wait_for("op-b to stand by", lambda: "waiting to lead" in second.logs(), timeout=60)
        time.sleep(2)
        assert holder(crd, namespace) == "op-a"

        services: list[MS] = []

        def create_all() -> None:
            for index in range(COUNT):
                manifest = sample_manifest(accuracy=0.97)
                manifest["metadata"]["name"] = f"ha-{index}"
                manifest["spec"]["training"]["podAnnotations"] = sim_success(0.97, duration="2s")
                # Tiny CPU pods: every one fits, whatever else the cluster runs.
                tiny = {"requests": {"cpu": "10m", "memory": "16Mi"}}
                manifest["spec"]["training"]["resources"] = tiny
                manifest["spec"]["serving"].pop("gpu")
                manifest["spec"]["serving"]["resources"] = tiny
                services.append(apply(crd, manifest, namespace))
                time.sleep(0.4)

        creator = threading.Thread(target=create_all)
        creator.start()
        wait_for("the leader's first Job", lambda: services and services[0].children("job"))
        first.kill9()
        killed = time.monotonic()
        wait_for("op-b to lead", lambda: holder(crd, namespace) == "op-b", timeout=30)
        takeover_s = time.monotonic() - killed
        creator.join()
        # The standby works as soon as it leads: the last ModelService, created after the
        # kill, gets its Job.
        wait_for("the last Job", lambda: services[-1].children("job"), timeout=30)
        work_s = time.monotonic() - killed
        print(f"takeover: Lease after {takeover_s:.1f}s, first new Job after {work_s:.1f}s")
        assert takeover_s <= TAKEOVER_LIMIT_S

        for service in services:
            service.wait_phase("Ready", timeout=180)
        for service in services:
            assert len(service.children("job")) == 1, service.name
            assert len(service.children("deployment")) == 1, service.name
            assert len(service.children("replicaset")) == 1, service.name
        assert "leading: Lease" in second.logs()

        # An orderly stop hands the Lease over at once: op-a (back as a standby) takes it
        # within a retry period or two, not a whole lease duration.
        first.start()
        wait_for("op-a to stand by", lambda: first.logs().count("waiting to lead") == 2, 60)
        assert holder(crd, namespace) == "op-b"
        second.stop()
        stopped = time.monotonic()
        wait_for("op-a to lead again", lambda: holder(crd, namespace) == "op-a", timeout=30)
        assert time.monotonic() - stopped < 6.0
    except AssertionError:
        print("--- op-a ---\n" + first.logs()[-6000:])
        print("--- op-b ---\n" + second.logs()[-6000:])
        raise
    finally:
        first.stop()
        second.stop()
