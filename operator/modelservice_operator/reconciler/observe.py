"""Observe: the caches (and, while a Job trains, its pod's log) to one :class:`Observed` value.

This is the only step of a reconcile that reads; everything after it is a pure function of
the value it returns, and writes.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from ..autoscaling import KEDA_API, Keda
from ..builders.common import Owner
from ..cache import CHILD_KINDS, ChildSource
from ..diagnosis import diagnose_job
from ..kube import ApiError
from ..models import ModelServiceSpec, ModelServiceStatus
from ..names import LABEL_COMPONENT, LABEL_NAME, job_name, training_hash

__all__ = ["Observed", "PodLogs", "controlled_by", "observe"]


class PodLogs(Protocol):
    """The reads that no watch carries: a pod's log tail, API discovery, KEDA's objects, and
    the events of pending pods."""

    async def pod_log(self, namespace: str, name: str, tail: int) -> str | None: ...

    async def serves(self, api_version: str, plural: str) -> bool: ...

    async def list_objects(
        self, kind: str, namespace: str, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...

    async def list_events(self, namespace: str, reason: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Autoscalers:
    """What observe needs to know of the operator's KEDA setting."""

    keda: str = "auto"  # "auto" or "off" (MSO_OPERATOR_KEDA)
    check_interval_s: float = 30.0


# Per API client: (monotonic time of the check, whether scaledobjects.keda.sh is served).
_keda_seen: weakref.WeakKeyDictionary[Any, tuple[float, bool]] = weakref.WeakKeyDictionary()


async def keda_served(api: PodLogs, interval_s: float) -> bool:
    """API discovery for KEDA's ScaledObjects, reused for ``interval_s``."""
    now = time.monotonic()
    seen = _keda_seen.get(api)
    if seen is None or now - seen[0] >= interval_s:
        seen = (now, await api.serves(*KEDA_API))
        _keda_seen[api] = seen
    return seen[1]


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


@dataclass(frozen=True)
class Observed:
    """One ModelService and everything around it, as the caches show it now."""

    owner: Owner
    body: dict[str, Any]
    generation: int
    raw_status: dict[str, Any]
    status: ModelServiceStatus
    spec: ModelServiceSpec | None
    spec_error: str | None = None
    # Every object labelled with this ModelService's name, by kind, whoever controls it.
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The tail of the running training pod's log (live progress), when one runs.
    training_log: str | None = None
    # What the operator may do with KEDA now (its ScaledObjects are in ``children``).
    keda: Keda = Keda.ABSENT
    # Nominated and FailedScheduling events of pending predictor pods (a node autoscaler's).
    pod_events: list[dict[str, Any]] = field(default_factory=list)

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        """The ``kind`` object called ``name``, whoever controls it."""
        return next((o for o in self.children.get(kind, []) if o["metadata"]["name"] == name), None)

    def owned(self, kind: str) -> list[dict[str, Any]]:
        """The ``kind`` objects this ModelService controls (its UID, not just its name)."""
        return [o for o in self.children.get(kind, []) if controlled_by(o, self.owner.uid)]

    def pods(self, **labels: str) -> list[dict[str, Any]]:
        """Pods labelled with this ModelService's name and ``labels``."""
        return [
            p
            for p in self.children.get("Pod", [])
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def job_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The pods of ``job``: by its UID, not its name, which an older Job may have had."""
        uid = job["metadata"].get("uid")
        return [
            p
            for p in self.pods(**{"job-name": job["metadata"]["name"]})
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    def predictor_pods(self) -> list[dict[str, Any]]:
        """The predictor's pods."""
        return [
            p
            for p in self.children.get("Pod", [])
            if (p["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == "predictor"
        ]


def parse(body: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> Observed:
    """An :class:`Observed` from a ModelService body and its children (pure)."""
    meta = body["metadata"]
    raw_status = body.get("status") or {}
    try:
        status = ModelServiceStatus.model_validate(raw_status)
    except ValidationError:
        status = ModelServiceStatus()
    spec: ModelServiceSpec | None = None
    error: str | None = None
    try:
        spec = ModelServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        error = str(exc).replace("\n", " ")[:1000]
    return Observed(
        owner=Owner(meta["name"], meta["namespace"], meta["uid"]),
        body=body,
        generation=int(meta.get("generation") or 0),
        raw_status=raw_status,
        status=status,
        spec=spec,
        spec_error=error,
        children=children,
    )


def _unschedulable(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


async def _autoscaling(
    obs: Observed, api: PodLogs, autoscalers: Autoscalers
) -> tuple[Keda, list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """KEDA's state and this ModelService's ScaledObjects, and its pending pods' events."""
    owner = obs.owner
    keda, scaled = Keda.ABSENT, None
    if autoscalers.keda == "off":
        keda = Keda.DISABLED
    elif await keda_served(api, autoscalers.check_interval_s):
        try:
            scaled = await api.list_objects(
                "ScaledObject", owner.namespace, {LABEL_NAME: owner.name}
            )
            keda = Keda.SERVED
        except ApiError as exc:
            if exc.status != 403:
                raise
            keda = Keda.FORBIDDEN
    events: list[dict[str, Any]] = []
    if any(_unschedulable(p) for p in obs.predictor_pods()):
        for reason in ("Nominated", "FailedScheduling"):
            events += await api.list_events(owner.namespace, reason)
    return keda, scaled, events


async def observe(
    source: ChildSource,
    logs: PodLogs,
    namespace: str,
    name: str,
    log_tail_lines: int,
    autoscalers: Autoscalers | None = None,
) -> Observed | None:
    """Read one ModelService and its children; None when it is gone or being deleted."""
    body = await source.model_service(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    children = {kind: await source.children(kind, namespace, name) for kind in CHILD_KINDS}
    obs = parse(body, children)
    keda, scaled, events = await _autoscaling(obs, logs, autoscalers or Autoscalers())
    if scaled is not None:
        children["ScaledObject"] = scaled
    obs = replace(obs, keda=keda, pod_events=events)
    if obs.spec is None or obs.spec.training is None:
        return obs
    current = job_name(name, training_hash(obs.spec.training.identity()))
    job = next((j for j in obs.owned("Job") if j["metadata"]["name"] == current), None)
    if job is None:
        return obs
    outcome = diagnose_job(job, obs.job_pods(job))
    if outcome.state != "Running" or not outcome.pod_name:
        return obs
    text = await logs.pod_log(namespace, outcome.pod_name, log_tail_lines)
    return replace(obs, training_log=text)
