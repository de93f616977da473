"""Thin kopf handlers: watch-fed caches, and every way a ModelService needs attention.

Reads come from kopf indexes, fed by watches the API server filters by label
(``modelservice.dev/name``): one index of ModelServices and one per child kind, keyed by
``(namespace, ModelService name)``. kopf runs no other handler until every index holds its
initial listing, so a reconcile never mistakes a cache still filling for a missing child.

A reconcile runs on:

- an event of the ModelService (listed at startup, created, changed; not the echo of the
  operator's own status write); created and changed ones go before every other due key;
- an event of one of its children (a Job finished, a Deployment's availability moved, a pod
  got stuck), so that status follows the cluster at once rather than at the next tick;
- a periodic resync that walks the cache, spread over the interval rather than in a burst.

None of them reconciles in place: each adds the ModelService's key to one work queue
(workqueue.py), which runs at most ``max_concurrent_reconciles`` at once, never one object
twice at a time, and backs a failing object off alone (exponential with jitter, at least the
API's Retry-After) while the others carry on. With leader election on, only the replica that
holds the Lease (leader.py) starts its watches.

The resync is a plain task instead of a ``kopf.timer``: kopf puts a finalizer on every object
a timer serves, and a finalizer would leave ModelServices stuck in Terminating whenever the
operator is not running. Children go by garbage collection (ownerReferences), so the operator
needs no finalizer; a deleted ModelService is forgotten (lock, phase gauge, cache overlay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from . import leader, metrics, redaction
from .backoff import BackoffPolicy
from .cache import CHILD_KINDS, MODELSERVICE_INDEX, IndexSource, index_id, snapshot
from .events import DeferredEvents, EventSink
from .kube import ApiError, Kube, connect
from .names import GROUP, LABEL_NAME, PLURAL, VERSION
from .reconciler import forget, reconcile
from .settings import OperatorSettings, get_settings
from .storage import NoDiffBase, assert_no_change_handlers
from .workqueue import WorkQueue

__all__ = ["close", "configure", "on_child_event", "on_modelservice_event"]

log = logging.getLogger(__name__)
STORAGE_PREFIX = "kopf.modelservice.dev"
# Children whose changes should reach the owner's status at once (the others' drift is
# repaired by the resync).
NUDGING_KINDS = ("Job", "Deployment", "Pod")
# Bursts of child events (a rollout touches many pods) coalesce into one reconcile. Short:
# it is on the path of every status change (a Job done, a Deployment available); at scale,
# events that arrive while a key waits for a worker coalesce anyway.
CHILD_EVENT_DEBOUNCE_S = 0.1

Key = tuple[str, str]


async def _index_child(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, dict[str, Any]] | None:
    """Index a child under its ModelService's (namespace, name).

    Coroutines, like every handler here: kopf runs plain functions in a thread pool, and
    the hop to a thread and back costs more than indexing one object.
    """
    owner = labels.get(LABEL_NAME)
    if not namespace or not owner:
        return None
    return {(namespace, owner): snapshot(body)}


for _kind, _selector in CHILD_KINDS.items():
    kopf.index(*_selector, id=index_id(_kind), labels={LABEL_NAME: kopf.PRESENT})(_index_child)


@kopf.index(GROUP, VERSION, PLURAL, id=MODELSERVICE_INDEX)
async def _index_modelservice(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[Key, dict[str, Any]] | None:
    """Index every ModelService by (namespace, name)."""
    return {(namespace, name): snapshot(body)} if namespace else None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """No diff base for kopf to keep (storage.py), quiet events, no peering.

    kopf hands every index to every handler as a keyword named by its id; the index objects
    live as long as the operator, so the reconciler keeps them. With leader election on, this
    waits until this replica holds the Lease: kopf starts its watches only after the startup
    handlers, so a standby makes no request but the Lease's.
    """
    ids = [MODELSERVICE_INDEX, *(index_id(kind) for kind in CHILD_KINDS)]
    indices: dict[str, Any] = {i: kwargs[i] for i in ids}
    config = get_settings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    # No change-detecting handlers, so no diff base: kopf copies no event body for one.
    assert_no_change_handlers(kopf.get_default_registry())
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    quiet_handler_successes()
    redaction.install()
    # One active replica is the Lease's business (leader.py), not kopf peering's.
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # Watch only this operator's children, filtered by the API server, not every pod.
    for selector in CHILD_KINDS.values():
        settings.watching.label_selectors[selector] = LABEL_NAME  # type: ignore[index]
    if config.metrics_port:  # a standby is scraped too: its target is up, its counts zero
        memo["metrics"] = metrics.serve(config.metrics_port)
    memo["kube"] = kube = await connect(metrics.observe_api_call)
    if config.leader_election:
        memo["lease"] = await leader.lead(kube, config)
    memo["source"] = IndexSource(indices)
    memo["events"] = events = EventSink(kube)
    events.start()
    memo["writer"] = DeferredEvents(kube, events)
    memo["queue"] = _start_queue(memo, config)
    memo["indexed"] = asyncio.Event()  # set by the first resource handler (_set_indexed)
    memo["resync"] = asyncio.create_task(_resync_forever(memo, config.reconcile_interval_s))


def quiet_handler_successes() -> None:
    """Keep kopf's per-object log to warnings and errors unless debugging (``--verbose``).

    kopf logs "Handler 'on_child_event' succeeded." at INFO for every watch event it hands
    to a handler: 27,000 lines while 1,000 ModelServices became Ready, and about 4% of the
    operator's CPU in formatting them (tests/benchmarks/operator.md). This operator's own
    INFO lines (what it applied, deleted, why) are unaffected.
    """
    objects = logging.getLogger(redaction.KOPF_OBJECTS_LOGGER)
    if not objects.isEnabledFor(logging.DEBUG):
        objects.setLevel(logging.WARNING)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync and the queue, post the Events left, hand the Lease over, close the
    client and metrics."""
    task = memo.get("resync")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    queue = memo.get("queue")
    if isinstance(queue, WorkQueue):
        await queue.stop()
    events = memo.get("events")
    if isinstance(events, EventSink):
        await events.stop()
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
    writer = memo["writer"]  # the client, with Events posted in the background
    source = memo["source"]
    assert isinstance(writer, DeferredEvents)
    assert isinstance(source, IndexSource)
    body = {"metadata": {"namespace": namespace, "name": name}}
    await reconcile(writer, body, get_settings(), source)


