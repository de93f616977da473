"""Thin kopf handlers: every way a ModelService can need attention calls the one reconcile.

- create, update and resume (kopf's change handlers);
- an event of one of its children (a Job finished, a Deployment's availability moved, a pod
  got stuck), so that status follows the cluster at once rather than at the next tick;
- a periodic resync of every known ModelService, for drift nobody announces.

None of them reconciles in place: each adds the ModelService's key to one work queue
(workqueue.py), which runs at most ``max_concurrent_reconciles`` at once, never one object
twice at a time, and backs a failing object off alone (exponential with jitter, at least the
API's Retry-After) while the others carry on.

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

from . import leader, metrics
from .backoff import BackoffPolicy
from .kube import ApiError, Kube, connect
from .names import GROUP, LABEL_NAME, PLURAL, VERSION
from .reconciler import reconcile
from .settings import OperatorSettings, get_settings
from .workqueue import WorkQueue

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
    """Keep kopf's bookkeeping in annotations (status is ours), quiet events, no peering.

    With leader election on, this waits until this replica holds the Lease: kopf starts its
    watches only after the startup handlers, so a standby makes no request but the Lease's.
    """
    config = get_settings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # One active replica is the Lease's business (leader.py), not kopf peering's.
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # Watch only this operator's children, filtered by the API server, not every pod.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = LABEL_NAME
    if config.metrics_port:  # a standby is scraped too: its target is up, its counts zero
        memo["metrics"] = metrics.serve(config.metrics_port)
    memo["kube"] = kube = await connect(metrics.observe_api_call)
    if config.leader_election:
        memo["lease"] = await leader.lead(kube, config)
    memo["known"] = set()
    memo["queue"] = _start_queue(memo, config)
    memo["resync"] = asyncio.create_task(_resync_forever(memo, config.reconcile_interval_s))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync and the queue, hand the Lease over, close the client and metrics."""
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    queue = memo.get("queue")
    if isinstance(queue, WorkQueue):
        await queue.stop()
    lease = memo.get("lease")
    if isinstance(lease, leader.Leadership):
        await lease.release()
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


def _start_queue(memo: kopf.Memo, config: OperatorSettings) -> WorkQueue[Key]:
    async def process(key: Key) -> None:
        await _reconcile(key[0], key[1], memo)

    queue: WorkQueue[Key] = WorkQueue(
        process,
        workers=config.max_concurrent_reconciles,
        policy=BackoffPolicy(base_s=config.backoff_base_s, max_s=config.backoff_max_s),
        retry_after=lambda exc: exc.retry_after if isinstance(exc, ApiError) else None,
        expected=(ApiError,),
    )
    queue.start()
    return queue


def _queue(memo: kopf.Memo) -> WorkQueue[Key]:
    queue = memo["queue"]
    assert isinstance(queue, WorkQueue)
    return queue


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def on_change(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A ModelService appeared, changed, or was found at startup: reconcile it (queued)."""
    assert namespace, "ModelService is namespaced"
    _queue(memo).add((namespace, name))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Remember which ModelServices this operator serves, for the periodic resync."""
    assert namespace, "ModelService is namespaced"
    known: set[Key] = memo["known"]
    if event.get("type") == "DELETED":
        known.discard((namespace, name))
        _queue(memo).forget((namespace, name))
    else:
        known.add((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_NAME: kopf.PRESENT})
@kopf.on.event("apps", "v1", "deployments", labels={LABEL_NAME: kopf.PRESENT})
@kopf.on.event("v1", "pods", labels={LABEL_NAME: kopf.PRESENT})
async def on_child_event(
    namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A child moved: reconcile its ModelService soon instead of at the next tick."""
    owner = labels.get(LABEL_NAME)
    known: set[Key] = memo["known"]
    if not namespace or not owner or (namespace, owner) not in known:
        return
    # The queue keeps the earliest due time: a burst of events is one reconcile.
    _queue(memo).add((namespace, owner), delay=CHILD_EVENT_DEBOUNCE_S)


async def _resync_forever(memo: kopf.Memo, interval_s: float) -> None:
    """Reconcile every known ModelService each ``interval_s``: level, not edges.

    The keys are spread evenly over the interval rather than queued in one burst; a key
    that is backing off waits for its own time, and failures are the queue's business.
    """
    known: set[Key] = memo["known"]
    queue = _queue(memo)
    while True:
        await asyncio.sleep(interval_s)
        keys = sorted(known)
        for index, key in enumerate(keys):
            queue.add(key, delay=interval_s * index / len(keys))
