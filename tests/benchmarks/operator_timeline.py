"""Where the seconds of one apply -> Ready go: milestones of each ModelService, from watches.

The benchmark watches its namespace's ModelServices, Jobs, pods and Deployments (as a client
would, apart from the operator) and notes, per ModelService, when each milestone was first
seen: its training Job created, the training pod running and done, the Job complete, the
predictor Deployment created, its pod ready, the Deployment available, and the ModelService
Ready. The time between two milestones belongs either to the operator (it acts on what it
saw) or to the cluster (controllers, scheduler, kwok's simulated pods, the simulated
training): :data:`SEGMENTS` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

from modelservice_operator.kube import KINDS, Kube
from modelservice_operator.names import LABEL_COMPONENT, LABEL_NAME

__all__ = ["SEGMENTS", "Timeline", "milestones", "segments_summary"]

WATCHED = ("ModelService", "Job", "Pod", "Deployment")

# (from, to, who spends the time, what happens in between). A segment is measured when both
# milestones were seen; `uri` ModelServices have no training milestones.
SEGMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("applied", "job", "operator", "ModelService created -> its training Job created"),
    ("job", "train_running", "cluster", "Job -> pod scheduled and running (kwok)"),
    ("train_running", "train_done", "cluster", "simulated training (1 s) and kwok"),
    ("train_done", "job_complete", "cluster", "pod done -> Job Complete (Job controller)"),
    ("job_complete", "deployment", "operator", "Job complete -> predictor Deployment created"),
    ("applied", "deployment", "operator", "ModelService created -> Deployment (model URI)"),
    ("deployment", "predictor_ready", "cluster", "Deployment -> ReplicaSet -> pod ready (kwok)"),
    ("predictor_ready", "available", "cluster", "pod ready -> Deployment available"),
    ("available", "ready", "operator", "Deployment available -> status Ready"),
)


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {
        str(c.get("type")): str(c.get("status"))
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def milestones(kind: str, obj: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The ModelService an object belongs to, and the milestones its state shows (pure)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = obj.get("status") or {}
    if kind == "ModelService":
        return meta.get("name"), (["ready"] if status.get("phase") == "Ready" else [])
    owner = labels.get(LABEL_NAME)
    if kind == "Job":
        done = _conditions(obj).get("Complete") == "True"
        return owner, ["job", *(["job_complete"] if done else [])]
    if kind == "Deployment":
        spec_replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0) >= max(1, spec_replicas)
        return owner, ["deployment", *(["available"] if available else [])]
    if kind == "Pod":
        phase = status.get("phase")
        if "job-name" in labels:
            found = {"Running": ["train_running"], "Succeeded": ["train_running", "train_done"]}
            return owner, found.get(str(phase), [])
        if labels.get(LABEL_COMPONENT) == "predictor" and _conditions(obj).get("Ready") == "True":
            return owner, ["predictor_ready"]
    return owner, []


class Timeline:
    """Watches one namespace and keeps the first time each milestone was seen."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.seen: dict[str, dict[str, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._watching: set[str] = set()

    def applied(self, name: str, at: float) -> None:
        """The client's time of the create call of ``name``."""
        self.seen.setdefault(name, {})["applied"] = at

    async def start(self, limit_s: float = 30) -> None:
        """Start the watches and wait until every one of them is open."""
        self._tasks = [asyncio.create_task(self._watch(kind)) for kind in WATCHED]
        deadline = time.monotonic() + limit_s
        while len(self._watching) < len(WATCHED):
            if time.monotonic() > deadline:
                raise TimeoutError(f"watches not open: {set(WATCHED) - self._watching}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Close the watches."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, kind: str) -> None:
        query = [("watch", "true"), ("timeoutSeconds", "3600")]
        if kind != "ModelService":
            query.append(("labelSelector", LABEL_NAME))
        response = await self.kube.api.call_api(
            KINDS[kind].path(self.namespace),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=3600,
        )
        self._watching.add(kind)
        try:
            async for line in response.content:
                at = time.monotonic()
                event = json.loads(line)
                name, found = milestones(kind, event.get("object") or {})
                if name is None:
                    continue
                marks = self.seen.setdefault(name, {})
                for milestone in found:
                    marks.setdefault(milestone, at)
        finally:
            response.release()


def segments_summary(seen: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per segment: who spends it, how many ModelServices showed it, its p50 and max (s)."""
    out = []
    for start, end, who, what in SEGMENTS:
        spans = [m[end] - m[start] for m in seen.values() if start in m and end in m]
        if start == "applied" and end == "deployment":
            spans = [
                m[end] - m[start]
                for m in seen.values()
                if start in m and end in m and "job" not in m
            ]
        if not spans:
            continue
        out.append(
            {
                "from": start,
                "to": end,
                "who": who,
                "what": what,
                "count": len(spans),
                "p50_s": statistics.median(spans),
                "max_s": max(spans),
            }
        )
    return out
