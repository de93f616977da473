"""An in-memory stand-in for :class:`modelservice_operator.kube.Kube` (unit tests only)."""

from __future__ import annotations

import copy
import itertools
from datetime import datetime
from typing import Any

from modelservice_operator.kube import ApiError


class FakeKube:
    """Stores objects by (kind, namespace, name); records writes; no controllers run."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes: list[tuple[str, str, str]] = []
        self.logs: dict[str, str] = {}
        self.applies: list[tuple[str, str, str, bool]] = []
        # APIs discovery reports as served, as (group/version, plural); kinds RBAC refuses.
        self.served: set[tuple[str, str]] = set()
        self.forbidden: set[str] = set()
        self._uid = itertools.count(1)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if a controller or user wrote it."""
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-11-28T12:00:00Z")
        if obj["kind"] == "Deployment":
            obj["spec"].setdefault("replicas", 1)  # the API's default
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return obj

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of ``kind``."""
        return [o for (k, _, _), o in self.objects.items() if k == kind]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def serves(self, api_version: str, plural: str) -> bool:
        return (api_version, plural) in self.served

    async def list_events(self, namespace: str, reason: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == "Event"
            and ns == namespace
            and o.get("reason") == reason
            and (o.get("involvedObject") or {}).get("kind") == "Pod"
        ]

    async def list_objects(
        self, kind: str, namespace: str, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        if kind in self.forbidden:
            raise ApiError(403, f"{kind} is forbidden")
        out = []
        for (k, ns, _), obj in self.objects.items():
            have = obj["metadata"].get("labels") or {}
            if (
                k == kind
                and ns == namespace
                and all(have.get(a) == b for a, b in (labels or {}).items())
            ):
                out.append(copy.deepcopy(obj))
        return out

    async def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            return copy.deepcopy(self.objects[key]), False
        self.writes.append(("create", manifest["kind"], meta["name"]))
        return copy.deepcopy(self.put(copy.deepcopy(manifest))), True

    async def create_new(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST: 409 when the name is taken."""
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            raise ApiError(409, f"{manifest['kind']} {meta['name']} already exists")
        self.writes.append(("create", manifest["kind"], meta["name"]))
        return copy.deepcopy(self.put(copy.deepcopy(manifest)))

    async def apply(
        self, manifest: dict[str, Any], *, force: bool, manager: str = "modelservice-operator"
    ) -> dict[str, Any]:
        """Server-side apply, simplified: create, or merge the applied fields in."""
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        self.writes.append(("apply", manifest["kind"], meta["name"]))
        self.applies.append((manifest["kind"], meta["name"], manager, force))
        if key not in self.objects:
            return copy.deepcopy(self.put(copy.deepcopy(manifest)))
        obj = self.objects[key]
        spec_before = copy.deepcopy(obj.get("spec"))
        _merge(obj, {k: v for k, v in manifest.items() if k in ("metadata", "spec")})
        for field in ("spec",):  # applied lists and nested objects replace ours wholesale
            for name, value in (manifest.get(field) or {}).items():
                obj[field][name] = copy.deepcopy(value)
        if obj.get("spec") != spec_before:
            obj["metadata"]["generation"] += 1
        return copy.deepcopy(obj)

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.objects[(kind, namespace, name)]
        _merge(obj, patch)
        self.writes.append(("merge", kind, name))
        return copy.deepcopy(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind, name))
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.objects.get(("ModelService", namespace, name))
        if obj is None:
            raise ApiError(404, "gone")
        obj.setdefault("status", {})
        _merge(obj, {"status": status})
        self.writes.append(("status", "ModelService", name))
        return copy.deepcopy(obj)

    async def pod_log(self, namespace: str, name: str, tail: int) -> str | None:
        return self.logs.get(name)

    async def event(
        self,
        owner: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        self.events.append((type_, reason, message))


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
