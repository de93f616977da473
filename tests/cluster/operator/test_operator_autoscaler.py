"""KEDA when its API is served, the HPA otherwise, on the real control plane.

The KEDA operator need not run for this: the ModelService operator only looks for the
``scaledobjects.keda.sh`` API (the CRD) and makes a ScaledObject the API server validates
against KEDA's own schema. ``make cluster`` installs KEDA's CRDs with KEDA; a cluster
started without it (``MSO_AUTOSCALERS=0``) gets the CRD here, from the build cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opharness import OperatorProcess, apply, sample_manifest

from kubeharness import KubeCluster, wait_for
from modelservice_operator.kube import connect

SCALED_OBJECTS_CRD = "scaledobjects.keda.sh"


def keda_crd_file(cluster: KubeCluster) -> Path:
    """KEDA's ScaledObject CRD, copied beside the cluster's binaries by the build."""
    cache = (cluster.bin_dir / "kubectl").resolve().parent.parent
    crd = cache / "keda-config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    assert crd.is_file(), f"{crd} is missing: run tests/cluster/build-binaries.sh --autoscalers"
    return crd


@pytest.fixture(scope="module")
def keda_api(kube_cluster: KubeCluster) -> KubeCluster:
    """scaledobjects.keda.sh served (installed here when the cluster runs no KEDA)."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(keda_crd_file(kube_cluster)))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{SCALED_OBJECTS_CRD}"
    )
    return kube_cluster


@pytest.fixture
def keda_operator(
    keda_api: KubeCluster, crd: KubeCluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(crd, namespace, tmp_path, extra_env={"MSO_OPERATOR_KEDA": "auto"})
    op.start()
    yield op
    op.stop()


def gpu_sample() -> dict[str, Any]:
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["serving"]["autoscaling"] = {"target": 8, "scaleDownStabilizationSeconds": 30}
    return manifest


def test_keda_served_makes_a_scaled_object_and_no_hpa(
    keda_operator: OperatorProcess, namespace: str
) -> None:
    ms = apply(keda_operator.cluster, gpu_sample(), namespace)
    status = ms.wait(
        "status.serving.autoscaler",
        lambda s: (s.get("serving") or {}).get("autoscaler"),
        timeout=120,
    )
    assert status["kind"] == "ScaledObject"
    assert status["reason"] == "KEDAInstalled"
    assert (status["metric"], status["target"]) == ("concurrency", "8")
    (so,) = ms.children("scaledobject")
    assert so["spec"]["scaleTargetRef"]["name"] == "digits-predictor"
    trigger = so["spec"]["triggers"][0]
    assert trigger["metadata"]["valueLocation"] == "modelservice_inflight_requests"
    # Only KEDA's own HPA may exist (when KEDA runs); the operator made none.
    hpas = ms.cluster.get("hpa", "-n", namespace)["items"]
    assert [
        h["metadata"]["name"] for h in hpas if h["metadata"]["name"] == "digits-predictor"
    ] == []

    # Metric cpu: the HPA takes over and the ScaledObject goes (two would fight).
    manifest = gpu_sample()
    manifest["spec"]["serving"]["autoscaling"] = {"metric": "cpu"}
    apply(keda_operator.cluster, manifest, namespace)
    wait_for("the operator's HPA", lambda: len(ms.children("hpa")) == 1, timeout=60)
    wait_for("no ScaledObject", lambda: ms.children("scaledobject") == [], timeout=60)
    status = ms.wait(
        "the HPA in status",
        lambda s: (
            (s.get("serving") or {}).get("autoscaler", {}).get("kind") == "HorizontalPodAutoscaler"
            and s["serving"]["autoscaler"]
        ),
        timeout=60,
    )
    assert (status["reason"], status["metric"], status["target"]) == ("CPUMetric", "cpu", "80%")


def test_discovery_tells_served_from_absent(
    keda_api: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(keda_api.kubeconfig))

    async def probe() -> tuple[bool, bool]:
        kube = await connect()
        try:
            return (
                await kube.serves("keda.sh/v1alpha1", "scaledobjects"),
                await kube.serves("keda.sh/v9", "scaledobjects"),
            )
        finally:
            await kube.close()

    assert asyncio.run(probe()) == (True, False)
