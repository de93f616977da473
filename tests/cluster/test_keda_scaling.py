"""KEDA in the local cluster scales a Deployment on a scraped gauge, out and back in.

The whole metric path of a predictor's ScaledObject, without a real node: KEDA's
``metrics-api`` scaler finds the endpoints of a Service in its EndpointSlices, scrapes
``/metrics`` there (here a gauge served by this test on the host, behind a hand-made
EndpointSlice), sums ``modelservice_inflight_requests``; KEDA's metrics API server hands the
value to the HPA controller through the aggregated ``external.metrics.k8s.io`` API, and the
HPA sets the Deployment's replicas. Every step is the real component's.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import addons, realnode
from localcluster.kubectl import KubeCluster, wait_for
from localcluster.state import load_state

NAME = "flow-predictor"
TARGET = 2  # per pod, as the operator's concurrency target


class Gauge(http.server.ThreadingHTTPServer):
    """A /metrics endpoint with one gauge whose value the test sets."""

    value = 0.0


class Handler(http.server.BaseHTTPRequestHandler):
    server: Gauge

    def do_GET(self) -> None:
        body = (
            "# TYPE modelservice_inflight_requests gauge\n"
            f"modelservice_inflight_requests {self.server.value}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # KEDA scrapes every 5 s: keep quiet
        return


@pytest.fixture(scope="module")
def keda(kube_cluster: KubeCluster) -> KubeCluster:
    """KEDA runs (``make cluster`` starts it); fails with the reason when it does not."""
    if "keda" not in addons.wanted_parts():
        pytest.skip("MSO_AUTOSCALERS leaves KEDA out, by request")
    state = load_state() or {}
    record: dict[str, Any] = dict(state.get("autoscalers") or {})  # type: ignore[call-overload]
    pids = dict(record.get("pids") or {})
    assert {"keda", "keda-adapter"} <= set(pids), "KEDA is not running: " + str(
        state.get("autoscalers_unavailable") or "the cluster was started without it"
    )
    return kube_cluster


@pytest.fixture
def gauge() -> Iterator[Gauge]:
    server = Gauge(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def objects(namespace: str, ip: str, port: int) -> list[dict[str, Any]]:
    """A Deployment on the simulated nodes, its Service, the gauge's endpoint, a ScaledObject."""
    labels = {"app": NAME}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "server", "image": "simulated"}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {"ports": [{"name": "metrics", "port": port, "targetPort": port}]},
        },
        {
            # The simulated pods serve nothing: the gauge on this host stands for them.
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{NAME}-gauge",
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": "tests.modelservice.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "metrics", "port": port, "protocol": "TCP"}],
        },
        {
            # As builders/scaledobject.py makes it for a predictor.
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                "minReplicaCount": 1,
                "maxReplicaCount": 4,
                "pollingInterval": 5,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
                    }
                },
                "triggers": [
                    {
                        "type": "metrics-api",
                        "name": "concurrency",
                        "metricType": "AverageValue",
                        "metadata": {
                            "url": f"http://{NAME}.{namespace}.svc.cluster.local:{port}/metrics",
                            "format": "prometheus",
                            "valueLocation": "modelservice_inflight_requests",
                            "aggregateFromKubeServiceEndpoints": "true",
                            "aggregationType": "sum",
                            "targetValue": str(TARGET),
                        },
                    }
                ],
            },
        },
    ]


def quantity(text: str) -> float:
    """A Kubernetes quantity as the HPA writes it ("2", "2500m")."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def replicas(cluster: KubeCluster, namespace: str) -> int:
    return int(cluster.get("deployment", NAME, "-n", namespace)["spec"]["replicas"])


def test_the_scraped_gauge_scales_the_deployment_out_and_back_in(
    keda: KubeCluster, namespace: str, gauge: Gauge
) -> None:
    ip = realnode.host_ip()
    assert ip, "KEDA's scraper needs a non-loopback address for the gauge's endpoint"
    gauge.value = 6.0  # 6 in flight / 2 per pod: 3 replicas
    for manifest in objects(namespace, ip, gauge.server_address[1]):
        keda.apply(manifest)

    started = time.monotonic()
    wait_for("KEDA's HPA to scale out to 3", lambda: replicas(keda, namespace) == 3, 120, 1)
    scaled_out = time.monotonic() - started
    hpa = keda.get("hpa", f"keda-hpa-{NAME}", "-n", namespace)
    (metric,) = hpa["status"]["currentMetrics"]
    # The HPA read the summed gauge through KEDA's metrics API server (per replica).
    assert metric["type"] == "External"
    assert quantity(metric["external"]["current"]["averageValue"]) > 0

    gauge.value = 0.0
    started = time.monotonic()
    wait_for("KEDA's HPA to scale back in to 1", lambda: replicas(keda, namespace) == 1, 120, 1)
    print(f"scale-out {scaled_out:.1f}s, scale-in {time.monotonic() - started:.1f}s")
