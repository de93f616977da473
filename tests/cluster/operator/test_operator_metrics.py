"""The real operator serves its Prometheus metrics once asked to (MSO_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

import re

from opharness import OperatorProcess, apply, sample_manifest, scrape_metrics, wait_until


def _value(text: str, series: str) -> float:
    """The value of one exact series line (``name{labels}``), 0 when absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_after_the_sample_is_ready(
    metered: tuple[OperatorProcess, int], namespace: str
) -> None:
    op, port = metered
    ms = apply(op.cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")

    def ready_counted() -> str | None:
        text = scrape_metrics(port)
        ok = text and _value(text, 'modelservice_operator_modelservices{phase="Ready"}') == 1
        return text if ok else None

    text = wait_until("the Ready phase in /metrics", ready_counted, timeout=30)
    assert _value(text, "modelservice_operator_training_jobs_total") == 1
    assert _value(text, "modelservice_operator_promotions_total") == 1
    assert _value(text, 'modelservice_operator_reconciles_total{result="success"}') >= 3
    assert (
        _value(text, 'modelservice_operator_reconcile_duration_seconds_count{result="success"}')
        >= 3
    )
    assert "modelservice_operator_quality_gate_failures_total" in text
    assert "modelservice_operator_api_errors_total" in text or "api_errors" not in text
    assert _value(text, 'modelservice_operator_modelservices{phase="Failed"}') == 0
