"""Prometheus metrics: requests and latency by endpoint and status, batches, queue, load time.

``modelservice_inflight_requests`` (inference requests received and not yet answered: queued
for the model or running, over HTTP or gRPC) is the autoscaling signal: KEDA scrapes it from
every predictor pod.

Each app gets its own registry, so several apps in one process (tests) do not collide.
The request metrics come from a plain ASGI middleware (cheaper than ``BaseHTTPMiddleware``)
and from the inference routes' own paths, into :class:`RequestStats`; gRPC calls from either
gRPC server, into :class:`GrpcStats`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


_REQUEST_LABELS = ("method", "endpoint", "status")
_GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type", "grpc_code")

# gRPC's status codes as its own implementations name them in metrics (Go's codes.Code
# strings, which go-grpc-prometheus and the dashboards built on it use), by number.
GRPC_CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip


class _CallStats:
    """A counter and a latency histogram over the same labels, in plain numbers.

    prometheus_client's Counter, Histogram and Gauge take a lock per update: their four
    updates cost about 10 µs a request (measured), more than parsing a small request.
    These are plain numbers, updated by the event loop and turned into metric families
    when scraped; the lock, uncontended but for a scrape, keeps a series' count, sum and
    buckets consistent with each other.
    """

    def __init__(
        self,
        buckets: tuple[float, ...],
        labels: tuple[str, ...],
        counter: tuple[str, str],
        histogram: tuple[str, str],
    ) -> None:
        self._bounds = buckets
        self._labels = labels
        self._counter = counter
        self._histogram = histogram
        # labels -> [count, sum, then one count per bucket and +Inf]
        self._series: dict[tuple[str | int, ...], list[float]] = {}
        self._created: dict[tuple[str | int, ...], float] = {}
        self._lock = threading.Lock()

    def _record(self, key: tuple[str | int, ...], seconds: float) -> None:
        slot = 2 + bisect.bisect_left(self._bounds, seconds)  # the first bound >= seconds
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (3 + len(self._bounds))
                self._created[key] = time.time()
            series[0] += 1
            series[1] += seconds
            series[slot] += 1

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = [(key, list(series)) for key, series in self._series.items()]
        yield from self._families(snapshot)

    def _families(
        self, snapshot: list[tuple[tuple[str | int, ...], list[float]]] | None = None
    ) -> Iterator[Metric]:
        count = CounterMetricFamily(*self._counter, labels=self._labels)
        latency = HistogramMetricFamily(*self._histogram, labels=self._labels)
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        for key, series in snapshot or []:
            labels = [str(value) for value in key]
            count.add_metric(labels, series[0], created=self._created[key])
            cumulative, buckets = 0.0, []
            for bound, hits in zip(bounds, series[2:], strict=True):
                cumulative += hits
                buckets.append((bound, cumulative))
            latency.add_metric(labels, buckets, sum_value=series[1])
        yield count
        yield latency


class RequestStats(_CallStats):
    """HTTP requests by method, route template and status, and inference requests in
    flight (HTTP and gRPC alike: the autoscaling signal)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        super().__init__(
            buckets,
            _REQUEST_LABELS,
            ("modelservice_requests", "HTTP requests by endpoint and status"),
            (
                "modelservice_request_duration_seconds",
                "HTTP request latency by endpoint and status",
            ),
        )
        self.in_flight = 0  # inference requests received and not yet answered

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self._record((method, endpoint, status), seconds)


class GrpcStats(_CallStats):
    """gRPC calls by method and status code, under go-grpc-prometheus's names
    (``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so the usual gRPC
    dashboards and alerts read them."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        super().__init__(
            buckets,
            _GRPC_LABELS,
            ("grpc_server_handled", "gRPC calls completed on the server, by status code"),
            ("grpc_server_handling_seconds", "gRPC call latency, by method and status code"),
        )

    @staticmethod
    def method_labels(
        path: str, request_streaming: bool, response_streaming: bool
    ) -> tuple[str, str, str]:
        """The service, method and type labels of the method at ``path`` (``/pkg.Svc/M``)."""
        service, _, method = path.lstrip("/").rpartition("/")
        kind = {
            (False, False): "unary",
            (True, False): "client_stream",
            (False, True): "server_stream",
            (True, True): "bidi_stream",
        }[(request_streaming, response_streaming)]
        return service, method, kind

    def observe(self, method: tuple[str, str, str], code: int, seconds: float) -> None:
        name = GRPC_CODE_NAMES[code] if 0 <= code < len(GRPC_CODE_NAMES) else str(code)
        self._record((*method, name), seconds)


class ServerMetrics:
    """The server's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats(LATENCY_BUCKETS)
        self.registry.register(self.requests)
        self.grpc = GrpcStats(LATENCY_BUCKETS)
        self.registry.register(self.grpc)
        self.batch_size = Histogram(
            "modelservice_batch_size",
            "rows per model call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelservice_queue_depth", "rows waiting for the model", registry=self.registry
        )
        # Read when scraped (a Gauge.set takes a lock: once a request was too often).
        self.queued_rows: Callable[[], int] = lambda: 0
        self.queue_depth.set_function(lambda: self.queued_rows())
        self.inflight_requests = Gauge(
            "modelservice_inflight_requests",
            "inference requests received and not yet answered (queued or running)",
            registry=self.registry,
        )
        self.inflight_requests.set_function(lambda: self.requests.in_flight)
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
        self.stats = metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        stats = self.stats
        inference = is_inference(scope)
        if inference:
            stats.in_flight += 1

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if inference:
                stats.in_flight -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            stats.observe(scope["method"], endpoint, status, time.perf_counter() - started)
