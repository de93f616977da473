"""KEDA when its API is served, the HPA otherwise, on the real control plane.

The KEDA operator need not run for this: the ModelService operator only looks for the
``scaledobjects.keda.sh`` API (the CRD) and makes a ScaledObject the API server validates
against KEDA's own schema. ``make cluster`` installs KEDA's CRDs with KEDA; a cluster
started without it (``MSO_AUTOSCALERS=0``) gets the CRD here, from the build cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from opharness import OperatorProcess, apply, sample_manifest

from localcluster import addons
from localcluster.kubectl import KubeCluster, wait_for
from modelservice_operator.kube import Kube

SCALED_OBJECTS_CRD = "scaledobjects.keda.sh"


def keda_crd_file(cluster: KubeCluster) -> Path:
    """KEDA's ScaledObject CRD, copied beside the cluster's binaries by the build."""
    cache = (cluster.bin_dir / "kubectl").resolve().parent.parent
    crd = cache / "keda-config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    assert crd.is_file(), f"{crd} is missing: run hack/localcluster/build-binaries.sh --autoscalers"
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
    wait_for(
        "the operator's HPA",
        lambda: "digits-predictor" in [h["metadata"]["name"] for h in ms.children("hpa")],
        timeout=60,
    )
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


def test_discovery_tells_served_from_absent(keda_api: KubeCluster) -> None:
    async def probe() -> tuple[bool, bool]:
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(keda_api.kubeconfig), client_configuration=configuration
        )
        kube = Kube(client.ApiClient(configuration))
        try:
            return (
                await kube.serves("keda.sh/v1alpha1", "scaledobjects"),
                await kube.serves("keda.sh/v9", "scaledobjects"),
            )
        finally:
            await kube.close()

    assert asyncio.run(probe()) == (True, False)


@pytest.fixture(scope="module")
def keda_running(kube_cluster: KubeCluster) -> KubeCluster:
    """KEDA's operator and metrics API server run here (``make cluster`` starts them)."""
    if "keda" not in addons.wanted_parts():
        pytest.skip("MSO_AUTOSCALERS leaves KEDA out, by request")
    state_file = Path(kube_cluster.kubeconfig).parent / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    pids = (state.get("autoscalers") or {}).get("pids") or {}
    why = "KEDA is not running: " + str(
        state.get("autoscalers_unavailable") or "the cluster was started without it"
    )
    assert {"keda", "keda-adapter"} <= set(pids), why
    available = kube_cluster.kubectl(
        "get",
        addons.EXTERNAL_METRICS_API,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Available')].status}",
        check=False,
    )
    assert available == "True", "KEDA runs but its metrics API server is not Available"
    return kube_cluster


def test_keda_turns_the_scaled_object_into_its_hpa(
    keda_running: KubeCluster, keda_operator: OperatorProcess, namespace: str
) -> None:
    ms = apply(keda_operator.cluster, gpu_sample(), namespace)
    ms.wait("the ScaledObject", lambda s: ms.children("scaledobject"), timeout=120)

    def keda_hpa() -> dict[str, Any] | None:
        items = keda_running.get("hpa", "-n", namespace)["items"]
        return next(
            (h for h in items if h["metadata"]["name"] == "keda-hpa-digits-predictor"), None
        )

    hpa = wait_for("KEDA's HPA", keda_hpa, timeout=120)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == "digits-predictor"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    # The operator made no HPA of its own, and left KEDA's alone.
    assert [h["metadata"]["name"] for h in ms.children("hpa")] == ["keda-hpa-digits-predictor"]
