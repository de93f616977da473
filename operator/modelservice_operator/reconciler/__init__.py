"""The level-based reconcile of one ModelService: observe -> decide -> apply.

- :mod:`.observe` reads the watch-fed caches into one :class:`~.observe.Observed` value;
- :mod:`.decide` (with :mod:`.training` and :mod:`.children`) turns it into a plan, purely;
- :mod:`.apply` carries the plan out: server-side apply of children that differ, deletes,
  and the status when it changed.

Every kopf entry point (create, update, resume, a child's event, the periodic resync) calls
:func:`reconcile`; it converges from any point, including after a restart between a write and
the status patch that records it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from .. import metrics
from ..cache import ApiSource, ChildSource
from ..kube import ApiError
from ..models import ModelServiceStatus
from ..settings import OperatorSettings
from .apply import apply_children, merge_patch_diff, write_status
from .decide import Settings, decide
from .observe import Autoscalers, observe

__all__ = ["decision_settings", "forget", "merge_patch_diff", "reconcile"]

_locks: dict[tuple[str, str], asyncio.Lock] = {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decision_settings(settings: OperatorSettings) -> Settings:
    """The values of the operator's settings that decisions depend on."""
    return Settings(
        defaults=settings,
        cluster_domain=settings.cluster_domain,
        versions_kept=settings.history_limit,
        keda_namespace=settings.keda_namespace,
    )


def forget(namespace: str, name: str) -> None:
    """Drop what the operator keeps about a deleted ModelService (lock, phase gauge)."""
    _locks.pop((namespace, name), None)
    metrics.forget_phase(f"{namespace}/{name}")


async def reconcile(
    kube: Any,
    body: dict[str, Any],
    settings: OperatorSettings,
    source: ChildSource | None = None,
) -> ModelServiceStatus | None:
    """Converge the children of one ModelService and write its status if it changed.

    ``body`` names the ModelService (only its namespace and name are read); ``source`` is
    the operator's cache, or the API itself when None.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    source = source if source is not None else ApiSource(kube)
    lock = _locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        started = time.monotonic()
        result = "error"
        try:
            autoscalers = Autoscalers(settings.keda, settings.keda_check_interval_s)
            obs = await observe(source, kube, namespace, name, settings.log_tail_lines, autoscalers)
            if obs is None:
                forget(namespace, name)
                result = "gone"
                return None
            values = decision_settings(settings)
            now = _now()
            plan = decide(obs, values, now)
            rejected = await apply_children(kube, source, obs, plan)
            if rejected is not None:
                plan = decide(obs, values, now, rejected=rejected)
            await write_status(kube, source, obs, plan.status)
            for type_, reason, message in plan.events:
                await kube.event(obs.body, type_, reason, message)
            if plan.promoted:
                metrics.PROMOTIONS.inc()
            if plan.gate_failed is not None:
                metrics.GATE_FAILURES.labels(metric=plan.gate_failed).inc()
            metrics.observe_phase(f"{namespace}/{name}", plan.status.phase)
            result = "success"
            return plan.status
        except ApiError:
            result = "api_error"
            raise
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.labels(result=result).observe(time.monotonic() - started)
