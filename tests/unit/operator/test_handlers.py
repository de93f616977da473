"""The kopf handlers' own bookkeeping: a deleted ModelService is forgotten."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from modelservice_operator import handlers, metrics, reconciler
from modelservice_operator.cache import MODELSERVICE_INDEX, IndexSource
from modelservice_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def _gauge(phase: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "modelservice_operator_modelservices", {"phase": phase}
    )
    return float(value or 0.0)


async def _never_called(key: tuple[str, str]) -> None:
    raise AssertionError(f"nothing was queued, yet {key} ran")


async def test_deleted_modelservice_is_forgotten() -> None:
    source = IndexSource({MODELSERVICE_INDEX: {}})
    queue: WorkQueue[tuple[str, str]] = WorkQueue(_never_called, workers=1)
    memo: dict[str, Any] = {"source": source, "indexed": asyncio.Event(), "queue": queue}
    reconciler._locks[("ml", "gone")] = asyncio.Lock()
    metrics.observe_phase("ml/gone", "Ready")
    ready = _gauge("Ready")
    svc = {
        "kind": "Service",
        "metadata": {
            "name": "gone-predictor",
            "namespace": "ml",
            "labels": {"modelservice.dev/name": "gone"},
        },
    }
    source.written("Service", None, svc)

    await handlers.on_modelservice_event(
        event={"type": "MODIFIED"}, namespace="ml", name="gone", memo=memo
    )
    assert memo["indexed"].is_set()  # kopf calls no handler before the indexes are full
    assert ("ml", "gone") in reconciler._locks

    await handlers.on_modelservice_event(
        event={"type": "DELETED"}, namespace="ml", name="gone", memo=memo
    )
    assert ("ml", "gone") not in reconciler._locks
    assert _gauge("Ready") == ready - 1
    assert source.overlay.entries == {}


def test_kopf_handler_successes_are_quiet_unless_debugging() -> None:
    objects = logging.getLogger("kopf.objects")
    before = objects.level
    try:
        objects.setLevel(logging.INFO)
        handlers.quiet_handler_successes()
        assert not objects.isEnabledFor(logging.INFO)
        assert objects.isEnabledFor(logging.WARNING)
        objects.setLevel(logging.DEBUG)  # kopf run --verbose
        handlers.quiet_handler_successes()
        assert objects.isEnabledFor(logging.INFO)
    finally:
        objects.setLevel(before)
