"""Pure diagnosis: from pods and a Job (plain API dicts) to what is going on or stuck."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from modelservice_serving import contract

__all__ = [
    "JobOutcome",
    "Progress",
    "Stuck",
    "diagnose_job",
    "diagnose_pods",
    "parse_progress",
    "parse_result",
    "store_holds",
]

# Container waiting reasons that mean the pod will not become ready by itself soon.
PROBLEM_WAITING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# Order of severity when several pods are stuck for different reasons.
_SEVERITY = ("OOMKilled", "CrashLoopBackOff", *PROBLEM_WAITING, "Unschedulable")


@dataclass(frozen=True)
class Stuck:
    """Why pods are not progressing: a machine-readable reason and a human message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Progress:
    """The last epoch line a training pod printed."""

    epoch: int | None
    epochs: int | None
    loss: float | None
    accuracy: float | None


@dataclass(frozen=True)
class JobOutcome:
    """Where a training Job stands, with its result when it finished."""

    state: Literal["Pending", "Running", "Succeeded", "Failed"]
    reason: str
    message: str
    result: dict[str, Any] | None = None
    stuck: Stuck | None = None
    pod_name: str | None = None


def _get(obj: dict[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur


# "output '/models/v3' already exists": the version a trainer found taken.
_VERSION_IN_MESSAGE = re.compile(r"/v(\d+)'? (?:already exists|appeared)")


def _pod_stuck(pod: dict[str, Any]) -> Stuck | None:
    name = _get(pod, "metadata", "name") or "?"
    statuses = (_get(pod, "status", "initContainerStatuses") or []) + (
        _get(pod, "status", "containerStatuses") or []
    )
    for cs in statuses:
        container = cs.get("name", "?")
        last = _get(cs, "lastState", "terminated", "reason")
        current = _get(cs, "state", "terminated", "reason")
        waiting = _get(cs, "state", "waiting") or {}
        if "OOMKilled" in (last, current):
            now = f"; now {waiting['reason']}" if waiting.get("reason") else ""
            return Stuck(
                "OOMKilled",
                f"container {container} of pod {name} was OOMKilled (out of memory){now}; "
                "raise its memory limit",
            )
        for state in ("state", "lastState"):
            # The server's own one-line verdict beats the kubelet's CrashLoopBackOff.
            verdict = contract.parse_server_failure(_get(cs, state, "terminated", "message"))
            if verdict is not None:
                return Stuck(verdict[0], f"container {container} of pod {name}: {verdict[1]}")
        reason = waiting.get("reason")
        if reason in PROBLEM_WAITING:
            detail = waiting.get("message") or reason
            if last:
                detail = f"{detail} (last termination: {last})"
            return Stuck(reason, f"container {container} of pod {name}: {detail}")
    for cond in _get(pod, "status", "conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return Stuck("Unschedulable", f"pod {name}: {cond.get('message') or 'unschedulable'}")
    return None


def diagnose_pods(pods: list[dict[str, Any]]) -> Stuck | None:
    """Return the most severe reason why any of ``pods`` is stuck, or None."""
    found: list[Stuck] = []
    for pod in pods:
        if _get(pod, "metadata", "deletionTimestamp"):
            continue
        if _get(pod, "status", "phase") in ("Succeeded",):
            continue
        stuck = _pod_stuck(pod)
        if stuck is not None:
            found.append(stuck)
    if not found:
        return None

    def rank(s: Stuck) -> int:
        return _SEVERITY.index(s.reason) if s.reason in _SEVERITY else len(_SEVERITY)

    return min(found, key=rank)


def parse_result(message: str | None) -> dict[str, Any] | None:
    """The training result in a termination message (the contract's), as a wire dict."""
    result = contract.parse_result(message)
    return result.wire(as_given=True) if result is not None else None


def parse_progress(log: str | None) -> Progress | None:
    """Return the last ``{"event": "epoch", ...}`` line of a training log, or None."""
    event = contract.parse_epoch(log)
    if event is None:
        return None
    return Progress(event.epoch, event.epochs, event.loss, event.accuracy)


def _termination(pod: dict[str, Any]) -> tuple[str | None, str | None]:
    """(reason, message) of the pod's main container termination, current or last."""
    for cs in _get(pod, "status", "containerStatuses") or []:
        for key in ("state", "lastState"):
            term = _get(cs, key, "terminated")
            if term:
                return term.get("reason"), term.get("message")
    return None, None


def _newest(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worker 0 (the one that reports) before the other workers of a multi-worker Job, and
    newest first among the pods of one worker (retries)."""

    def key(pod: dict[str, Any]) -> tuple[int, str]:
        index = str((_get(pod, "metadata", "labels") or {}).get(_INDEX_LABEL, "0"))
        created = _get(pod, "metadata", "creationTimestamp") or ""
        return -int(index) if index.isdigit() else 0, created

    return sorted(pods, key=key, reverse=True)


# The completion index of a pod of an Indexed (multi-worker) Job.
_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def _result_status(pod: dict[str, Any]) -> str | None:
    result = parse_result(_termination(pod)[1])
    return str(result["status"]) if result else None


def diagnose_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobOutcome:
    """Return the state of a training Job from its conditions and its pods."""
    conditions = {c.get("type"): c for c in _get(job, "status", "conditions") or []}

    def true(kind: str) -> dict[str, Any] | None:
        cond = conditions.get(kind)
        return cond if cond is not None and cond.get("status") == "True" else None

    ordered = _newest(pods)
    succeeded = true("Complete") or true("SuccessCriteriaMet")
    if succeeded is not None:
        # Of several workers only the chief writes the result: its pod first.
        ordered.sort(key=lambda pod: _result_status(pod) != "Succeeded")
        for pod in ordered:
            if _get(pod, "status", "phase") == "Succeeded":
                _, message = _termination(pod)
                return JobOutcome(
                    "Succeeded",
                    "JobSucceeded",
                    "training Job succeeded",
                    result=parse_result(message),
                    pod_name=_get(pod, "metadata", "name"),
                )
        return JobOutcome("Succeeded", "JobSucceeded", "training Job succeeded")
    failed = true("Failed") or true("FailureTarget")
    if failed is not None:
        reason = failed.get("reason") or "JobFailed"
        message = failed.get("message") or "training Job failed"
        # The worker that failed with its own reason, before those the Job then stopped.
        ordered.sort(key=lambda pod: _result_status(pod) != "Failed")
        for pod in ordered:
            term_reason, term_message = _termination(pod)
            if term_reason is None and term_message is None:
                continue
            result = parse_result(term_message)
            if result is not None and result.get("message"):
                detail = f"{result.get('reason', term_reason)}: {result['message']}"
            elif term_message:
                detail = f"{term_reason}: {term_message.strip()[-500:]}"
            else:
                detail = str(term_reason)
            message = f"{message}; last pod {_get(pod, 'metadata', 'name')}: {detail}"
            return JobOutcome("Failed", reason, message, result=result)
        return JobOutcome("Failed", reason, message)
    live = [p for p in ordered if not _get(p, "metadata", "deletionTimestamp")]
    stuck = diagnose_pods(live)
    # A pod that just succeeded is still "training" until the Job controller says Complete.
    running = [p for p in live if _get(p, "status", "phase") in ("Running", "Succeeded")]
    if running and stuck is None:
        return JobOutcome(
            "Running", "Training", "training", pod_name=_get(running[0], "metadata", "name")
        )
    if stuck is not None:
        return JobOutcome("Pending", stuck.reason, stuck.message, stuck=stuck)
    return JobOutcome("Pending", "Pending", "waiting for the training pod to start")


def store_holds(pods: list[dict[str, Any]]) -> int | None:
    """The highest version a training pod found already in the model store, or None.

    A trainer refuses to overwrite a version (``OutputExists``) and reports the highest
    version the store holds (``highestVersion``; from its message when an older trainer
    left it out). The Job has then no future: every retry finds the same directory.
    """
    found: int | None = None
    for pod in pods:
        _, message = _termination(pod)
        result = parse_result(message)
        if result is None or result.get("reason") != "OutputExists":
            continue
        highest = result.get("highestVersion")
        if not isinstance(highest, int):
            match = _VERSION_IN_MESSAGE.search(str(result.get("message") or ""))
            highest = int(match.group(1)) if match else None
        if highest is not None:
            found = max(found or 0, highest)
    return found
