"""Where the reconcile reads ModelServices and their children: watch-fed caches, not the API.

The operator's kopf indexes (one per kind, see :mod:`handlers`) hold every object that carries
the ``modelservice.dev/name`` label, keyed by ``(namespace, ModelService name)``. A reconcile
reads them instead of listing and getting through the API.

A cache lags the API by one watch event. So that a reconcile right after a write does not
act on the state before it, every write the operator makes is remembered as an overlay
(the object's resourceVersion before, the object after) until the watch catches up.

:class:`ApiSource` reads the same through the API (unit tests with an in-memory API, tools).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .names import LABEL_NAME

__all__ = [
    "CHILD_KINDS",
    "MODELSERVICE_INDEX",
    "SPECLESS_KINDS",
    "ApiSource",
    "ChildSource",
    "IndexSource",
    "Overlay",
    "index_id",
    "snapshot",
]

# Every kind a ModelService owns or watches, and its kopf resource selector (core kinds: two
# parts, version and plural; the rest: group, version, plural).
CHILD_KINDS: dict[str, tuple[str, ...]] = {
    "Job": ("batch", "v1", "jobs"),
    "Pod": ("v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
}
MODELSERVICE_INDEX = "modelservices"

Key = tuple[str, str]
ObjKey = tuple[str, str, str]


def index_id(kind: str) -> str:
    """The kopf index id holding the children of ``kind``."""
    return f"children-{kind.lower()}"


# Kinds whose spec no decision reads (a pod is judged by its labels, owners and status): the
# cache keeps them without it, the bulk of the operator's memory at a thousand ModelServices.
SPECLESS_KINDS = ("Pod",)


def snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of an object for a cache: without managedFields (most of its bytes), and
    without the spec of a :data:`SPECLESS_KINDS` object."""
    out: dict[str, Any] = {}
    keys: tuple[str, ...] = ("apiVersion", "kind", "status")
    if body.get("kind") not in SPECLESS_KINDS:
        keys += ("spec",)
    for key in keys:
        if key in body:
            out[key] = body[key]
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