def _start_queue(memo: kopf.Memo, config: OperatorSettings) -> WorkQueue[Key]:
    async def process(key: Key) -> None:
        await _reconcile(key[0], key[1], memo)

    queue: WorkQueue[Key] = WorkQueue(
        process,
        workers=config.max_concurrent_reconciles,
        policy=BackoffPolicy(base_s=config.backoff_base_s, max_s=config.backoff_max_s),
        retry_after=lambda exc: exc.retry_after if isinstance(exc, ApiError) else None,
        expected=(ApiError,),
        waited=metrics.QUEUE_WAIT_SECONDS.observe,
    )
    queue.start()
    return queue


def _queue(memo: kopf.Memo) -> WorkQueue[Key]:
    queue = memo["queue"]
    assert isinstance(queue, WorkQueue)
    return queue


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_modelservice_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A ModelService was listed, created, changed or deleted: reconcile it (queued), or
    forget it (its lock, its phase gauge, its queue entry and writes).

    Plain events rather than kopf's create/update/resume handlers: those keep their diff
    base in an annotation, one PATCH of every new ModelService before its first reconcile,
    and the reconcile needs no diff (it is level-based). The echo of the operator's own
    status write is skipped: the reconcile that wrote it already knew it.
    """
    _set_indexed(memo)
    if not namespace:
        return
    source = memo.get("source")
    if event.get("type") == "DELETED":
        forget(namespace, name)
        _queue(memo).forget((namespace, name))
        if isinstance(source, IndexSource):
            source.overlay.forget(namespace, name)
        return
    if isinstance(source, IndexSource) and _echo(source, event):
        return
    # What a user just created or changed goes first; the listing at start-up (no type)
    # waits with the resync and the children's news.
    _queue(memo).add((namespace, name), urgent=event.get("type") in ("ADDED", "MODIFIED"))


def _echo(source: IndexSource, event: kopf.RawEvent | None) -> bool:
    """Whether ``event`` only shows the state the operator's own last write left."""
    if event is None:
        return False
    obj: dict[str, Any] = dict(event.get("object") or {})
    meta = obj.get("metadata") or {}
    key = (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
    return source.overlay.echo(key, meta.get("resourceVersion"))


async def on_child_event(
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    event: kopf.RawEvent | None = None,
    **_: Any,
) -> None:
    """A child moved: reconcile its ModelService soon instead of at the next tick (not for
    the echo of the operator's own write of it)."""
    owner = labels.get(LABEL_NAME)
    source = memo["source"]
    assert isinstance(source, IndexSource)
    if not namespace or not owner or (namespace, owner) not in source.indices[MODELSERVICE_INDEX]:
        return
    if _echo(source, event):
        return
    # The queue keeps the earliest due time: a burst of events is one reconcile.
    _queue(memo).add((namespace, owner), delay=CHILD_EVENT_DEBOUNCE_S)


for _kind in NUDGING_KINDS:
    kopf.on.event(*CHILD_KINDS[_kind], labels={LABEL_NAME: kopf.PRESENT})(on_child_event)


async def _resync_forever(memo: kopf.Memo, interval_s: float) -> None:
    """Queue every cached ModelService once per ``interval_s``, spread evenly over it.

    A key that is backing off waits for its own time; failures are the queue's business.
    """
    source = memo["source"]
    indexed = memo["indexed"]
    assert isinstance(source, IndexSource)
    assert isinstance(indexed, asyncio.Event)
    await indexed.wait()
    queue = _queue(memo)
    while True:
        await asyncio.sleep(interval_s)
        keys = source.model_services()
        for index, key in enumerate(keys):
            queue.add(key, delay=interval_s * index / len(keys))


def _set_indexed(memo: kopf.Memo) -> None:
    # kopf calls no resource handler before every index holds its initial listing, and the
    # resync must not take a cache still filling for the truth.
    indexed = memo["indexed"]
    assert isinstance(indexed, asyncio.Event)
    indexed.set()
