"""The real operator serves its Prometheus metrics once asked to (MSO_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opharness import OperatorProcess, apply, sample_manifest, wait_until

from kubeharness import KubeCluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
    except OSError:
        return None
    return body.decode()


def _value(text: str, series: str) -> float:
    """The value of one exact series line (``name{labels}``), 0 when absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def metered(
    crd: KubeCluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, int]]:
    port = _free_port()
    op = OperatorProcess(
        crd, namespace, tmp_path, extra_env={"MSO_OPERATOR_METRICS_PORT": str(port)}
    )
    op.start()
    yield op, port
    op.stop()


def test_metrics_after_the_sample_is_ready(
    metered: tuple[OperatorProcess, int], namespace: str
) -> None:
    op, port = metered
    ms = apply(op.cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")

    def ready_counted() -> str | None:
        text = _scrape(port)
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