class ChildSource(Protocol):
    """What observe reads: a ModelService and the objects labelled with its name."""

    async def model_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ModelService, or None when it is gone."""
        ...

    async def children(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every ``kind`` object in ``namespace`` labelled with the ModelService ``name``."""
        ...

    def written(self, kind: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        """Record a write this operator made (``after`` is the API's answer)."""
        ...

    def deleted(self, kind: str, before: dict[str, Any]) -> None:
        """Record a delete this operator made."""
        ...


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


def _obj_key(kind: str, obj: Mapping[str, Any]) -> ObjKey:
    meta = obj.get("metadata") or {}
    return (kind, str(meta.get("namespace")), str(meta.get("name")))


@dataclass
class Overlay:
    """The operator's own writes that the watch has not delivered yet.

    An entry is ``(resourceVersion the cache shows before the write, object after it or
    None when deleted)``. It applies while the cache still shows that resourceVersion and is
    dropped as soon as the cache shows anything else (the write itself, or something newer).
    """

    entries: dict[ObjKey, tuple[str | None, dict[str, Any] | None]] = field(default_factory=dict)
    # The ModelService each entry belongs to (its own name, or its children's label).
    owners: dict[ObjKey, str] = field(default_factory=dict)
    # The entries of each (kind, namespace, ModelService): a reconcile reads only its own
    # instead of scanning every pending write of every ModelService (quadratic at scale).
    by_owner: dict[tuple[str, str, str], set[ObjKey]] = field(default_factory=dict)
    # The resourceVersion each object had after the operator's last write to it, and its
    # ModelService, kept past the entry: a watch event with it is the echo of that write, which
    # the reconcile that made it already knew (no reason to reconcile again).
    last_written: dict[ObjKey, tuple[str, str]] = field(default_factory=dict)

    def remember(
        self, key: ObjKey, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        """Remember one write."""
        self._drop(key)
        self.entries[key] = (_rv(before), snapshot(after) if after is not None else None)
        labels = ((after or before or {}).get("metadata") or {}).get("labels") or {}
        owner = self.owners[key] = str(labels.get(LABEL_NAME) or key[2])
        self.by_owner.setdefault((key[0], key[1], owner), set()).add(key)
        rv = _rv(after)
        if rv is not None:
            self.last_written[key] = (rv, self.owners[key])
        else:
            self.last_written.pop(key, None)

    def echo(self, key: ObjKey, resource_version: str | None) -> bool:
        """Whether this state of the object is the one the operator's last write left."""
        written = self.last_written.get(key)
        return (
            resource_version is not None
            and written is not None
            and (written[0] == resource_version)
        )

    def view(self, key: ObjKey, cached: dict[str, Any] | None) -> dict[str, Any] | None:
        """The object as this operator last left it, or the cache's when that is newer."""
        entry = self.entries.get(key)
        if entry is None:
            return cached
        before, after = entry
        if _rv(cached) == before and _rv(after) != before:
            return after
        self._drop(key)
        return cached

    def _drop(self, key: ObjKey) -> None:
        self.entries.pop(key, None)
        owner = self.owners.pop(key, None)
        if owner is not None:
            group = (key[0], key[1], owner)
            keys = self.by_owner.get(group)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_owner[group]

    def merge(
        self, kind: str, cached: Iterable[dict[str, Any]], namespace: str, name: str
    ) -> list[dict[str, Any]]:
        """Cached objects of one ModelService with this operator's pending writes laid over."""
        out: list[dict[str, Any]] = []
        seen: set[ObjKey] = set()
        for obj in cached:
            key = _obj_key(kind, obj)
            seen.add(key)
            view = self.view(key, obj)
            if view is not None:
                out.append(view)
        for key in list(self.by_owner.get((kind, namespace, name), ())):
            if key in seen:
                continue
            view = self.view(key, None)
            labels = ((view or {}).get("metadata") or {}).get("labels") or {}
            if view is not None and labels.get(LABEL_NAME) == name:
                out.append(view)
        return out

    def forget(self, namespace: str, name: str) -> None:
        """Drop every entry of one ModelService and its children."""
        for key in [k for k, v in self.last_written.items() if k[1] == namespace]:
            if self.last_written[key][1] == name:
                del self.last_written[key]
        for key in [k for k in self.entries if k[1] == namespace]:
            if self.owners.get(key) == name:
                self._drop(key)


class IndexSource:
    """Reads from the operator's kopf indexes (``indices`` as kopf passes them)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        self.indices = indices
        self.overlay = Overlay()

    def _stored(self, index: str, key: Key) -> list[dict[str, Any]]:
        store = self.indices[index].get(key)
        return [dict(v) for v in store] if store is not None else []

    async def model_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._stored(MODELSERVICE_INDEX, (namespace, name))
        cached = found[0] if found else None
        return self.overlay.view(("ModelService", namespace, name), cached)

    async def children(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.overlay.merge(
            kind, self._stored(index_id(kind), (namespace, name)), namespace, name
        )

    def model_services(self) -> list[Key]:
        """Every ModelService the cache holds, as (namespace, name)."""
        return sorted(self.indices[MODELSERVICE_INDEX])

    def written(self, kind: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        self.overlay.remember(_obj_key(kind, after), before, after)

    def deleted(self, kind: str, before: dict[str, Any]) -> None:
        self.overlay.remember(_obj_key(kind, before), before, None)


class _Lister(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_objects(
        self, kind: str, namespace: str, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...


class ApiSource:
    """Reads straight from the API: for unit tests and tools, not for the running operator."""

    def __init__(self, kube: _Lister) -> None:
        self.kube = kube

    async def model_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get("ModelService", namespace, name)

    async def children(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        return await self.kube.list_objects(kind, namespace, {LABEL_NAME: name})

    def written(self, kind: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        """Nothing to remember: the next read asks the API."""

    def deleted(self, kind: str, before: dict[str, Any]) -> None:
        """Nothing to remember: the next read asks the API."""
