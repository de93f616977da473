"""The request metrics kept in plain numbers (``metrics.RequestStats``) expose what
prometheus_client's Counter and Histogram exposed: the same names, labels and buckets."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelservice_serving.metrics import LATENCY_BUCKETS, ServerMetrics

pytestmark = pytest.mark.unit


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_counts_sums_and_cumulative_buckets_per_route_and_status() -> None:
    metrics = ServerMetrics()
    stats = metrics.requests
    route = "/v1/models/{name}:predict"
    stats.observe("POST", route, 200, 0.0005)  # on a bound: counted in that bucket
    stats.observe("POST", route, 200, 0.003)
    stats.observe("POST", route, 200, 9.0)  # past every bound: +Inf only
    stats.observe("POST", route, 503, 0.0001)
    stats.in_flight = 3
    samples = _samples(metrics)
    ok = (("endpoint", route), ("method", "POST"), ("status", "200"))
    refused = (("endpoint", route), ("method", "POST"), ("status", "503"))
    assert samples[("modelservice_requests_total", ok)] == 3
    assert samples[("modelservice_requests_total", refused)] == 1
    assert samples[("modelservice_request_duration_seconds_count", ok)] == 3
    assert samples[("modelservice_request_duration_seconds_sum", ok)] == pytest.approx(9.0035)

    def bucket(le: str) -> float:
        labels = tuple(sorted((*ok, ("le", le))))
        return samples[("modelservice_request_duration_seconds_bucket", labels)]

    assert bucket("0.0005") == 1
    assert bucket("0.001") == 1
    assert bucket("0.005") == 2
    assert bucket("5.0") == 2
    assert bucket("+Inf") == 3
    assert len([key for key in samples if key[0].endswith("_bucket") and ok[2] in key[1]]) == (
        len(LATENCY_BUCKETS) + 1
    )
    assert samples[("modelservice_inflight_requests", ())] == 3
