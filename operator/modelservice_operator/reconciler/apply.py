"""Apply: carry out a :class:`Plan` (server-side apply, deletes, status, Events).

Every write is remembered by the cache (see :class:`cache.Overlay`), so the next reconcile
does not repeat it before the watch has caught up.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from modelservice_serving.redact import redact_json

from .. import metrics
from ..cache import ChildSource
from ..diagnosis import Stuck
from ..kube import ApiError
from ..models import Condition, ModelServiceStatus
from ..names import LABEL_VERSION
from .children import Write, conflict
from .decide import Plan
from .observe import Observed

__all__ = ["Writer", "apply_children", "merge_patch_diff", "write_status"]

log = logging.getLogger(__name__)
# Ready reasons that are progress, not trouble (posted as Normal events).
NORMAL_REASONS = {
    "Serving",
    "Training",
    "RollingOut",
    "Creating",
    "JobPending",
    "Pending",
    "ScalingUp",
}


class Writer(Protocol):
    """The writes a reconcile makes (:class:`kube.Kube` is one)."""

    async def apply(
        self, manifest: dict[str, Any], *, force: bool, manager: str = ...
    ) -> dict[str, Any]: ...

    async def create_new(self, manifest: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


def merge_patch_diff(old: Any, new: Any) -> Any:
    """An RFC 7386 merge patch turning ``old`` into ``new`` (dicts recurse, rest replace)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch_diff(old[key], value)
    return patch


def _refused(exc: ApiError, write: Write) -> Stuck:
    """A permanent API refusal of a child as a status problem; re-raise the rest."""
    if exc.status == 409 and write.creates:
        # Server-side apply without force met fields another manager set: someone else's.
        return conflict(write.kind, write.name)
    if exc.status in (400, 403, 422):
        reason = "Forbidden" if exc.status == 403 else "ChildRejected"
        return Stuck(reason, f"the API refused a child object: {exc}")
    raise exc


async def apply_children(
    kube: Writer, source: ChildSource, obs: Observed, plan: Plan
) -> Stuck | None:
    """Apply the plan's children, deletes and annotations; the first refusal, if any."""
    namespace = obs.owner.namespace
    for write in plan.writes:
        before = obs.named(write.kind, write.name)
        try:
            if write.post:
                after = await kube.create_new(write.manifest)
            else:
                after = await kube.apply(write.manifest, force=write.force, manager=write.manager)
        except ApiError as exc:
            return _refused(exc, write)
        source.written(write.kind, before, after)
        log.info("applied %s %s (%s)", write.kind, write.name, "new" if write.creates else "drift")
        if write.kind == "Job" and write.creates:
            metrics.TRAINING_JOBS.inc()
            version = (write.manifest["metadata"].get("labels") or {}).get(LABEL_VERSION)
            message = f"Job {write.name} trains version {version}"
            await kube.event(obs.body, "Normal", "TrainingStarted", message)
    for delete in plan.deletes:
        before = obs.named(delete.kind, delete.name)
        try:
            await kube.delete(delete.kind, namespace, delete.name)
        except ApiError as exc:
            # Best effort: without the delete verb an old Job just runs to its end.
            log.warning("cannot delete %s %s: %s", delete.kind, delete.name, exc)
            continue
        if before is not None:
            source.deleted(delete.kind, before)
        log.info("%s", delete.message)
        if delete.reason:
            await kube.event(obs.body, "Normal", delete.reason, delete.message)
    for kind, name, added in plan.annotate:
        before = obs.named(kind, name)
        after = await kube.merge_patch(kind, namespace, name, {"metadata": {"annotations": added}})
        source.written(kind, before, after)
    return None


def _ready(conds: list[Condition]) -> Condition | None:
    return next((c for c in conds if c.type == "Ready"), None)


async def write_status(
    kube: Writer, source: ChildSource, obs: Observed, new: ModelServiceStatus
) -> bool:
    """Patch the status only when it changed; post an Event when Ready changed."""
    # Redacted before the comparison, as kube.patch_status writes it: no patch every pass.
    patch = merge_patch_diff(obs.raw_status, redact_json(new.wire()))
    if not patch:
        return False
    meta = obs.owner
    after = await kube.patch_status(meta.namespace, meta.name, patch)
    source.written("ModelService", obs.body, after)
    before, now = _ready(obs.status.conditions), _ready(new.conditions)
    if now is None:
        return True
    if before is not None and (before.status, before.reason, before.message) == (
        now.status,
        now.reason,
        now.message,
    ):
        return True
    if before is not None and (before.status, before.reason) == (now.status, now.reason):
        return True  # only the message moved (e.g. epoch progress): no event
    warning = now.status != "True" and now.reason not in NORMAL_REASONS
    await kube.event(obs.body, "Warning" if warning else "Normal", now.reason, now.message)
    return True
