"""Helpers for the operator's cluster tests: the operator process, manifests, waiting.

The operator runs as ``python -m kopf run -m modelservice_operator --namespace NS`` in a
subprocess, exactly as in production but watching only the test's namespace, with a short
resync interval. It can be SIGKILLed and restarted mid-flight.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localcluster.kubectl import KubeCluster, wait_for

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "deploy" / "crd" / "modelservices.modelservice.dev.yaml"
SAMPLE = REPO / "deploy" / "samples" / "modelservice-digits.yaml"


def sim_success(accuracy: float, loss: float = 0.1, duration: str = "1s") -> dict[str, str]:
    """Pod annotations that make a simulated training pod succeed with these metrics."""
    message = {
        "status": "Succeeded",
        "metrics": {"accuracy": accuracy, "loss": loss},
        "trainedAt": "2026-11-28T12:00:00Z",
    }
    return {
        "sim.modelservice.dev/duration": duration,
        "sim.modelservice.dev/termination-message": json.dumps(message),
    }


def sim_failure(reason: str, message: str, pod_reason: str = "Error") -> dict[str, str]:
    """Pod annotations that make a simulated training pod fail with this result."""
    return {
        "sim.modelservice.dev/duration": "500ms",
        "sim.modelservice.dev/outcome": "fail",
        "sim.modelservice.dev/reason": pod_reason,
        "sim.modelservice.dev/exit-code": "1",
        "sim.modelservice.dev/termination-message": json.dumps(
            {"status": "Failed", "reason": reason, "message": message}
        ),
    }


def sample_manifest(accuracy: float | None = 0.97) -> dict[str, Any]:
    """The canonical sample, plus simulated training results when ``accuracy`` is given."""
    manifest: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    if accuracy is not None:
        manifest["spec"]["training"]["podAnnotations"] = sim_success(accuracy)
    return copy.deepcopy(manifest)


class OperatorProcess:
    """The real operator, as a child process bound to one namespace."""

    def __init__(
        self,
        cluster: KubeCluster,
        namespace: str,
        log_dir: Path,
        resync_interval_s: float = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.extra_env = dict(extra_env or {})
        self.resync_interval_s = resync_interval_s
        self.namespace = namespace
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start (or start again) the operator."""
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {
            **self.cluster.env,
            "MSO_OPERATOR_RECONCILE_INTERVAL_S": str(self.resync_interval_s),
            "MSO_OPERATOR_DEFAULT_IMAGE": "modelservice-serving:test",
            # The HPA, whether or not the cluster runs KEDA; test_operator_autoscaler.py
            # turns KEDA on.
            "MSO_OPERATOR_KEDA": "off",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "-m",
                "modelservice_operator",
                "--namespace",
                self.namespace,
                "--standalone",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill9(self) -> None:
        """SIGKILL the operator: no cleanup, no finishing of anything in flight."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the operator gracefully (SIGTERM), SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def logs(self) -> str:
        """Everything every run of the operator printed."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )


class MS:
    """Reads and waits on one ModelService."""

    def __init__(self, cluster: KubeCluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    def get(self) -> dict[str, Any]:
        """The ModelService as JSON."""
        obj: dict[str, Any] = self.cluster.get("ms", self.name, "-n", self.namespace)
        return obj

    def status(self) -> dict[str, Any]:
        """Its status (empty when none yet)."""
        return self.get().get("status") or {}

    def condition(self, kind: str) -> dict[str, Any]:
        """One of its conditions (empty when absent)."""
        for cond in self.status().get("conditions") or []:
            if cond["type"] == kind:
                return dict(cond)
        return {}

    def wait_phase(self, phase: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until ``status.phase`` is ``phase`` and return the status."""
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            last = self.status()
            return last if last.get("phase") == phase else None

        try:
            return dict(wait_for(f"{self.name} phase {phase}", check, timeout=timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(last, indent=1)}") from None

    def wait(self, what: str, check: Any, timeout: float = 90) -> Any:
        """Wait until ``check(status)`` is truthy."""
        last: dict[str, Any] = {}

        def probe() -> Any:
            nonlocal last
            last = self.status()
            return check(last)

        try:
            return wait_for(what, probe, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(last, indent=1)}") from None

    def events(
        self, field: str = "reason", *, uid: str | None = None, reason: str | None = None
    ) -> str:
        """One field of this ModelService's Events, space-joined (by name, or by ``uid`` to
        tell a recreated namesake's apart), optionally only those of one ``reason``."""
        selector = f"involvedObject.uid={uid}" if uid else f"involvedObject.name={self.name}"
        if reason:
            selector += f",reason={reason}"
        return self.cluster.kubectl(
            "get", "events", "-n", self.namespace, "--field-selector", selector,
            "-o", f"jsonpath={{.items[*].{field}}}",
        )  # fmt: skip

    def children(self, kind: str) -> list[dict[str, Any]]:
        """Children of ``kind`` labelled as this ModelService's."""
        items: list[dict[str, Any]] = self.cluster.get(
            kind, "-n", self.namespace, "-l", f"modelservice.dev/name={self.name}"
        )["items"]
        return items


def apply(cluster: KubeCluster, manifest: dict[str, Any], namespace: str) -> MS:
    """Apply a ModelService manifest and return its handle."""
    cluster.apply(manifest, namespace=namespace)
    return MS(cluster, namespace, manifest["metadata"]["name"])


def wait_until(what: str, check: Any, timeout: float = 60) -> Any:
    """Re-export of kubeharness.wait_for for the tests."""
    return wait_for(what, check, timeout=timeout)


def now() -> float:
    """Monotonic seconds."""
    return time.monotonic()


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_metrics(port: int) -> str | None:
    """The operator's Prometheus text on ``port``, None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
    except OSError:
        return None
    return body.decode()
