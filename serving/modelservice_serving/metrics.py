"""Prometheus metrics: requests and latency by endpoint and status, batches, queue, load time.

``modelservice_inflight_requests`` (inference requests received and not yet answered: queued
for the model or running) is the autoscaling signal: KEDA scrapes it from every predictor pod.

Each app gets its own registry, so several apps in one process (tests) do not collide.
The request metrics come from a plain ASGI middleware: cheaper than ``BaseHTTPMiddleware``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The server's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelservice_requests",
            "HTTP requests by endpoint and status",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelservice_request_duration_seconds",
            "HTTP request latency by endpoint and status",
            ["method", "endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelservice_batch_size",
            "rows per model call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelservice_queue_depth", "rows waiting for the model", registry=self.registry
        )
        self.inflight_requests = Gauge(
            "modelservice_inflight_requests",
            "inference requests received and not yet answered (queued or running)",
            registry=self.registry,
        )
        self.model_load_seconds = Gauge(
            "modelservice_model_load_seconds",
            "time to load and warm up the model",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "modelservice_connections_refused",
            "connections closed or requests refused by the connection guard, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "modelservice_model_ready", "1 when the model serves", registry=self.registry
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# Inference is a POST to ``/v1/models/{name}:predict`` or ``/v2/models/{name}/infer`` (with
# ``/versions/{v}`` or not).
# The route is only known after routing, so the in-flight gauge goes by the path itself.
INFERENCE_PATH_ENDS = (":predict", "/infer")


def is_inference(scope: Scope) -> bool:
    """Whether an HTTP request is an inference call (counted as in flight)."""
    return bool(scope["method"] == "POST" and scope["path"].endswith(INFERENCE_PATH_ENDS))


class RequestMetricsMiddleware:
    """Counts and times every HTTP request under its route template (bounded labels), and
    keeps the number of inference requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        inflight = self.metrics.inflight_requests if is_inference(scope) else None
        if inflight is not None:
            inflight.inc()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if inflight is not None:
                inflight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], endpoint, status)
            children = self._children.get(key)
            if children is None:
                labels = (scope["method"], endpoint, str(status))
                children = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
