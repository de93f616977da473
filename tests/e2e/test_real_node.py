"""End to end on the real node: train, gate, serve, predict, roll out, autoscale, fail.

The operator (Helm chart, in the cluster) trains the CPU variant of the digits sample in a
real pod, gates on the accuracy that pod measured, and serves the version it promoted. The
tests talk to the predictor Service's ClusterIP from this machine (kube-proxy's iptables
rules route it), compare with the model loaded from the store here, and watch real CPU load
drive the HPA through metrics-server. Tests in this file share one served ModelService and
run in file order; the rollout test, which changes the version, comes last of those.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster, wait_for

# The first test also pays for the session's images (a cold serving image build installs
# TensorFlow) and the operator's install: more than the suite's default 900 s may go by.
pytestmark = pytest.mark.timeout(1800)

NAME = "digits"
CLAIM = "digits-models"


def status_of(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get("modelservice", name, "-n", namespace).get("status") or {})


def explain(cluster: KubeCluster, namespace: str, name: str) -> str:
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    return f"status: {json.dumps(status_of(cluster, namespace, name), indent=1)}\n{pods}"


@pytest.fixture(scope="module")
def served(kube_cluster: KubeCluster, real_namespace: str) -> tuple[str, Path, str]:
    """The digits ModelService Ready at version 1: (namespace, store dir, Service URL)."""
    store = rw.model_store(kube_cluster, real_namespace, CLAIM)
    sample = rw.cpu_sample(
        NAME,
        CLAIM,
        minReplicas=1,
        maxReplicas=3,
        autoscaling={"targetCPUUtilizationPercentage": 50, "scaleDownStabilizationSeconds": 10},
    )
    kube_cluster.apply(sample, namespace=real_namespace)
    try:
        rw.wait_ready(kube_cluster, real_namespace, NAME, version=1, timeout=900)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(kube_cluster, real_namespace, NAME)}") from None
    url = rw.service_url(kube_cluster, real_namespace, f"{NAME}-predictor")
    return real_namespace, store, url


def local_model(store: Path, version: int) -> Any:
    from modelservice_serving.model import ServedModel

    return ServedModel.load(store / f"v{version}", NAME)


def test_predictions_through_the_service_match_the_model(
    kube_cluster: KubeCluster, served: tuple[str, Path, str]
) -> None:
    namespace, store, url = served
    status = status_of(kube_cluster, namespace, NAME)
    metadata = json.loads((store / "v1" / "metadata.json").read_text())
    # The gate read the accuracy the training pod measured and wrote beside the model.
    assert status["model"]["metrics"]["accuracy"] == pytest.approx(metadata["metrics"]["accuracy"])
    assert status["model"]["metrics"]["accuracy"] >= 0.9

    x_test, y_test = rw.held_out_digits()
    rows = x_test[:32]
    model = local_model(store, 1)
    expected = model.predict({model.inputs[0].name: np.asarray(rows, dtype=np.float32)})
    (output_name,) = expected
    want = expected[output_name]

    v1 = rw.predict_v1(url, NAME, rows)["predictions"]
    np.testing.assert_allclose(np.asarray(v1, dtype=np.float32), want, rtol=1e-4, atol=1e-5)

    v2 = rw.infer_v2(url, NAME, model.inputs[0].name, rows)
    out = next(o for o in v2["outputs"] if o["name"] == output_name)
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert str(v2.get("model_version")) == "1"
    # The served model is the good one: held-out digits mostly right.
    assert (got.argmax(axis=1) == np.asarray(y_test[:32])).mean() >= 0.8


def ready_pods(cluster: KubeCluster, namespace: str) -> list[str]:
    selector = f"modelservice.dev/component=predictor,modelservice.dev/name={NAME}"
    pods = cluster.get("pods", "-n", namespace, "-l", selector)
    names = []
    for pod in pods["items"]:
        conditions = pod["status"].get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if ready and not pod["metadata"].get("deletionTimestamp"):
            names.append(pod["metadata"]["name"])
    return names


def input_name(store: Path) -> str:
    metadata = json.loads((store / "v1" / "metadata.json").read_text())
    return str(metadata["inputs"][0]["name"])


def test_deleting_a_serving_pod_under_load_loses_at_most_its_in_flight_requests(
    kube_cluster: KubeCluster, served: tuple[str, Path, str]
) -> None:
    namespace, store, url = served
    kube_cluster.kubectl(
        "patch", "ms", NAME, "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"serving": {"minReplicas": 2}}}),
    )  # fmt: skip
    wait_for(
        "two ready predictor pods", lambda: len(ready_pods(kube_cluster, namespace)) >= 2, 300, 2
    )
    rows = rw.held_out_digits()[0][:1]
    name = input_name(store)
    workers = 4

    def send() -> str:
        return str(rw.infer_v2(url, NAME, name, rows).get("model_version"))

    with rw.RequestLoop(send, workers=workers, max_seconds=120) as loop:
        time.sleep(3)
        victim = ready_pods(kube_cluster, namespace)[0]
        kube_cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
        wait_for(
            "the deleted pod gone and two ready pods again",
            lambda: (
                victim not in ready_pods(kube_cluster, namespace)
                and len(ready_pods(kube_cluster, namespace)) >= 2
            ),
            300,
            2,
        )
        time.sleep(5)
    print(f"pod deleted under load: {loop.ok} ok, {loop.failed} failed {loop.errors}")
    assert loop.ok > 0
    # At most the requests in flight on the deleted pod: one per client worker.
    assert loop.failed <= workers, loop.errors
    kube_cluster.kubectl(
        "patch", "ms", NAME, "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"serving": {"minReplicas": 1}}}),
    )  # fmt: skip


def deployment_replicas(cluster: KubeCluster, namespace: str) -> int:
    return int(cluster.get("deployment", f"{NAME}-predictor", "-n", namespace)["spec"]["replicas"])


def test_load_makes_the_hpa_scale_out_and_back_in(
    kube_cluster: KubeCluster, served: tuple[str, Path, str]
) -> None:
    namespace, store, url = served
    wait_for(
        "one predictor replica", lambda: deployment_replicas(kube_cluster, namespace) == 1, 240, 3
    )
    wait_for(
        "metrics-server reporting the predictor's CPU",
        lambda: kube_cluster.get("hpa", f"{NAME}-predictor", "-n", namespace)["status"].get(
            "currentMetrics"
        ),
        120,
        3,
    )
    rows = rw.held_out_digits()[0][:64]
    name = input_name(store)

    def send() -> str:
        return str(rw.infer_v2(url, NAME, name, rows).get("model_version"))

    with rw.RequestLoop(send, workers=4, max_seconds=240) as loop:
        wait_for(
            "the HPA to scale the predictor above minReplicas",
            lambda: deployment_replicas(kube_cluster, namespace) > 1,
            200,
            3,
        )
    hpa = kube_cluster.get("hpa", f"{NAME}-predictor", "-n", namespace)
    print(f"HPA under load: {json.dumps(hpa['status'].get('currentMetrics'))}, {loop.ok} ok")
    assert loop.ok > 0
    wait_for(
        "the HPA to scale back to minReplicas once idle",
        lambda: deployment_replicas(kube_cluster, namespace) == 1,
        300,
        5,
    )


def test_new_training_spec_makes_version_2_and_switches_with_zero_failed_requests(
    kube_cluster: KubeCluster, served: tuple[str, Path, str]
) -> None:
    namespace, store, url = served
    rows = rw.held_out_digits()[0][:1]
    name = input_name(store)

    def send() -> str:
        return str(rw.infer_v2(url, NAME, name, rows).get("model_version"))

    with rw.RequestLoop(send, workers=2, max_seconds=900, pause_s=0.05) as loop:
        time.sleep(2)
        kube_cluster.kubectl(
            "patch", "ms", NAME, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"training": {"epochs": 6}}}),
        )  # fmt: skip
        try:
            rw.wait_ready(kube_cluster, namespace, NAME, version=2, timeout=900)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{explain(kube_cluster, namespace, NAME)}") from None
        wait_for("only version 2 answering", lambda: loop.seen.get("2", 0) > 20, 120, 1)
        wait_for("the old pods gone", lambda: len(ready_pods(kube_cluster, namespace)) == 1, 180, 2)
        time.sleep(5)
    print(f"rollout 1 -> 2 under load: {loop.ok} ok, {loop.failed} failed, by version {loop.seen}")
    assert (store / "v2" / "metadata.json").is_file()
    assert loop.failed == 0, loop.errors[:10]
    assert set(loop.seen) == {"1", "2"}, loop.seen


@pytest.mark.parametrize(
    ("case", "training", "expected"),
    [
        (
            "oom",
            {
                "resources": {
                    "requests": {"cpu": "100m", "memory": "48Mi"},
                    "limits": {"memory": "48Mi"},
                }
            },
            "OOMKilled",
        ),
        ("error", {"dataset": "/models/no-such-data.csv"}, "DatasetNotFound"),
    ],
)
def test_failed_training_shows_its_reason_in_status(
    kube_cluster: KubeCluster,
    real_namespace: str,
    real_images: tuple[str, str],
    case: str,
    training: dict[str, Any],
    expected: str,
) -> None:
    name = f"fail-{case}"
    claim = f"{name}-models"
    rw.model_store(kube_cluster, real_namespace, claim)
    sample = rw.cpu_sample(name, claim)
    sample["spec"]["training"].update(training, backoffLimit=0)
    kube_cluster.apply(sample, namespace=real_namespace)

    def trained_condition() -> dict[str, Any] | None:
        conditions = status_of(kube_cluster, real_namespace, name).get("conditions", [])
        trained = next((c for c in conditions if c["type"] == "Trained"), None)
        text = json.dumps(trained or {})
        return trained if trained and expected in text and trained["status"] == "False" else None

    try:
        condition = wait_for(f"Trained=False naming {expected}", trained_condition, 300, 2)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(kube_cluster, real_namespace, name)}") from None
    status = status_of(kube_cluster, real_namespace, name)
    assert status.get("phase") in ("Failed", "Degraded", "Pending", "Training"), status
    print(f"{case}: {condition['reason']}: {condition['message']}")
