"""The level-based reconcile: observe, build, compare, create or patch, compute status.

Every kopf entry point (create, update, resume, timer) calls :func:`reconcile`. It reads the
children from the API, never from memory, so it converges from any point, including after a
restart between a write and the status patch that records it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from . import conditions as cond
from . import metrics
from .autoscaling import KEDA_API, AutoscalerChoice, Keda, choose_autoscaler
from .builders.common import ModelVolume, Owner
from .builders.deployment import build_deployment, owned_spec
from .builders.hpa import build_hpa
from .builders.job import build_job, version_dir
from .builders.pdb import build_pdb
from .builders.pvc import build_pvc, store_claim
from .builders.scaledobject import build_scaled_object
from .builders.service import build_service, service_url
from .diagnosis import JobOutcome, Stuck, diagnose_job, diagnose_pods, parse_progress
from .kube import ApiError, Kube
from .models import (
    Condition,
    ModelServiceSpec,
    ModelServiceStatus,
    ModelStatus,
    ModelVersionRecord,
    ServingSpec,
    ServingStatus,
    TrainingStatus,
    VersionMetrics,
)
from .names import (
    ANNOTATION_RESULT,
    ANNOTATION_SPEC_HASH,
    LABEL_COMPONENT,
    LABEL_NAME,
    LABEL_VERSION,
    job_name,
    predictor_name,
    predictor_selector,
    training_hash,
)
from .provisioning import diagnose_scale_up
from .settings import OperatorSettings

__all__ = ["merge_patch_diff", "reconcile"]

log = logging.getLogger(__name__)

_locks: dict[str, asyncio.Lock] = {}
# Ready reasons that are progress, not trouble (posted as Normal events).
_NORMAL_REASONS = {
    "Serving",
    "Training",
    "RollingOut",
    "Creating",
    "JobPending",
    "Pending",
    "ScalingUp",
}
SUPPORTED_SCHEMES = ("pvc", "http", "https")
# Downloaded by the server itself (``serve --model-uri``) into an emptyDir cache.
ARCHIVE_SCHEMES = ("http", "https")


class ChildConflictError(Exception):
    """A child's name is taken by an object this ModelService does not control."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def _ensure(kube: Kube, desired: dict[str, Any], uid: str) -> dict[str, Any]:
    """Create ``desired`` or bring the fields the operator owns back to it.

    The comparison is by the spec-hash annotation the builder computed, so defaults the API
    adds never cause a patch. ``spec.replicas`` and ``spec.selector`` are never patched.
    """
    obj, created = await kube.create(desired)
    if created:
        return obj
    meta = desired["metadata"]
    if not _owned_by(obj, uid):
        raise ChildConflictError(
            f"{desired['kind']} {meta['name']} exists and is not controlled by this ModelService"
        )
    want = (meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    have = (obj["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    if want is None or want == have:
        return obj
    ops: list[dict[str, Any]] = []
    if not obj["metadata"].get("annotations"):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": f"/metadata/annotations/{_escape(ANNOTATION_SPEC_HASH)}",
            "value": want,
        }
    )
    labels = {**(obj["metadata"].get("labels") or {}), **meta["labels"]}
    ops.append({"op": "add", "path": "/metadata/labels", "value": labels})
    spec = owned_spec(desired["spec"]) if desired["kind"] == "Deployment" else desired["spec"]
    for key, value in spec.items():
        ops.append({"op": "add", "path": f"/spec/{_escape(key)}", "value": value})
    log.info("patching %s %s (spec hash %s -> %s)", desired["kind"], meta["name"], have, want)
    return await kube.json_patch(desired["kind"], meta["namespace"], meta["name"], ops)


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


@dataclass
class _Training:
    outcome: JobOutcome | None
    status: TrainingStatus
    record: ModelVersionRecord | None
    gate: cond.GateVerdict | None


def _max_version(status: ModelServiceStatus, jobs: list[dict[str, Any]]) -> int:
    known = [0]
    if status.model is not None and status.model.version is not None:
        known.append(status.model.version)
    if status.training is not None and status.training.version is not None:
        known.append(status.training.version)
    known.extend(r.version for r in status.versions)
    for job in jobs:
        label = (job["metadata"].get("labels") or {}).get(LABEL_VERSION, "")
        if label.isdigit():
            known.append(int(label))
    return max(known)


def _job_finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


async def _stop_superseded(kube: Kube, owner: Owner, others: list[dict[str, Any]]) -> None:
    """Delete training Jobs of older training specs that still run: nobody wants them.

    Finished Jobs stay: their version labels and result annotations are the history.
    Best effort: without the ``delete`` verb on jobs the old Job just runs to its end.
    """
    for job in others:
        if _job_finished(job) or job["metadata"].get("deletionTimestamp"):
            continue
        name = job["metadata"]["name"]
        try:
            await kube.delete("Job", owner.namespace, name)
        except ApiError as exc:
            log.warning("cannot stop superseded training Job %s: %s", name, exc)
            continue
        log.info("stopped superseded training Job %s", name)
        await kube.event(
            {"metadata": {"name": owner.name, "namespace": owner.namespace, "uid": owner.uid}},
            "Normal",
            "TrainingSuperseded",
            f"stopped Job {name}: the training spec changed",
        )


def _record_from_result(
    version: int, jname: str, claim: str, result: dict[str, Any] | None
) -> ModelVersionRecord:
    metrics = (result or {}).get("metrics") or {}
    return ModelVersionRecord(
        version=version,
        uri=f"pvc://{claim}/v{version}",
        job_name=jname,
        metrics=VersionMetrics(
            accuracy=_num(metrics.get("accuracy")), loss=_num(metrics.get("loss"))
        ),
        trained_at=(result or {}).get("trainedAt"),
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


async def _reconcile_training(
    kube: Kube,
    owner: Owner,
    spec: ModelServiceSpec,
    status: ModelServiceStatus,
    claim: str,
    settings: OperatorSettings,
    body: dict[str, Any],
) -> _Training:
    training = spec.training
    assert training is not None
    spec_hash = training_hash(training.wire())
    jname = job_name(owner.name, spec_hash)
    jobs = [
        j
        for j in await kube.list_objects(
            "Job", owner.namespace, {LABEL_NAME: owner.name, LABEL_COMPONENT: "training"}
        )
        if _owned_by(j, owner.uid)
    ]
    job = next((j for j in jobs if j["metadata"]["name"] == jname), None)
    await _stop_superseded(kube, owner, [j for j in jobs if j["metadata"]["name"] != jname])
    if job is None:
        version = _max_version(status, jobs) + 1
        manifest = build_job(owner, training, version, ModelVolume(claim, False), settings)
        job, created = await kube.create(manifest)
        if created:
            metrics.TRAINING_JOBS.inc()
            log.info("created Job %s for version %d", jname, version)
            message = f"Job {jname} trains version {version}"
            await kube.event(body, "Normal", "TrainingStarted", message)
    labels = job["metadata"].get("labels") or {}
    version = int(labels.get(LABEL_VERSION, "0") or 0)
    pods = await kube.list_objects("Pod", owner.namespace, {"job-name": jname})
    outcome = diagnose_job(job, pods)
    previous = status.training if status.training and status.training.job_name == jname else None
    tstatus = TrainingStatus(
        job_name=jname,
        spec_hash=spec_hash,
        version=version,
        state=outcome.state,
        epochs=training.epochs,
        epoch=previous.epoch if previous else None,
        loss=previous.loss if previous else None,
        accuracy=previous.accuracy if previous else None,
    )
    if outcome.state == "Running" and outcome.pod_name:
        text = await kube.pod_log(owner.namespace, outcome.pod_name, settings.log_tail_lines)
        progress = parse_progress(text)
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
    if outcome.state != "Succeeded":
        return _Training(outcome, tstatus, None, None)

    # Succeeded: the result survives its pods as an annotation on the Job.
    annotations = job["metadata"].get("annotations") or {}
    result: dict[str, Any] | None = None
    if ANNOTATION_RESULT in annotations:
        try:
            loaded = json.loads(annotations[ANNOTATION_RESULT])
            result = loaded if isinstance(loaded, dict) else None
        except ValueError:
            result = None
    elif outcome.result is not None:
        result = outcome.result
        await kube.merge_patch(
            "Job",
            owner.namespace,
            jname,
            {"metadata": {"annotations": {ANNOTATION_RESULT: json.dumps(result)}}},
        )
    record = _record_from_result(version, jname, claim, result)
    if record.metrics is not None:
        tstatus.loss = record.metrics.loss if record.metrics.loss is not None else tstatus.loss
        if record.metrics.accuracy is not None:
            tstatus.accuracy = record.metrics.accuracy
    tstatus.epoch = training.epochs
    gate_spec = spec.quality_gate
    if gate_spec is None:
        gate = cond.GateVerdict(version, True, "accuracy", None, None)
    else:
        value = getattr(record.metrics, gate_spec.metric, None) if record.metrics else None
        gate = cond.GateVerdict(
            version,
            gate_spec.passes(value),
            gate_spec.metric,
            value,
            gate_spec.bound,
            gate_spec.higher_is_better,
        )
    record.quality_gate = "Passed" if gate.passed else "Failed"
    return _Training(outcome, tstatus, record, gate)


def _merge_versions(
    versions: list[ModelVersionRecord], record: ModelVersionRecord | None, limit: int
) -> list[ModelVersionRecord]:
    by_version = {r.version: r for r in versions}
    if record is not None:
        old = by_version.get(record.version)
        if old is not None and old.promoted_at and not record.promoted_at:
            record.promoted_at = old.promoted_at
        by_version[record.version] = record
    ordered = sorted(by_version.values(), key=lambda r: r.version)
    while len(ordered) > limit:
        # Drop the oldest version that never passed first, then the oldest.
        failed = [r for r in ordered if r.quality_gate != "Passed"]
        ordered.remove(failed[0] if failed else ordered[0])
    return ordered


def _model_status(record: ModelVersionRecord) -> ModelStatus:
    return ModelStatus(
        version=record.version,
        uri=record.uri,
        metrics=record.metrics,
        trained_at=record.trained_at,
    )


@dataclass
class _Target:
    model: ModelStatus | None
    volume: ModelVolume | None
    model_dir: str
    problem: Stuck | None
    model_uri: str | None = None


def _uri_target(uri: str, version: int | None) -> _Target:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SUPPORTED_SCHEMES:
        return _Target(
            None,
            None,
            "",
            Stuck(
                "UnsupportedModelURI",
                f"spec.model.uri scheme {scheme}:// is not served by this operator yet; "
                "supported today: pvc://claim/path, and http:// or https:// to a .tar.gz, "
                ".tgz or .zip archive of a SavedModel version directory",
            ),
        )
    if scheme in ARCHIVE_SCHEMES:
        # The archive is one version: spec.model.version only labels it.
        return _Target(ModelStatus(version=version, uri=uri), None, "", None, model_uri=uri)
    claim, _, path = rest.partition("/")
    path = path.strip("/")
    if version is not None:
        path = f"{path}/v{version}" if path else f"v{version}"
        uri = f"pvc://{claim}/{path}"
    model_dir = "/models" + (f"/{path}" if path else "")
    return _Target(ModelStatus(version=version, uri=uri), ModelVolume(claim, True), model_dir, None)


async def reconcile(
    kube: Kube, body: dict[str, Any], settings: OperatorSettings
) -> ModelServiceStatus | None:
    """Converge the children of one ModelService and write its status if it changed."""
    meta = body["metadata"]
    key = meta.get("uid") or f"{meta['namespace']}/{meta['name']}"
    name = f"{meta['namespace']}/{meta['name']}"
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        started = time.monotonic()
        result = "error"
        try:
            fresh = await kube.get("ModelService", meta["namespace"], meta["name"])
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                _locks.pop(key, None)
                metrics.forget_phase(name)
                result = "gone"
                return None
            status = await _reconcile(kube, fresh, settings)
            metrics.observe_phase(name, status.phase if status else None)
            result = "success"
            return status
        except ApiError:
            result = "api_error"
            raise
        finally:
            metrics.RECONCILES.labels(result=result).inc()
            metrics.RECONCILE_SECONDS.labels(result=result).observe(time.monotonic() - started)


async def _reconcile(
    kube: Kube, body: dict[str, Any], settings: OperatorSettings
) -> ModelServiceStatus | None:
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    generation = int(meta.get("generation") or 0)
    raw_status = body.get("status") or {}
    try:
        status = ModelServiceStatus.model_validate(raw_status)
    except ValidationError:
        status = ModelServiceStatus()
    try:
        spec = ModelServiceSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        invalid = Stuck("InvalidSpec", str(exc).replace("\n", " ")[:1000])
        obs = cond.Observed(generation=generation, trains=False, model_problem=invalid)
        phase, conds = cond.compute(obs, status.conditions, _now())
        new = status.model_copy(
            update={"phase": phase, "conditions": conds, "observed_generation": generation}
        )
        await _write_status(kube, body, raw_status, status, new)
        return new

    versions = list(status.versions)
    trained: _Training | None = None
    claim = store_claim(owner, spec.storage)
    rejected: Stuck | None = None
    if spec.training is not None:
        try:
            pvc = build_pvc(owner, spec.storage)
            if pvc is not None:
                await kube.create(pvc)
            trained = await _reconcile_training(kube, owner, spec, status, claim, settings, body)
        except ApiError as exc:
            rejected = _rejected(exc)
        if trained is not None and trained.record is not None and trained.gate is not None:
            record = trained.record
            pinned = spec.model is not None and spec.model.version is not None
            newly_promoted = status.model is None or status.model.version != record.version
            if trained.gate.passed and newly_promoted and not pinned:
                record.promoted_at = _now()
                metrics.PROMOTIONS.inc()
            before = next((r for r in versions if r.version == record.version), None)
            if not trained.gate.passed and (before is None or before.quality_gate != "Failed"):
                # Counted once per version: the verdict is in status from now on.
                metrics.GATE_FAILURES.labels(metric=trained.gate.metric).inc()
            versions = _merge_versions(versions, record, settings.history_limit)

    # What to serve: a pinned version, the promoted version, or the user's URI.
    target: _Target
    pin = spec.model.version if spec.model is not None else None
    if spec.model is not None and spec.model.uri:
        target = _uri_target(spec.model.uri, pin)
    elif spec.training is not None:
        chosen: ModelVersionRecord | None = None
        if pin is not None:
            chosen = next((r for r in versions if r.version == pin), None)
            if chosen is None:
                chosen = ModelVersionRecord(version=pin, uri=f"pvc://{claim}/v{pin}")
        else:
            promoted = [r for r in versions if r.quality_gate == "Passed" and r.promoted_at]
            if promoted:
                chosen = max(promoted, key=lambda r: (r.promoted_at or "", r.version))
        if chosen is None and pin is None and status.model is not None:
            target = _Target(
                status.model,
                ModelVolume(claim, True),
                version_dir(status.model.version or 0),
                None,
            )
        elif chosen is None:
            target = _Target(None, None, "", None)
        else:
            target = _Target(
                _model_status(chosen), ModelVolume(claim, True), version_dir(chosen.version), None
            )
    else:
        target = _Target(None, None, "", Stuck("NoModel", "spec.training or spec.model.uri"))
    problem: Stuck | None = target.problem

    serving_obs: cond.ServingObservation | None = None
    serving_status: ServingStatus | None = status.serving
    if target.model is not None and problem is None:
        try:
            serving_obs, serving_status = await _reconcile_serving(
                kube, owner, spec, target, settings
            )
        except ChildConflictError as exc:
            problem = Stuck("NameConflict", str(exc))
        except ApiError as exc:
            problem = _rejected(exc)
    problem = problem or rejected

    obs = cond.Observed(
        generation=generation,
        trains=spec.training is not None and not (spec.model is not None and spec.model.uri),
        job=trained.outcome if trained else None,
        training_version=trained.status.version if trained else None,
        gate=trained.gate if trained else None,
        served_version=target.model.version if target.model else None,
        desired_version=target.model.version if target.model else None,
        model_problem=problem,
        serving=serving_obs,
    )
    phase, conds = cond.compute(obs, status.conditions, _now())
    new = ModelServiceStatus(
        phase=phase,
        observed_generation=generation,
        conditions=conds,
        model=target.model if target.model is not None else status.model,
        training=trained.status if trained else None,
        serving=serving_status,
        versions=versions,
    )
    await _write_status(kube, body, raw_status, status, new)
    return new


async def _reconcile_serving(
    kube: Kube,
    owner: Owner,
    spec: ModelServiceSpec,
    target: _Target,
    settings: OperatorSettings,
) -> tuple[cond.ServingObservation, ServingStatus]:
    assert target.model is not None
    serving = spec.serving
    version = target.model.version
    deployment = await _ensure(
        kube,
        build_deployment(
            owner,
            serving,
            version,
            target.model_dir,
            target.volume,
            settings,
            model_uri=target.model_uri,
        ),
        owner.uid,
    )
    await _ensure(kube, build_service(owner), owner.uid)
    choice = await _ensure_autoscaler(kube, owner, serving, settings)
    pdb = build_pdb(owner, serving)
    if pdb is not None:
        await _ensure(kube, pdb, owner.uid)
    else:
        pdb_name = predictor_name(owner.name)
        existing = await kube.get("PodDisruptionBudget", owner.namespace, pdb_name)
        if existing is not None and _owned_by(existing, owner.uid):
            await kube.delete("PodDisruptionBudget", owner.namespace, pdb_name)

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
    available = int(dstat.get("availableReplicas") or 0)
    label = (dmeta.get("labels") or {}).get(LABEL_VERSION)
    served = int(label) if label and label.isdigit() else version
    stuck: Stuck | None = None
    if not rolled_out or ready < replicas:
        pods = await kube.list_objects("Pod", owner.namespace, predictor_selector(owner.name))
        stuck = diagnose_pods(pods)
        if stuck is not None and stuck.reason == "Unschedulable":
            # A node autoscaler (Karpenter) may already be adding nodes for these pods.
            events = [
                event
                for reason in ("Nominated", "FailedScheduling")
                for event in await kube.list_events(owner.namespace, reason)
            ]
            product = serving.gpu.product if serving.gpu is not None else None
            stuck = diagnose_scale_up(pods, events, stuck, serving.uses_gpu, product)
    obs = cond.ServingObservation(
        version=served,
        replicas=replicas,
        ready_replicas=ready,
        available_replicas=available,
        rolled_out=rolled_out,
        stuck=stuck,
    )
    sstatus = ServingStatus(
        version=served,
        replicas=replicas,
        ready_replicas=ready,
        ready=f"{ready}/{replicas}",
        url=service_url(owner, settings.cluster_domain),
        autoscaler=choice.status(owner.name),
    )
    return obs, sstatus


# Per API client: (monotonic time of the check, whether scaledobjects.keda.sh is served).
_keda_seen: weakref.WeakKeyDictionary[Any, tuple[float, bool]] = weakref.WeakKeyDictionary()


async def _keda(kube: Kube, settings: OperatorSettings) -> Keda:
    """What the operator may do with KEDA now: API discovery, reused for a short while."""
    if settings.keda == "off":
        return Keda.DISABLED
    now = time.monotonic()
    seen = _keda_seen.get(kube)
    if seen is None or now - seen[0] >= settings.keda_check_interval_s:
        seen = (now, await kube.serves(*KEDA_API))
        _keda_seen[kube] = seen
    return Keda.SERVED if seen[1] else Keda.ABSENT


async def _delete_owned(kube: Kube, kind: str, owner: Owner) -> None:
    name = predictor_name(owner.name)
    existing = await kube.get(kind, owner.namespace, name)
    if existing is not None and _owned_by(existing, owner.uid):
        log.info("deleting %s %s: the other autoscaler drives the predictor", kind, name)
        await kube.delete(kind, owner.namespace, name)


async def _ensure_autoscaler(
    kube: Kube, owner: Owner, serving: ServingSpec, settings: OperatorSettings
) -> AutoscalerChoice:
    """Make the chosen autoscaler and remove the other one: two would fight over replicas."""
    keda = await _keda(kube, settings)
    choice = choose_autoscaler(serving, keda)
    if choice.kind == "ScaledObject":
        try:
            await _ensure(
                kube, build_scaled_object(owner, serving, settings.cluster_domain), owner.uid
            )
        except ApiError as exc:
            if exc.status != 403:
                raise
            keda = Keda.FORBIDDEN
            choice = choose_autoscaler(serving, keda)
        else:
            await _delete_owned(kube, "HorizontalPodAutoscaler", owner)
            return choice
    await _ensure(kube, build_hpa(owner, serving), owner.uid)
    if keda is Keda.SERVED:  # e.g. the metric changed to cpu: the ScaledObject goes
        await _delete_owned(kube, "ScaledObject", owner)
    return choice


def _rejected(exc: ApiError) -> Stuck:
    """Turn a permanent API refusal of a child into a status problem; re-raise the rest."""
    if exc.status in (400, 403, 422):
        reason = "Forbidden" if exc.status == 403 else "ChildRejected"
        return Stuck(reason, f"the API refused a child object: {exc}")
    raise exc


def _ready(conds: list[Condition]) -> Condition | None:
    return next((c for c in conds if c.type == "Ready"), None)


async def _write_status(
    kube: Kube,
    body: dict[str, Any],
    raw_old: dict[str, Any],
    old: ModelServiceStatus,
    new: ModelServiceStatus,
) -> None:
    """Patch the status only when it changed; post an Event when Ready changed."""
    new_wire = new.wire()
    patch = merge_patch_diff(raw_old, new_wire)
    if not patch:
        return
    meta = body["metadata"]
    await kube.patch_status(meta["namespace"], meta["name"], patch)
    before, after = _ready(old.conditions), _ready(new.conditions)
    if after is not None and (
        before is None
        or (before.status, before.reason, before.message)
        != (after.status, after.reason, after.message)
    ):
        if before is not None and (before.status, before.reason) == (after.status, after.reason):
            return  # only the message moved (e.g. epoch progress): no event
        warning = after.status != "True" and after.reason not in _NORMAL_REASONS
        await kube.event(body, "Warning" if warning else "Normal", after.reason, after.message)
