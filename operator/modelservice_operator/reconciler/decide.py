"""Decide (pure): from one :class:`Observed` to a :class:`Plan` of writes and the new status.

No API, no clock (``now`` is passed in), no settings object beyond the values handed in: each
decision is unit-tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import conditions as cond
from ..autoscaling import choose_autoscaler
from ..builders.common import ModelVolume, PodDefaults
from ..builders.job import version_dir
from ..builders.pvc import build_pvc, store_claim
from ..builders.service import grpc_address, service_url
from ..builders.workers import build_workers_service
from ..diagnosis import Stuck, diagnose_pods
from ..models import (
    ModelServiceSpec,
    ModelServiceStatus,
    ModelStatus,
    ModelVersionRecord,
    ServingSpec,
    ServingStatus,
)
from ..names import LABEL_COMPONENT, LABEL_VERSION, predictor_name
from ..provisioning import diagnose_scale_up
from .children import Child, Write, desired_serving, plan_children
from .observe import Observed, controlled_by
from .training import Delete, TrainingDecision, decide_training

__all__ = [
    "Plan",
    "Settings",
    "Target",
    "decide",
    "merge_versions",
    "rollout",
    "serving_target",
]

SUPPORTED_SCHEMES = ("pvc", "http", "https", "s3")
# Downloaded by the server itself (``serve --model-uri``) into an emptyDir cache; s3:// with
# S3-style keys in spec.model.credentials (the CRD refuses s3:// without them).
ARCHIVE_SCHEMES = ("http", "https", "s3")


@dataclass(frozen=True)
class Settings:
    """The operator settings a decision depends on."""

    defaults: PodDefaults
    cluster_domain: str = "cluster.local"
    versions_kept: int = 20
    keda_namespace: str = "keda"


@dataclass
class Plan:
    """Everything one reconcile writes, in order: children, deletes, annotations, status."""

    writes: list[Write] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    annotate: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    status: ModelServiceStatus = field(default_factory=ModelServiceStatus)
    promoted: bool = False
    gate_failed: str | None = None  # the metric of a gate failure seen for the first time
    # (type, reason, message) posted after the status: promotions and rollbacks.
    events: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """What to serve: the model, its volume and directory, or why nothing can be."""

    model: ModelStatus | None
    volume: ModelVolume | None
    model_dir: str
    problem: Stuck | None
    model_uri: str | None = None


def merge_versions(
    versions: list[ModelVersionRecord], record: ModelVersionRecord | None, limit: int
) -> list[ModelVersionRecord]:
    """``status.versions`` with ``record`` merged in, oldest first, at most ``limit`` long."""
    by_version = {r.version: r for r in versions}
    if record is not None:
        old = by_version.get(record.version)
        if old is not None and old.promoted_at and not record.promoted_at:
            record.promoted_at = old.promoted_at
        if old is not None and old.gated_at:
            record.gated_at = old.gated_at  # the time of the first verdict
        by_version[record.version] = record
    ordered = sorted(by_version.values(), key=lambda r: r.version)
    while len(ordered) > limit:
        # Drop the oldest version that never passed first, then the oldest.
        failed = [r for r in ordered if r.quality_gate != "Passed"]
        ordered.remove(failed[0] if failed else ordered[0])
    return ordered


def promotion_message(
    record: ModelVersionRecord, status: ModelServiceStatus, gate: cond.GateVerdict
) -> str:
    """The Event text of a promotion: the new version, its metric, the one it replaces."""
    previous = status.model.version if status.model is not None else None
    passed = f"{gate.metric} {gate.value}" if gate.value is not None else "no quality gate"
    replacing = f", replacing version {previous}" if previous is not None else ""
    return f"version {record.version} promoted to serving ({passed}){replacing}"


def rollback_message(
    pin: int | None, before: ModelStatus | None, after: ModelStatus | None
) -> str | None:
    """The Event text when a pin moves serving to another version (once: status follows)."""
    if pin is None or after is None or after.version != pin:
        return None
    if before is None or before.version is None or before.version == pin:
        return None
    return f"serving pinned version {pin} instead of version {before.version}"


def _uri_target(uri: str, version: int | None) -> Target:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SUPPORTED_SCHEMES:
        return Target(
            None,
            None,
            "",
            Stuck(
                "UnsupportedModelURI",
                f"spec.model.uri scheme {scheme}:// is not served by this operator yet; "
                "supported today: pvc://claim/path, and http://, https:// or s3:// (with S3 "
                "keys in spec.model.credentials) to a .tar.gz, .tgz or .zip archive of a "
                "SavedModel version directory",
            ),
        )
    if scheme in ARCHIVE_SCHEMES:
        # The archive is one version: spec.model.version only labels it.
        return Target(ModelStatus(version=version, uri=uri), None, "", None, model_uri=uri)
    claim, _, path = rest.partition("/")
    path = path.strip("/")
    if version is not None:
        path = f"{path}/v{version}" if path else f"v{version}"
        uri = f"pvc://{claim}/{path}"
    model_dir = "/models" + (f"/{path}" if path else "")
    return Target(ModelStatus(version=version, uri=uri), ModelVolume(claim, True), model_dir, None)


def _model_status(record: ModelVersionRecord) -> ModelStatus:
    return ModelStatus(
        version=record.version, uri=record.uri, metrics=record.metrics, trained_at=record.trained_at
    )


def serving_target(
    spec: ModelServiceSpec,
    versions: list[ModelVersionRecord],
    current: ModelStatus | None,
    claim: str,
) -> Target:
    """What to serve: a pinned version, the last promoted one, or the user's URI."""
    pin = spec.model.version if spec.model is not None else None
    if spec.model is not None and spec.model.uri:
        return _uri_target(spec.model.uri, pin)
    if spec.training is None:
        return Target(None, None, "", Stuck("NoModel", "spec.training or spec.model.uri"))
    chosen: ModelVersionRecord | None = None
    if pin is not None:
        chosen = next((r for r in versions if r.version == pin), None)
        if chosen is None:
            chosen = ModelVersionRecord(version=pin, uri=f"pvc://{claim}/v{pin}")
    else:
        promoted = [r for r in versions if r.quality_gate == "Passed" and r.promoted_at]
        if promoted:
            chosen = max(promoted, key=lambda r: (r.promoted_at or "", r.version))
    if chosen is None and pin is None and current is not None:
        return Target(current, ModelVolume(claim, True), version_dir(current.version or 0), None)
    if chosen is None:
        return Target(None, None, "", None)
    return Target(
        _model_status(chosen), ModelVolume(claim, True), version_dir(chosen.version), None
    )


