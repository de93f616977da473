"""Training beyond the built-in trainer in one process, for real on the real node.

- Your own code: the CNN sample (``deploy/samples/digits-cnn``), in an image built FROM the
  serving image and loaded into the node, trained, gated on its loss and served through the
  same ModelService flow; V1 and V2 answers match the model in the store.
- Several workers: the digits sample with ``workers: 2`` (CPU) trains under
  MultiWorkerMirroredStrategy in two pods of an Indexed Job (this cluster has no DNS: the
  workers meet through the store), writes one version and reaches the accuracy of one worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster
from localcluster.state import cli_argv, cli_env

pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[2]
CNN_DIR = REPO / "deploy" / "samples" / "digits-cnn"
CNN_IMAGE = "digits-cnn:dev"
CLUSTER_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))


def explain(cluster: KubeCluster, namespace: str, name: str) -> str:
    ms = cluster.get("modelservice", name, "-n", namespace)
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
    return f"status: {json.dumps(ms.get('status'), indent=1)}\n{pods}"


def ready(cluster: KubeCluster, namespace: str, name: str, timeout: float = 900) -> dict[str, Any]:
    try:
        return rw.wait_ready(cluster, namespace, name, version=1, timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{explain(cluster, namespace, name)}") from None


@pytest.fixture(scope="module")
def cnn_image(real_images: tuple[str, str]) -> str:
    """The sample's image, FROM the session's serving image, loaded into the real node."""
    subprocess.run(
        [
            "docker", "build", "-q", "-f", str(CNN_DIR / "Dockerfile"),
            "--build-arg", f"BASE_IMAGE={real_images[1]}", "-t", CNN_IMAGE, str(CNN_DIR),
        ],
        check=True, stdout=subprocess.DEVNULL, timeout=600,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    subprocess.run(
        cli_argv("load-image", CNN_IMAGE),
        env=cli_env(MSO_CLUSTER_DIR=str(CLUSTER_DIR)),
        check=True,
        timeout=600,
    )
    return CNN_IMAGE


def pinned(sample: dict[str, Any], name: str, claim: str) -> dict[str, Any]:
    """A sample on the real node (its selector and toleration), small asks, our store."""
    sample["metadata"]["name"] = name
    spec = sample["spec"]
    spec["training"].update(
        nodeSelector=rw.NODE_SELECTOR,
        tolerations=rw.TOLERATIONS,
        resources={"requests": {"cpu": "250m", "memory": "512Mi"}},
    )
    spec["serving"].pop("gpu", None)
    spec["serving"].update(
        nodeSelector=rw.NODE_SELECTOR,
        tolerations=rw.TOLERATIONS,
        resources={"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1"}},
    )
    spec["storage"] = {"existingClaim": claim}
    return sample


def test_own_cnn_code_is_trained_gated_and_served(
    kube_cluster: KubeCluster, real_namespace: str, cnn_image: str
) -> None:
    name, claim = "digits-cnn", "digits-cnn-models"
    store = rw.model_store(kube_cluster, real_namespace, claim)
    sample = yaml.safe_load((CNN_DIR / "modelservice-digits-cnn.yaml").read_text())
    sample = pinned(sample, name, claim)
    assert sample["spec"]["training"]["image"] == cnn_image
    kube_cluster.apply(sample, namespace=real_namespace)
    ms = ready(kube_cluster, real_namespace, name)
    status = ms["status"]
    metadata = json.loads((store / "v1" / "metadata.json").read_text())
    assert metadata["model"] == "cnn"  # the user's code wrote it, not the built-in trainer
    # The loss gate read the loss the user's code measured.
    assert status["model"]["metrics"]["loss"] == pytest.approx(metadata["metrics"]["loss"])
    assert status["model"]["metrics"]["loss"] <= sample["spec"]["qualityGate"]["maximum"]
    assert status["training"]["epoch"] == sample["spec"]["training"]["epochs"]

    from sklearn.datasets import load_digits

    from modelservice_serving.model import ServedModel

    digits = load_digits()
    rows = digits.data[-32:].astype(np.float32)
    model = ServedModel.load(store / "v1", name)
    (want,) = model.predict({"pixels": rows}).values()
    url = rw.service_url(kube_cluster, real_namespace, f"{name}-predictor")
    v1 = np.asarray(rw.predict_v1(url, name, rows)["predictions"], dtype=np.float32)
    np.testing.assert_allclose(v1, want, rtol=1e-4, atol=1e-5)
    v2 = rw.infer_v2(url, name, "pixels", rows)
    (out,) = v2["outputs"]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert (got.argmax(axis=1) == digits.target[-32:]).mean() >= 0.85


def _job_seconds(cluster: KubeCluster, namespace: str, name: str) -> float:
    (job,) = cluster.get("jobs", "-n", namespace, "-l", f"modelservice.dev/name={name}")["items"]
    started, done = job["status"]["startTime"], job["status"]["completionTime"]

    def parse(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    return (parse(done) - parse(started)).total_seconds()


def test_two_cpu_workers_match_one_worker(
    kube_cluster: KubeCluster, real_namespace: str, real_images: tuple[str, str]
) -> None:
    training = {"epochs": 10, "seed": 3}
    results = {}
    # One after the other: the node's two cores are shared, so parallel runs would skew times.
    for name, workers in (("digits-1w", 1), ("digits-2w", 2)):
        claim = f"{name}-models"
        rw.model_store(kube_cluster, real_namespace, claim)
        sample = rw.cpu_sample(name, claim)
        sample["spec"]["training"].update(training)
        if workers > 1:
            sample["spec"]["training"]["workers"] = workers
        kube_cluster.apply(sample, namespace=real_namespace)
        status = ready(kube_cluster, real_namespace, name)["status"]
        assert [v["version"] for v in status["versions"]] == [1]
        results[workers] = (
            status["model"]["metrics"]["accuracy"],
            _job_seconds(kube_cluster, real_namespace, name),
        )
    store = rw.STORE_ROOT / real_namespace / "digits-2w-models"
    metadata = json.loads((store / "v1" / "metadata.json").read_text())
    assert metadata["workers"] == 2
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["v1"]
    selector = "modelservice.dev/name=digits-2w,modelservice.dev/component=training"
    pods = kube_cluster.get("pods", "-n", real_namespace, "-l", selector)["items"]
    assert len(pods) == 2
    print(
        "[multi-worker] digits, 10 epochs, batch 32 per worker: "
        + ", ".join(
            f"{workers} worker(s): accuracy {acc:.4f}, Job {seconds:.0f} s"
            for workers, (acc, seconds) in sorted(results.items())
        ),
        file=sys.stderr,
    )
    assert abs(results[2][0] - results[1][0]) <= 0.02, results
