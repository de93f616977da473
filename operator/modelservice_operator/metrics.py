"""The operator's Prometheus metrics and the ``/metrics`` endpoint that serves them.

The series live in a registry of their own (not prometheus_client's global one), so that a
process that also imports the serving package, such as the test runner, never mixes the two.
Counters count transitions the reconciler records once (a Job created, a version promoted, a
gate failed), never levels it sees again at every resync.

The API client does not import this module: :func:`observe_api_call` is the observer the
handlers give it, so that the client stays usable (and testable) without a registry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .models import Phase

__all__ = [
    "API_ERRORS",
    "API_REQUESTS",
    "GATE_FAILURES",
    "MODELSERVICES",
    "PROMOTIONS",
    "QUEUE_WAIT_SECONDS",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "REGISTRY",
    "TRAINING_JOBS",
    "forget_phase",
    "observe_api_call",
    "observe_phase",
    "serve",
]

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "modelservice_operator"

RECONCILES = Counter(
    f"{PREFIX}_reconciles",
    "Reconciles of one ModelService, by result (success, api_error, error, gone).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Wall time of one reconcile, by result.",
    ["result"],
    # A reconcile is a handful of API calls: milliseconds, seconds when the API is slow.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    f"{PREFIX}_queue_wait_seconds",
    "How long a due reconcile waited for a free worker (workqueue.WorkQueue): near zero "
    "unless the operator is saturated.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
API_ERRORS = Counter(
    f"{PREFIX}_api_errors",
    "Kubernetes API responses the operator did not expect, by HTTP status (0: no response).",
    ["status"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests",
    "Kubernetes API requests the operator's reconciler made, by HTTP method and status code "
    "(0: no response). kopf's own watches and annotation patches are not counted.",
    ["method", "code"],
    registry=REGISTRY,
)
MODELSERVICES = Gauge(
    f"{PREFIX}_modelservices",
    "ModelServices this operator reconciles, by status.phase.",
    ["phase"],
    registry=REGISTRY,
)
TRAINING_JOBS = Counter(
    f"{PREFIX}_training_jobs",
    "Training Jobs the operator created.",
    registry=REGISTRY,
)
PROMOTIONS = Counter(
    f"{PREFIX}_promotions",
    "Trained versions promoted to serving by a passed quality gate.",
    registry=REGISTRY,
)
GATE_FAILURES = Counter(
    f"{PREFIX}_quality_gate_failures",
    "Trained versions the quality gate refused, by gate metric.",
    ["metric"],
    registry=REGISTRY,
)

PHASES: tuple[str, ...] = (*get_args(Phase), "Unknown")
# Every phase is exported from the start (0 until seen), so that dashboards and alerts on
# e.g. phase="Failed" see a series rather than nothing.
for _phase in PHASES:
    MODELSERVICES.labels(phase=_phase)
for _result in ("success", "api_error", "error", "gone"):
    RECONCILES.labels(result=_result)
for _metric in ("accuracy", "loss"):
    GATE_FAILURES.labels(metric=_metric)

_phases: dict[str, str] = {}
_phases_lock = threading.Lock()


def _publish() -> None:
    counts = dict.fromkeys(PHASES, 0)
    for phase in _phases.values():
        counts[phase] += 1
    for phase, count in counts.items():
        MODELSERVICES.labels(phase=phase).set(count)


def observe_phase(key: str, phase: str | None) -> None:
    """Record the phase of the ModelService ``key`` (namespace/name) after a reconcile."""
    with _phases_lock:
        _phases[key] = phase if phase in PHASES else "Unknown"
        _publish()


def forget_phase(key: str) -> None:
    """The ModelService ``key`` is gone: it no longer counts in any phase."""
    with _phases_lock:
        if _phases.pop(key, None) is not None:
            _publish()


def observe_api_call(method: str, status: int, expected: bool) -> None:
    """Count one API call; a failure the caller did not expect is also an API error."""
    API_REQUESTS.labels(method=method, code=str(status)).inc()
    if not expected and (status == 0 or status >= 400):
        API_ERRORS.labels(status=str(status)).inc()


def serve(port: int, host: str = "0.0.0.0") -> Any | None:
    """Serve ``/metrics`` on ``port`` in a daemon thread; return the server, or None.

    A port that cannot be bound is logged, not fatal: the operator's job is reconciling,
    and a restart loop over its metrics would stop that too.
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", host, port, exc)
        return None
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    return server
