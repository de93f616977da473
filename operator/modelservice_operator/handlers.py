"""Thin kopf handlers: every way a ModelService can need attention calls the one reconcile.

- create, update and resume (kopf's change handlers);
- an event of one of its children (a Job finished, a Deployment's availability moved, a pod
  got stuck), so that status follows the cluster at once rather than at the next tick;
- a periodic resync of every known ModelService, for drift nobody announces.

The resync is a plain task fed by an event handler instead of a ``kopf.timer``: kopf puts a
finalizer on every object a timer serves, and a finalizer would leave ModelServices stuck in
Terminating whenever the operator is not running (uninstalled, crash-looping, scaled to
zero). Children are removed by garbage collection through their ownerReferences, so the
operator needs no finalizer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from . import metrics, redaction
from .kube import ApiError, Kube, connect
from .names import GROUP, LABEL_NAME, PLURAL, VERSION
from .reconciler import reconcile
from .settings import get_settings

__all__ = ["close", "configure", "on_change", "on_child_event", "track"]

log = logging.getLogger(__name__)
STORAGE_PREFIX = "kopf.modelservice.dev"
# Children whose changes should reach the owner's status at once.
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("apps", "v1", "deployments"), ("v1", "pods"))
# Bursts of child events (a rollout touches many pods) coalesce into one reconcile.
CHILD_EVENT_DEBOUNCE_S = 0.5

Key = tuple[str, str]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status is ours), quiet events, peering."""
    config = get_settings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    redaction.install()
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
    else:
        settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # Watch only this operator's children, filtered by the API server, not every pod.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = LABEL_NAME
    if config.metrics_port:
        memo["metrics"] = metrics.serve(config.metrics_port)
    memo["kube"] = await connect()
    memo["known"] = set()
    memo["nudged"] = set()
    memo["resync"] = asyncio.create_task(_resync_forever(memo, config.reconcile_interval_s))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync, close the API client and stop serving metrics."""
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    kube = memo.get("kube")
    if isinstance(kube, Kube):
        await kube.close()
    server = memo.get("metrics")
    if server is not None:
        server.shutdown()


async def _reconcile(namespace: str, name: str, memo: kopf.Memo) -> None:
    kube = memo["kube"]
    assert isinstance(kube, Kube)
    await reconcile(kube, {"metadata": {"namespace": namespace, "name": name}}, get_settings())


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def on_change(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A ModelService appeared, changed, or was found at startup: reconcile it."""
    assert namespace, "ModelService is namespaced"
    try:
        await _reconcile(namespace, name, memo)
    except ApiError as exc:
        raise kopf.TemporaryError(f"API error, retrying: {exc}", delay=5) from exc


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Remember which ModelServices this operator serves, for the periodic resync."""
    assert namespace, "ModelService is namespaced"
    known: set[Key] = memo["known"]
    if event.get("type") == "DELETED":
        known.discard((namespace, name))
    else:
        known.add((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_NAME: kopf.PRESENT})
@kopf.on.event("apps", "v1", "deployments", labels={LABEL_NAME: kopf.PRESENT})
@kopf.on.event("v1", "pods", labels={LABEL_NAME: kopf.PRESENT})
async def on_child_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A child moved: reconcile its ModelService now instead of at the next tick."""
    owner = labels.get(LABEL_NAME)
    known: set[Key] = memo["known"]
    if not namespace or not owner or (namespace, owner) not in known:
        return
    nudged: set[Key] = memo["nudged"]
    key = (namespace, owner)
    if key in nudged:
        return
    nudged.add(key)
    try:
        await asyncio.sleep(CHILD_EVENT_DEBOUNCE_S)
    finally:
        nudged.discard(key)
    try:
        await _reconcile(namespace, owner, memo)
    except ApiError as exc:
        log.warning("reconcile of %s/%s after a child event failed: %s", namespace, owner, exc)


async def _resync_forever(memo: kopf.Memo, interval_s: float) -> None:
    """Reconcile every known ModelService each ``interval_s``: level, not edges."""
    known: set[Key] = memo["known"]
    while True:
        await asyncio.sleep(interval_s)
        for namespace, name in sorted(known):
            try:
                await _reconcile(namespace, name, memo)
            except ApiError as exc:
                log.warning("resync of %s/%s failed: %s", namespace, name, exc)
            except Exception:
                # One broken object must not stop the resync of all the others.
                log.exception("resync of %s/%s crashed", namespace, name)
