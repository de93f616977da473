"""The operator's Prometheus metrics: what the reconciler counts, and the /metrics endpoint."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
from fakekube import FakeKube
from kubernetes_asyncio.client.exceptions import ApiException
from test_reconciler import NS, finish_job, kube, roll_out, run  # noqa: F401 (fixture)

from modelservice_operator import metrics
from modelservice_operator.kube import ApiError, Kube

pytestmark = pytest.mark.unit


def value(name: str, **labels: str) -> float:
    """The current value of one sample (0 when absent)."""
    got = metrics.REGISTRY.get_sample_value(name, labels)
    return got or 0.0


def phase_count(phase: str) -> float:
    return value("modelservice_operator_modelservices", phase=phase)


async def test_reconciles_jobs_promotions_and_phases_are_counted(kube: FakeKube) -> None:  # noqa: F811
    before = {
        "reconciles": value("modelservice_operator_reconciles_total", result="success"),
        "jobs": value("modelservice_operator_training_jobs_total"),
        "promotions": value("modelservice_operator_promotions_total"),
        "durations": value(
            "modelservice_operator_reconcile_duration_seconds_count", result="success"
        ),
    }
    await run(kube)
    assert phase_count("Pending") >= 1
    await run(kube)  # the Job exists: not created again
    assert value("modelservice_operator_training_jobs_total") == before["jobs"] + 1
    finish_job(kube, 0.97)
    await run(kube)
    roll_out(kube)
    ms = await run(kube)
    await run(kube)  # promoted once, not at every resync
    assert ms["status"]["phase"] == "Ready"
    assert value("modelservice_operator_promotions_total") == before["promotions"] + 1
    assert (
        value("modelservice_operator_reconciles_total", result="success")
        == before["reconciles"] + 5
    )
    assert (
        value("modelservice_operator_reconcile_duration_seconds_count", result="success")
        == before["durations"] + 5
    )
    assert phase_count("Ready") >= 1

    # Deleted: it leaves the phase gauge.
    ready = phase_count("Ready")
    gone = value("modelservice_operator_reconciles_total", result="gone")
    del kube.objects[("ModelService", NS, "digits")]
    await reconcile_gone(kube)
    assert phase_count("Ready") == ready - 1
    assert value("modelservice_operator_reconciles_total", result="gone") == gone + 1


async def reconcile_gone(kube: FakeKube) -> None:  # noqa: F811
    from modelservice_operator.reconciler import reconcile
    from modelservice_operator.settings import OperatorSettings

    body = {"metadata": {"namespace": NS, "name": "digits", "uid": "ms-uid"}}
    assert await reconcile(kube, body, OperatorSettings()) is None  # type: ignore[arg-type]


async def test_gate_failure_is_counted_once_per_version(kube: FakeKube) -> None:  # noqa: F811
    before = value("modelservice_operator_quality_gate_failures_total", metric="accuracy")
    await run(kube)
    finish_job(kube, 0.5)
    ms = await run(kube)
    await run(kube)
    assert ms["status"]["phase"] == "Failed"
    after = value("modelservice_operator_quality_gate_failures_total", metric="accuracy")
    assert after == before + 1


def test_every_phase_is_exported_from_the_start() -> None:
    text = metrics_text()
    for phase in ("Pending", "Training", "Deploying", "Ready", "Degraded", "Failed"):
        assert f'modelservice_operator_modelservices{{phase="{phase}"}}' in text


class _Api:
    """An ApiClient whose every call fails with ``status`` (0: answers 200 with ``{}``)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers

    async def call_api(self, *_: Any, **__: Any) -> Any:
        if not self.status:
            return {}, 200, {}
        exc = ApiException(status=self.status, reason="test")
        exc.headers = self.headers
        raise exc


def counted(api: _Api) -> Kube:
    """A client with the metrics observer, as the handlers build it."""
    return Kube(api, metrics.observe_api_call)  # type: ignore[arg-type]


async def test_api_errors_count_only_the_unexpected() -> None:
    for status in ("404", "409", "500"):
        metrics.API_ERRORS.labels(status=status)
    before = {s: value("modelservice_operator_api_errors_total", status=s) for s in ("404", "500")}
    assert await counted(_Api(404)).get("Job", NS, "x") is None
    with pytest.raises(ApiError):
        await counted(_Api(404)).list_objects("Job", NS)
    with pytest.raises(ApiError):
        await counted(_Api(500)).get("Job", NS, "x")
    assert value("modelservice_operator_api_errors_total", status="404") == before["404"] + 1
    assert value("modelservice_operator_api_errors_total", status="500") == before["500"] + 1


async def test_every_api_request_is_counted_by_method_and_code() -> None:
    ok = value("modelservice_operator_api_requests_total", method="GET", code="200")
    gone = value("modelservice_operator_api_requests_total", method="GET", code="404")
    await counted(_Api(0)).get("Job", NS, "x")
    await counted(_Api(404)).get("Job", NS, "x")
    assert value("modelservice_operator_api_requests_total", method="GET", code="200") == ok + 1
    assert value("modelservice_operator_api_requests_total", method="GET", code="404") == gone + 1


async def test_a_client_without_observer_counts_nothing() -> None:
    before = value("modelservice_operator_api_errors_total", status="500")
    with pytest.raises(ApiError):
        await Kube(_Api(500)).get("Job", NS, "x")  # type: ignore[arg-type]
    assert value("modelservice_operator_api_errors_total", status="500") == before


async def test_retry_after_of_a_429_reaches_the_error() -> None:
    with pytest.raises(ApiError) as raised:
        await Kube(_Api(429, {"Retry-After": "7"})).get("Job", NS, "x")  # type: ignore[arg-type]
    assert raised.value.status == 429
    assert raised.value.retry_after == 7.0
    with pytest.raises(ApiError) as raised:
        await Kube(_Api(500)).get("Job", NS, "x")  # type: ignore[arg-type]
    assert raised.value.retry_after is None


def test_the_api_client_does_not_import_metrics() -> None:
    import ast
    import inspect

    from modelservice_operator import kube as kube_module

    tree = ast.parse(inspect.getsource(kube_module))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any("metrics" in name or "prometheus" in name for name in imported), imported


def metrics_text(port: int | None = None) -> str:
    """The text exposition of the registry (through HTTP when ``port`` is given)."""
    if port is None:
        from prometheus_client import generate_latest

        return generate_latest(metrics.REGISTRY).decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_and_a_taken_port_is_not_fatal() -> None:
    port = _free_port()
    server = metrics.serve(port, host="127.0.0.1")
    assert server is not None
    try:
        text = metrics_text(port)
        assert "modelservice_operator_reconciles_total" in text
        assert "modelservice_serving" not in text  # our own registry only
        assert metrics.serve(port, host="127.0.0.1") is None
    finally:
        server.shutdown()
