"""KEDA scales a real predictor on in-flight requests, out under load and back in after.

On the real node: the operator (Helm chart, ``keda.enabled``) makes a ScaledObject whose
metrics-api trigger reads ``modelservice_inflight_requests`` from every predictor pod; KEDA's
HPA adds replicas while clients keep more requests in flight than the per-pod target, and
removes them once the load stops. Every request must succeed throughout. The run's timeline
(replicas, in-flight requests, p99 latency per second) is written as JSON for
``docs/autoscaling.md`` (``tests/benchmarks/plot_autoscaling.py`` draws it).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import addons
from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster, wait_for

pytestmark = pytest.mark.timeout(1800)

NAME = "busy"
TARGET = 2  # in-flight requests per pod
WORKERS = 8  # clients, each with one request in flight: 8 / 2 = 4 pods wanted, 3 allowed
# One-row requests wait out the batching window (a batch of 64 never fills from 8 clients),
# so each client's request is in flight nearly all the time and the gauge KEDA samples every
# few seconds reads close to WORKERS. Requests that finish in a millisecond (the LiteRT
# runtime) leave it at 0-4 between samples, and the scale-out then depends on luck.
BATCHING = {"maxBatchSize": 64, "maxLatencyMs": 100}
# One client keeps sending while KEDA scales in (1 in flight: 1 pod wanted), so pods are
# removed under traffic: their drain is part of "zero failed requests".
TRICKLE_WORKERS = 1
STABILIZATION_S = 20  # scale-down window: the "minReplicas 1" alternative to scale to zero
IDLE_S = 30  # quiet time before the first request at one replica
TIMELINE = Path(
    os.environ.get(
        "MSO_AUTOSCALING_TIMELINE",
        Path(__file__).resolve().parents[1] / "benchmarks" / "autoscaling-timeline.json",
    )
)


@pytest.fixture(scope="module")
def keda_namespace(kube_cluster: KubeCluster, real_images: tuple[str, str]) -> Iterator[str]:
    """A namespace watched by an operator with KEDA enabled (KEDA must run in the cluster)."""
    if "keda" not in addons.wanted_parts():
        pytest.skip("MSO_AUTOSCALERS leaves KEDA out, by request")
    available = kube_cluster.kubectl(
        "get",
        "apiservice",
        "v1beta1.external.metrics.k8s.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Available')].status}",
        check=False,
    )
    assert available == "True", (
        "KEDA's metrics API server is not Available in this cluster (make cluster starts it "
        "unless MSO_AUTOSCALERS=0)"
    )
    suffix = uuid.uuid4().hex[:6]
    namespace, system, release = f"keda-{suffix}", f"keda-{suffix}-system", f"msk-{suffix}"
    kube_cluster.kubectl("create", "namespace", namespace)
    rw.install_operator(
        kube_cluster, release, system, [namespace], real_images[0], keda={"enabled": True}
    )
    yield namespace
    kube_cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", check=False)
    rw.uninstall_operator(kube_cluster, release, system)
    rw.remove_store(namespace)


def replicas(cluster: KubeCluster, namespace: str) -> tuple[int, int]:
    d = cluster.get("deployment", f"{NAME}-predictor", "-n", namespace)
    return int(d["spec"].get("replicas") or 0), int(d["status"].get("readyReplicas") or 0)


def inflight(cluster: KubeCluster, namespace: str) -> float | None:
    """The summed in-flight requests KEDA last fed its HPA (external metric), if any."""
    hpas = cluster.get("hpa", "-n", namespace)["items"]
    for hpa in hpas:
        for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
            external = metric.get("external") or {}
            value = (external.get("current") or {}).get("averageValue")
            if value is not None:
                text = str(value)
                number = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
                return number * max(1, int(hpa["status"].get("currentReplicas") or 1))
    return None


class Timeline:
    """One sample a second: replicas, ready replicas, in-flight requests, client p99."""

    def __init__(self, cluster: KubeCluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.samples: list[dict[str, Any]] = []
        self.latencies: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def record(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append((time.monotonic() - self.started, seconds))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic() - self.started
            with self.lock:
                recent = sorted(s for t, s in self.latencies if now - t <= 5)
            p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else None
            try:
                want, ready = replicas(self.cluster, self.namespace)
                load = inflight(self.cluster, self.namespace)
            except Exception:  # one missed sample is not a failure of the system
                continue
            self.samples.append(
                {"t": round(now, 1), "replicas": want, "ready": ready, "inflight": load,
                 "p99_ms": round(p99 * 1000, 1) if p99 is not None else None}
            )  # fmt: skip

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_in_flight_load_scales_out_then_in_with_zero_failed_requests(
    kube_cluster: KubeCluster, keda_namespace: str
) -> None:
    namespace = keda_namespace
    claim = f"{NAME}-models"
    store = rw.model_store(kube_cluster, namespace, claim)
    sample = rw.cpu_sample(
        NAME,
        claim,
        minReplicas=1,
        maxReplicas=3,
        autoscaling={
            "metric": "concurrency",
            "target": TARGET,
            "scaleDownStabilizationSeconds": STABILIZATION_S,
        },
        batching=BATCHING,
    )
    kube_cluster.apply(sample, namespace=namespace)
    rw.wait_ready(kube_cluster, namespace, NAME, version=1, timeout=900)
    status = kube_cluster.get("ms", NAME, "-n", namespace)["status"]["serving"]["autoscaler"]
    assert (status["kind"], status["metric"], status["reason"]) == (
        "ScaledObject",
        "concurrency",
        "KEDAInstalled",
    )
    assert kube_cluster.get("scaledobject", f"{NAME}-predictor", "-n", namespace)
    url = rw.service_url(kube_cluster, namespace, f"{NAME}-predictor")
    rows = rw.held_out_digits()[0][:1]
    name = json.loads((store / "v1" / "metadata.json").read_text())["inputs"][0]["name"]

    with Timeline(kube_cluster, namespace) as timeline:

        def send() -> str:
            started = time.monotonic()
            answer = rw.infer_v2(url, NAME, name, rows)
            timeline.record(time.monotonic() - started)
            return str(answer.get("model_version"))

        time.sleep(5)
        load_started = time.monotonic()
        with rw.RequestLoop(send, workers=WORKERS, max_seconds=300) as loop:
            wait_for(
                "KEDA to scale the predictor out",
                lambda: replicas(kube_cluster, namespace)[1] >= 2,
                240,
                1,
            )
            scaled_out = time.monotonic() - load_started
            time.sleep(30)  # latency settles with the new replicas serving
        load_stopped = time.monotonic()
        with rw.RequestLoop(send, workers=TRICKLE_WORKERS, max_seconds=360) as trickle:
            wait_for(
                "KEDA to scale the predictor back in",
                lambda: replicas(kube_cluster, namespace) == (1, 1),
                300,
                1,
            )
            scaled_in = time.monotonic() - load_stopped
            time.sleep(10)  # the removed pods drain while the trickle goes on
        # The alternative to scale to zero: one warm replica. After a quiet spell, the first
        # request's latency is that of any request (no cold start).
        time.sleep(IDLE_S)
        first_started = time.monotonic()
        send()
        first_after_idle = time.monotonic() - first_started
        time.sleep(5)

    failed = loop.failed + trickle.failed
    print(
        f"scale-out (load start -> 2 ready) {scaled_out:.1f}s, scale-in (load stop -> 1 "
        f"replica) {scaled_in:.1f}s with {STABILIZATION_S}s stabilization, first request after "
        f"{IDLE_S}s idle {first_after_idle * 1000:.1f}ms; {loop.ok + trickle.ok} ok, "
        f"{failed} failed"
    )
    TIMELINE.write_text(
        json.dumps(
            {
                "scale_out_s": round(scaled_out, 1),
                "scale_in_s": round(scaled_in, 1),
                "scale_down_stabilization_s": STABILIZATION_S,
                "first_request_after_idle_ms": round(first_after_idle * 1000, 1),
                "idle_s": IDLE_S,
                "load_start_s": round(load_started - timeline.started, 1),
                "load_stop_s": round(load_stopped - timeline.started, 1),
                "workers": WORKERS,
                "trickle_workers": TRICKLE_WORKERS,
                "target": TARGET,
                "ok": loop.ok + trickle.ok,
                "failed": failed,
                "samples": timeline.samples,
            },
            indent=1,
        )
    )
    assert loop.ok > 0
    assert trickle.ok > 0
    assert failed == 0, (loop.errors + trickle.errors)[:10]
