"""Drive a Kubernetes cluster from tests: kubectl, helm and polling.

Importable from any test (``hack/`` is on pytest's pythonpath) as
``from localcluster.kubectl import KubeCluster, wait_for``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message holds its stderr."""


@dataclass(frozen=True)
class KubeCluster:
    """A running cluster and the binaries to drive it."""

    kubeconfig: Path
    bin_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for a child process that should talk to this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _run(self, tool: str, args: tuple[str, ...], input: str | None, check: bool) -> str:
        """Run one of the cluster's binaries with its kubeconfig and return its stdout."""
        result = subprocess.run(
            [str(self.bin_dir / tool), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.stderr.strip() or result.stdout.strip())
        return result.stdout

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run kubectl against the cluster and return its stdout."""
        return self._run("kubectl", args, input, check)

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> str:
        """``kubectl apply`` a manifest given as a dict or YAML/JSON text."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        extra = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *extra, "-f", "-", input=text)

    def helm(self, *args: str, check: bool = True) -> str:
        """Run helm against the cluster and return its stdout."""
        return self._run("helm", args, None, check)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (KubectlError, KeyError, IndexError, ValueError) as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error})")
