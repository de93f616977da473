"""Pure diagnosis of predictor pods waiting for nodes a node autoscaler is adding.

The scheduler marks a pod ``Unschedulable`` when no node fits, also while Karpenter is
already launching one for it. Karpenter says which on the pod's events: ``Nominated`` ("Pod
should schedule on: nodeclaim/NAME") while it launches, ``FailedScheduling`` ("Failed to
schedule pod, ...", Karpenter's own words, unlike the scheduler's "0/5 nodes are available")
when no NodePool can take the pod. Waiting for nominated NodeClaims is progress
(``ScalingUp``), never a failure; otherwise the pod stays ``Unschedulable`` with both reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .diagnosis import Stuck

__all__ = ["KARPENTER_FAILED_PREFIX", "ScaleUpWait", "diagnose_scale_up"]

KARPENTER_FAILED_PREFIX = "Failed to schedule pod, "
_NODECLAIM = re.compile(r"nodeclaim/([a-z0-9.-]+)")


@dataclass(frozen=True)
class ScaleUpWait:
    """Pending pods and what the node autoscaler does about them."""

    pending: tuple[str, ...]
    nodeclaims: tuple[str, ...]
    karpenter_failure: str | None


def _unschedulable(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return True
    return False


def _latest(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def when(event: dict[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or "")

    return sorted(events, key=when)


def scale_up_wait(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> ScaleUpWait:
    """Which pods wait for a node, the NodeClaims nominated for them, Karpenter's refusal."""
    pending = sorted(p["metadata"]["name"] for p in pods if _unschedulable(p))
    waiting = set(pending)
    claims: dict[str, str] = {}  # pod -> its latest nominated NodeClaim
    failure: str | None = None
    for event in _latest(events):
        obj = event.get("involvedObject") or {}
        if obj.get("kind") != "Pod" or obj.get("name") not in waiting:
            continue
        message = str(event.get("message") or "")
        if event.get("reason") == "Nominated":
            found = _NODECLAIM.search(message)
            if found:
                claims[obj["name"]] = found.group(1)
        elif event.get("reason") == "FailedScheduling" and message.startswith(
            KARPENTER_FAILED_PREFIX
        ):
            failure = message.removeprefix(KARPENTER_FAILED_PREFIX)
            claims.pop(obj["name"], None)  # a later refusal outdates a nomination
    return ScaleUpWait(tuple(pending), tuple(sorted(set(claims.values()))), failure)


def diagnose_scale_up(
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]],
    stuck: Stuck,
    gpus: bool,
    gpu_product: str | None = None,
) -> Stuck:
    """Refine an ``Unschedulable`` verdict with what Karpenter does; other verdicts stay."""
    if stuck.reason != "Unschedulable":
        return stuck
    wait = scale_up_wait(pods, events)
    if wait.nodeclaims:
        count, pending = len(wait.nodeclaims), len(wait.pending)
        what = "GPU node" if gpus else "node"
        product = f" {gpu_product}" if gpu_product else ""
        return Stuck(
            "ScalingUp",
            f"waiting for {count} {what}{'s' if count > 1 else ''}{product} "
            f"(NodeClaims {', '.join(wait.nodeclaims)}) for {pending} pending "
            f"pod{'s' if pending > 1 else ''}",
        )
    if wait.karpenter_failure:
        return Stuck("Unschedulable", f"{stuck.message}; Karpenter: {wait.karpenter_failure}")
    return stuck
