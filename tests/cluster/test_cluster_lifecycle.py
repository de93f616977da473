"""``python -m localcluster up`` is idempotent and ``down`` leaves nothing behind.

Runs a second, private cluster beside the session's one (its own state folder,
its own free ports), which also proves two clusters on one machine never
fight over ports.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from localcluster.kubectl import KubeCluster
from localcluster.state import cli_argv, cli_env


def localcluster(state_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(command),
        env=cli_env(MSO_CLUSTER_DIR=str(state_dir), MSO_USE_EXISTING_CLUSTER=""),
        capture_output=True,
        text=True,
        check=True,
    )


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_up_is_idempotent_and_down_stops_everything(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    state_dir = tmp_path / "cluster"
    localcluster(state_dir, "up")
    try:
        state = json.loads((state_dir / "state.json").read_text())
        session_state = json.loads((kube_cluster.kubeconfig.parent / "state.json").read_text())
        if "ports" in session_state:
            assert not set(state["ports"].values()) & set(session_state["ports"].values())
        pids = {name: int(pid) for name, pid in state["pids"].items()}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert all(running(pid) for pid in pids.values())
        # KEDA and Karpenter, when this cluster runs them, stop with it too.
        extra = {
            name: int(pid) for name, pid in state.get("autoscalers", {}).get("pids", {}).items()
        }
        assert all(running(pid) for pid in extra.values())

        again = localcluster(state_dir, "up")
        assert "reusing the running cluster" in again.stderr
        assert json.loads((state_dir / "state.json").read_text())["pids"] == state["pids"]
        localcluster(state_dir, "status")
    finally:
        localcluster(state_dir, "down")
    assert not any(running(pid) for pid in [*pids.values(), *extra.values()])
    assert not state_dir.exists()