def rollout(
    deployment: dict[str, Any],
    version: int | None,
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]] | None = None,
    serving: ServingSpec | None = None,
) -> cond.ServingObservation:
    """How far the predictor Deployment has rolled out, and why not further.

    Pods the scheduler cannot place are ``ScalingUp`` while Karpenter launches NodeClaims
    for them (their ``events``), ``Unschedulable`` with both reasons when it cannot.
    """
    dmeta = deployment["metadata"]
    dspec = deployment.get("spec") or {}
    dstat = deployment.get("status") or {}
    replicas = int(dspec.get("replicas") or 0)
    updated = int(dstat.get("updatedReplicas") or 0)
    rolled_out = (
        int(dstat.get("observedGeneration") or 0) >= int(dmeta.get("generation") or 0)
        and updated == replicas
        and int(dstat.get("replicas") or 0) == updated
    )
    ready = int(dstat.get("readyReplicas") or 0)
    label = (dmeta.get("labels") or {}).get(LABEL_VERSION)
    served = int(label) if label and label.isdigit() else version
    stuck = diagnose_pods(pods) if not rolled_out or ready < replicas else None
    if stuck is not None and stuck.reason == "Unschedulable":
        gpu = serving.gpu if serving is not None else None
        stuck = diagnose_scale_up(
            pods, events or [], stuck, serving is not None and serving.uses_gpu,
            gpu.product if gpu is not None else None,
        )  # fmt: skip
    return cond.ServingObservation(
        version=served,
        replicas=replicas,
        ready_replicas=ready,
        available_replicas=int(dstat.get("availableReplicas") or 0),
        rolled_out=rolled_out,
        stuck=stuck,
    )


