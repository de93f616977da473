"""Decide, training half (pure): which Job should exist, with which version, and its verdict.

Version numbers only go up. The next one is above every version this ModelService knows of:
in ``status.versions``, ``status.model``, ``status.training``, ``status.highestVersion``, the
version labels of its training Jobs, and the model store itself (a trainer that finds its
version directory taken reports the store's highest version; the Job is replaced by one
with the next free number).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import conditions as cond
from ..builders.common import ModelVolume, PodDefaults
from ..builders.job import build_job
from ..diagnosis import JobOutcome, Stuck, diagnose_job, parse_progress, store_holds
from ..models import ModelServiceSpec, ModelVersionRecord, TrainingStatus, VersionMetrics
from ..names import ANNOTATION_RESULT, LABEL_VERSION, job_name, training_hash
from .observe import Observed, controlled_by

__all__ = ["Delete", "TrainingDecision", "decide_training", "highest_known", "job_version"]


@dataclass(frozen=True)
class Delete:
    """A child to delete, and why (for the log and an Event)."""

    kind: str
    name: str
    reason: str
    message: str


@dataclass
class TrainingDecision:
    """What the training half decided."""

    status: TrainingStatus
    outcome: JobOutcome | None = None
    record: ModelVersionRecord | None = None
    gate: cond.GateVerdict | None = None
    create: dict[str, Any] | None = None  # the Job to create
    deletes: list[Delete] = field(default_factory=list)
    # metadata.annotations to merge into the current Job (its result, kept past its pods)
    annotate: dict[str, str] | None = None
    highest: int = 0
    problem: Stuck | None = None


def job_version(job: dict[str, Any]) -> int | None:
    """The version a training Job trains (its label)."""
    label = (job["metadata"].get("labels") or {}).get(LABEL_VERSION, "")
    return int(label) if label.isdigit() else None


def highest_known(obs: Observed) -> int:
    """The highest version number this ModelService has seen taken (0: none)."""
    status = obs.status
    known = [0, status.highest_version or 0]
    if status.model is not None and status.model.version is not None:
        known.append(status.model.version)
    training = status.training
    if training is not None and training.version is not None and training.state != "Pending":
        # A Pending version without its Job was only planned (its create may have failed).
        known.append(training.version)
    known.extend(r.version for r in status.versions)
    known.extend(v for v in (job_version(j) for j in obs.owned("Job")) if v is not None)
    return max(known)


def _finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _succeeded(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "SuccessCriteriaMet") and c.get("status") == "True"
        for c in conditions
    )


def _others(obs: Observed, current: str, limit: int) -> list[Delete]:
    """Superseded Jobs that still run, and finished Jobs beyond the history limit."""
    out: list[Delete] = []
    jobs = [j for j in obs.owned("Job") if not j["metadata"].get("deletionTimestamp")]
    for job in jobs:
        name = job["metadata"]["name"]
        if name != current and not _finished(job):
            out.append(
                Delete(
                    "Job",
                    name,
                    "TrainingSuperseded",
                    f"stopped Job {name}: the training spec changed",
                )
            )
    finished = sorted(
        (j for j in jobs if _finished(j)),
        key=lambda j: (job_version(j) or 0, j["metadata"]["name"]),
        reverse=True,
    )
    for job in finished[limit:]:
        name = job["metadata"]["name"]
        if name == current:
            continue
        out.append(
            Delete(
                "Job",
                name,
                "TrainingHistoryPruned",
                f"deleted Job {name} (version {job_version(job)}): beyond historyLimit {limit}",
            )
        )
    return out


def _result(job: dict[str, Any], outcome: JobOutcome) -> tuple[dict[str, Any] | None, bool]:
    """The Job's result (kept as an annotation once read) and whether to annotate it now."""
    annotations = job["metadata"].get("annotations") or {}
    if ANNOTATION_RESULT in annotations:
        try:
            loaded = json.loads(annotations[ANNOTATION_RESULT])
        except ValueError:
            return None, False
        return (loaded if isinstance(loaded, dict) else None), False
    return outcome.result, outcome.result is not None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def record_from_result(
    version: int, jname: str, claim: str, result: dict[str, Any] | None
) -> ModelVersionRecord:
    """The ``status.versions`` entry of a finished training, with its lineage."""
    result = result or {}
    metrics = result.get("metrics") or {}
    hyperparameters = result.get("hyperparameters")
    return ModelVersionRecord(
        version=version,
        uri=f"pvc://{claim}/v{version}",
        job_name=jname,
        metrics=VersionMetrics(
            accuracy=_num(metrics.get("accuracy")), loss=_num(metrics.get("loss"))
        ),
        trained_at=result.get("trainedAt"),
        # Lineage: the trainer's own account, and the image the kubelet ran.
        dataset_uri=_text(result.get("datasetUri")),
        dataset_sha256=_text(result.get("datasetSha256")),
        hyperparameters=hyperparameters if isinstance(hyperparameters, dict) else None,
        image_digest=_text(result.get("imageDigest")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def image_digest(pods: list[dict[str, Any]]) -> str | None:
    """The training container's image by digest (``imageID``), from any of the Job's pods."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == "train" and status.get("imageID"):
                return str(status["imageID"])
    return None


def _gate(spec: ModelServiceSpec, record: ModelVersionRecord) -> cond.GateVerdict:
    gate_spec = spec.quality_gate
    if gate_spec is None:
        return cond.GateVerdict(record.version, True, "accuracy", None, None)
    value = getattr(record.metrics, gate_spec.metric, None) if record.metrics else None
    return cond.GateVerdict(
        record.version,
        gate_spec.passes(value),
        gate_spec.metric,
        value,
        gate_spec.bound,
        gate_spec.higher_is_better,
    )


def decide_training(
    obs: Observed, claim: str, defaults: PodDefaults, blocked: Stuck | None
) -> TrainingDecision:
    """The training Job for the current spec: create it, follow it, or judge its result.

    ``blocked`` (e.g. the store claim's name is taken) stops a new Job from being created.
    """
    spec = obs.spec
    assert spec is not None
    assert spec.training is not None
    training = spec.training
    owner = obs.owner
    spec_hash = training_hash(training.identity())
    jname = job_name(owner.name, spec_hash)
    highest = highest_known(obs)
    deletes = _others(obs, jname, training.history_limit)
    previous = obs.status.training
    previous = previous if previous is not None and previous.job_name == jname else None
    tstatus = TrainingStatus(
        job_name=jname,
        spec_hash=spec_hash,
        epochs=training.epochs,
        epoch=previous.epoch if previous else None,
        loss=previous.loss if previous else None,
        accuracy=previous.accuracy if previous else None,
    )
    decision = TrainingDecision(status=tstatus, deletes=deletes, highest=highest)
    existing = obs.named("Job", jname)
    if existing is not None and not controlled_by(existing, owner.uid):
        decision.problem = Stuck(
            "ChildConflict",
            f"Job {jname} exists and is not controlled by this ModelService "
            "(a leftover of a deleted namesake?); waiting for it to go",
        )
        tstatus.state = "Pending"
        return decision
    if existing is None:
        version = highest + 1
        tstatus.version = version
        tstatus.state = "Pending"
        if blocked is not None:
            decision.problem = blocked
            return decision
        decision.create = build_job(owner, training, version, ModelVolume(claim, False), defaults)
        return decision
    version = job_version(existing) or 0
    tstatus.version = version
    if existing["metadata"].get("deletionTimestamp"):
        tstatus.state = "Pending"
        decision.outcome = JobOutcome(
            "Pending", "JobPending", f"waiting for the old Job {jname} to be deleted"
        )
        return decision
    pods = obs.job_pods(existing)
    taken = store_holds(pods)
    if taken is not None and not _succeeded(existing):
        # The store already holds this version (a recreated ModelService over a kept store):
        # this Job can never succeed. Replace it with one for the next free number.
        decision.highest = max(highest, taken, version)
        tstatus.state = "Pending"
        decision.outcome = JobOutcome(
            "Pending",
            "VersionTaken",
            f"the model store already holds versions up to {decision.highest}; "
            f"training version {decision.highest + 1} instead of {version}",
        )
        decision.deletes.append(
            Delete(
                "Job",
                jname,
                "VersionTaken",
                f"deleted Job {jname}: version {version} already exists in the model store",
            )
        )
        return decision
    outcome = diagnose_job(existing, pods)
    tstatus.state = outcome.state
    if outcome.state == "Running":
        progress = parse_progress(obs.training_log)
        if progress is not None:
            tstatus.epoch = progress.epoch
            tstatus.epochs = progress.epochs or training.epochs
            tstatus.loss = progress.loss
            tstatus.accuracy = progress.accuracy
            outcome = JobOutcome(
                "Running",
                "Training",
                f"epoch {progress.epoch}/{tstatus.epochs}, loss {progress.loss}, "
                f"accuracy {progress.accuracy}",
                pod_name=outcome.pod_name,
            )
    decision.outcome = outcome
    if outcome.state != "Succeeded":
        return decision
    result, annotate = _result(existing, outcome)
    if annotate:
        digest = image_digest(pods)
        if result is not None and digest is not None:
            result = {**result, "imageDigest": digest}  # kept with the result, past the pods
        decision.annotate = {ANNOTATION_RESULT: json.dumps(result)}
    record = record_from_result(version, jname, claim, result)
    if record.metrics is not None:
        if record.metrics.loss is not None:
            tstatus.loss = record.metrics.loss
        if record.metrics.accuracy is not None:
            tstatus.accuracy = record.metrics.accuracy
    tstatus.epoch = training.epochs
    decision.gate = _gate(spec, record)
    record.quality_gate = "Passed" if decision.gate.passed else "Failed"
    decision.record = record
    return decision
