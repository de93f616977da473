"""Render the chart and the kustomize overlays without a cluster.

``helm`` and ``kubectl`` (for ``kubectl kustomize``) are taken from the local cluster's
``.cluster/bin``, else from the binaries cached by an earlier cluster build, else from PATH;
a test that needs a missing one is skipped, not failed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modelservice-operator"
DEPLOY = REPO / "deploy"
CACHED_BINS = Path.home() / ".cache" / "modelservice-operator" / "cluster"

Manifests = list[dict[str, Any]]


def find_tool(name: str) -> str | None:
    """The first ``name`` binary among the cluster's, the cached build's and PATH."""
    candidates = [REPO / ".cluster" / "bin" / name]
    candidates += [Path(p) for p in sorted(glob.glob(str(CACHED_BINS / "*" / "bin" / name)))]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def parse_manifests(text: str) -> Manifests:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(manifests: Manifests, kind: str) -> Manifests:
    """The manifests of one kind."""
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: Manifests, kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The single manifest of ``kind`` whose name ends with ``name_suffix``."""
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def helm() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run helm (no cluster needed for lint and template); skips when helm is missing."""
    binary = find_tool("helm")
    if binary is None:
        pytest.skip("no helm binary (run `make cluster` once)")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], capture_output=True, text=True, check=False)

    return run


@pytest.fixture(scope="session")
def render_chart(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., Manifests]:
    """``helm template`` the chart with values files and ``--set`` pairs, parsed."""

    def render(*values_files: Path, sets: Sequence[str] = (), namespace: str = "ops") -> Manifests:
        args = ["template", "mso", str(CHART), "--namespace", namespace, "--include-crds"]
        for path in values_files:
            args += ["-f", str(path)]
        for pair in sets:
            args += ["--set", pair]
        result = helm(*args)
        assert result.returncode == 0, result.stderr
        return parse_manifests(result.stdout)

    return render


@pytest.fixture(scope="session")
def kustomize() -> Callable[[str], Manifests]:
    """``kubectl kustomize deploy/<overlay>``, parsed; skips when kubectl is missing."""
    binary = find_tool("kubectl")
    if binary is None:
        pytest.skip("no kubectl binary (run `make cluster` once)")

    def build(overlay: str) -> Manifests:
        result = subprocess.run(
            [binary, "kustomize", str(DEPLOY / overlay)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return parse_manifests(result.stdout)

    return build