def stale_workers_services(obs: Observed, trained: TrainingDecision) -> list[Delete]:
    """Workers' headless Services whose Job is gone or deleted by this plan.

    The Service is named after its Job and outlives it otherwise (it is owned by the
    ModelService, not by the Job): a pruned multi-worker Job would leave one per version.
    The current Job's Service is kept even before its Job exists (it is created first).
    """
    deleted = {d.name for d in trained.deletes if d.kind == "Job"}
    jobs = {
        job["metadata"]["name"]
        for job in obs.owned("Job")
        if not job["metadata"].get("deletionTimestamp")
    }
    keep: set[str | None] = {*(jobs - deleted), trained.status.job_name}
    return [
        Delete("Service", name, "", f"deleted Service {name}: its training Job is gone")
        for service in obs.owned("Service")
        if (service["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == "training-workers"
        and (name := service["metadata"]["name"]) not in keep
        and not service["metadata"].get("deletionTimestamp")
    ]


def _invalid(obs: Observed, now: str) -> Plan:
    invalid = Stuck("InvalidSpec", obs.spec_error or "invalid spec")
    observed = cond.Observed(generation=obs.generation, trains=False, model_problem=invalid)
    phase, conds = cond.compute(observed, obs.status.conditions, now)
    status = obs.status.model_copy(
        update={"phase": phase, "conditions": conds, "observed_generation": obs.generation}
    )
    return Plan(status=status)


def decide(obs: Observed, settings: Settings, now: str, rejected: Stuck | None = None) -> Plan:
    """The plan for one ModelService. ``rejected``: the API refused a write of this plan."""
    spec = obs.spec
    if spec is None:
        return _invalid(obs, now)
    owner = obs.owner
    status = obs.status
    plan = Plan()
    versions = list(status.versions)
    claim = store_claim(owner, spec.storage)
    trained: TrainingDecision | None = None
    highest = status.highest_version or 0
    if spec.training is not None:
        pvc = build_pvc(owner, spec.storage)
        store_writes, _, store_problem = plan_children(
            obs,
            [Child(pvc, mutable=False, usable_unowned=True)] if pvc is not None else [],
            prune=False,
        )
        plan.writes.extend(store_writes)
        trained = decide_training(obs, claim, settings.defaults, store_problem)
        highest = max(highest, trained.highest)
        plan.deletes.extend(trained.deletes)
        if spec.training.worker_count > 1 and trained.status.job_name and not trained.problem:
            # The workers' names, before their Job: created once, kept while the Job is.
            workers = build_workers_service(owner, trained.status.job_name)
            names, _, _ = plan_children(obs, [Child(workers, mutable=False)], prune=False)
            plan.writes.extend(names)
        plan.deletes.extend(stale_workers_services(obs, trained))
        if trained.create is not None:
            plan.writes.append(Write(trained.create, force=False, creates=True, post=True))
        if trained.annotate is not None:
            plan.annotate.append(("Job", trained.status.job_name or "", trained.annotate))
        record, gate = trained.record, trained.gate
        if record is not None and gate is not None:
            pinned = spec.model is not None and spec.model.version is not None
            newly = status.model is None or status.model.version != record.version
            before = next((r for r in versions if r.version == record.version), None)
            record.gated_at = now
            if gate.passed and newly and not pinned:
                record.promoted_at = now
                plan.promoted = True
                plan.events.append(("Normal", "Promoted", promotion_message(record, status, gate)))
            if not gate.passed and (before is None or before.quality_gate != "Failed"):
                plan.gate_failed = gate.metric  # counted once: the verdict is in status now
            versions = merge_versions(versions, record, settings.versions_kept)

    target = serving_target(spec, versions, status.model, claim)
    problem = target.problem
    pin = spec.model.version if spec.model is not None else None
    rollback = rollback_message(pin, status.model, target.model)
    if rollback is not None and problem is None:
        plan.events.append(("Normal", "RolledBack", rollback))
    serving_obs: cond.ServingObservation | None = None
    serving_status = status.serving
    if target.model is not None and problem is None:
        autoscaler = choose_autoscaler(spec.serving, obs.keda)
        children = desired_serving(
            owner,
            spec.serving,
            target.model.version,
            target.model_dir,
            target.volume,
            settings.defaults,
            target.model_uri,
            spec.model.credentials if spec.model is not None else None,
            autoscaler,
            settings.cluster_domain,
            settings.keda_namespace,
        )
        writes, deletes, problem = plan_children(obs, children, prune=True)
        plan.writes.extend(writes)
        plan.deletes.extend(deletes)
        deployment = obs.named("Deployment", predictor_name(owner.name))
        if deployment is not None and controlled_by(deployment, owner.uid):
            serving_obs = rollout(
                deployment,
                target.model.version,
                obs.predictor_pods(),
                obs.pod_events,
                spec.serving,
            )
            serving_status = ServingStatus(
                version=serving_obs.version,
                replicas=serving_obs.replicas,
                ready_replicas=serving_obs.ready_replicas,
                ready=f"{serving_obs.ready_replicas}/{serving_obs.replicas}",
                url=service_url(owner, settings.cluster_domain),
                grpc_address=grpc_address(owner, settings.cluster_domain),
                autoscaler=autoscaler.status(owner.name),
            )
    problem = problem or (trained.problem if trained is not None else None) or rejected
    observed = cond.Observed(
        generation=obs.generation,
        trains=spec.training is not None and not (spec.model is not None and spec.model.uri),
        job=trained.outcome if trained else None,
        training_version=trained.status.version if trained else None,
        gate=trained.gate if trained else None,
        served_version=target.model.version if target.model else None,
        desired_version=target.model.version if target.model else None,
        model_problem=problem,
        serving=serving_obs,
    )
    phase, conds = cond.compute(observed, status.conditions, now)
    plan.status = ModelServiceStatus(
        phase=phase,
        observed_generation=obs.generation,
        conditions=conds,
        model=target.model if target.model is not None else status.model,
        training=trained.status if trained else None,
        serving=serving_status,
        versions=versions,
        highest_version=highest or None,
    )
    return plan
