"""decide: plain values in (a ModelService and its children as dicts), a plan out. No API."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from modelservice_operator.models import ModelServiceSpec, ModelStatus, ModelVersionRecord
from modelservice_operator.reconciler.children import INITIAL_REPLICAS_MANAGER
from modelservice_operator.reconciler.decide import Plan, Settings, decide, rollout, serving_target
from modelservice_operator.reconciler.observe import Observed, parse
from modelservice_operator.reconciler.training import highest_known
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

NS = "ml"
UID = "ms-uid"
NOW = "2026-12-01T00:00:00Z"
SETTINGS = Settings(defaults=OperatorSettings())


def _body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits", "namespace": NS, "uid": UID, "generation": 1},
        "spec": spec,
        "status": status or {},
    }


def _job(name: str, version: int, *, uid: str = UID, state: str | None = None) -> dict[str, Any]:
    conditions = [] if state is None else [{"type": state, "status": "True"}]
    return {
        "kind": "Job",
        "metadata": {
            "name": name,
            "uid": f"job-{name}-{version}",
            "namespace": NS,
            "labels": {"modelservice.dev/name": "digits", "modelservice.dev/version": str(version)},
            "ownerReferences": [{"uid": uid, "controller": True}],
        },
        "status": {"conditions": conditions},
    }


def _pod(job: dict[str, Any], result: dict[str, Any], phase: str = "Failed") -> dict[str, Any]:
    state = {"terminated": {"reason": "Error", "exitCode": 1, "message": json.dumps(result)}}
    name = job["metadata"]["name"]
    return {
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x",
            "namespace": NS,
            "labels": {"job-name": name, "modelservice.dev/name": "digits"},
            "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "train", "state": state}]},
    }


def _obs(
    spec: dict[str, Any], status: dict[str, Any] | None = None, **children: list[dict[str, Any]]
) -> Observed:
    return parse(_body(copy.deepcopy(spec), status), {k: v for k, v in children.items()})


def _current_job(spec: dict[str, Any]) -> str:
    plan = decide(_obs(spec), SETTINGS, NOW)
    name = plan.status.training.job_name if plan.status.training else None
    assert name
    return name


def _writes(plan: Plan, kind: str) -> list[dict[str, Any]]:
    return [w.manifest for w in plan.writes if w.kind == kind]


def test_next_version_is_above_every_known_version(sample: dict[str, Any]) -> None:
    spec = sample["spec"]
    status = {
        "versions": [{"version": 2}],
        "model": {"version": 4},
        "highestVersion": 6,
        "training": {"version": 9, "state": "Pending"},  # planned only: no Job holds it
    }
    jobs = [_job("digits-train-old", 5, state="Complete")]
    obs = _obs(spec, status, Job=jobs)
    assert highest_known(obs) == 6
    plan = decide(obs, SETTINGS, NOW)
    (job,) = _writes(plan, "Job")
    assert job["metadata"]["labels"]["modelservice.dev/version"] == "7"
    assert "--output=/models/v7" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    # A Job of another ModelService (same name, other uid) says nothing about our versions.
    assert highest_known(_obs(spec, {}, Job=[_job("x", 40, uid="other")])) == 0


def test_taken_version_replaces_the_job_with_the_next_free_number(sample: dict[str, Any]) -> None:
    """A recreated ModelService over a kept store: v1 exists there, so v1 cannot be trained."""
    spec = sample["spec"]
    name = _current_job(spec)
    taken = {
        "status": "Failed",
        "reason": "OutputExists",
        "message": "output '/models/v1' already exists; versions are never overwritten",
        "highestVersion": 3,
    }
    first = _job(name, 1)
    obs = _obs(spec, {}, Job=[first], Pod=[_pod(first, taken)])
    plan = decide(obs, SETTINGS, NOW)
    assert [(d.kind, d.name, d.reason) for d in plan.deletes] == [("Job", name, "VersionTaken")]
    assert plan.status.highest_version == 3
    assert _writes(plan, "Job") == []
    trained = next(c for c in plan.status.conditions if c.type == "Trained")
    assert trained.reason == "VersionTaken"
    assert "training version 4 instead of 1" in trained.message

    # Once the Job is gone, its replacement trains version 4 (status remembers the store).
    after = _obs(spec, plan.status.wire())
    (job,) = _writes(decide(after, SETTINGS, NOW), "Job")
    assert job["metadata"]["labels"]["modelservice.dev/version"] == "4"
    # The replacement has the same name; the old Job's pods, still there, are not its own.
    second = _job(name, 4)
    left = _pod(first, taken)
    plan = decide(_obs(spec, plan.status.wire(), Job=[second], Pod=[left]), SETTINGS, NOW)
    assert plan.deletes == []
    assert plan.status.training is not None
    assert plan.status.training.version == 4
    # An older trainer without highestVersion: the message names the taken version.
    del taken["highestVersion"]
    obs = _obs(spec, {}, Job=[first], Pod=[_pod(first, taken)])
    assert decide(obs, SETTINGS, NOW).status.highest_version == 1


def test_leftover_job_of_a_deleted_namesake_is_never_adopted(sample: dict[str, Any]) -> None:
    spec = sample["spec"]
    name = _current_job(spec)
    leftover = _job(name, 1, uid="old-uid", state="Complete")
    leftover["metadata"]["deletionTimestamp"] = NOW
    plan = decide(_obs(spec, {}, Job=[leftover]), SETTINGS, NOW)
    assert [w.kind for w in plan.writes] == ["PersistentVolumeClaim"]
    assert plan.deletes == []
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.reason == "ChildConflict"
    assert f"Job {name} exists and is not controlled by this ModelService" in ready.message
    # Garbage collection removed it: training starts by itself.
    plan = decide(_obs(spec, plan.status.wire()), SETTINGS, NOW)
    assert len(_writes(plan, "Job")) == 1


def _serving_spec(min_replicas: int = 1) -> dict[str, Any]:
    return {"model": {"uri": "pvc://models/digits/v7"}, "serving": {"minReplicas": min_replicas}}


def test_children_are_created_without_force_and_replicas_handed_over() -> None:
    plan = decide(_obs(_serving_spec(3)), SETTINGS, NOW)
    kinds = [(w.kind, w.manager, w.force, w.creates) for w in plan.writes]
    assert kinds == [
        ("Deployment", "modelservice-operator", False, True),
        ("Deployment", INITIAL_REPLICAS_MANAGER, False, False),
        ("Service", "modelservice-operator", False, True),
        ("NetworkPolicy", "modelservice-operator", False, True),
        ("HorizontalPodAutoscaler", "modelservice-operator", False, True),
        ("PodDisruptionBudget", "modelservice-operator", False, True),
    ]
    deployment, replicas = plan.writes[0].manifest, plan.writes[1].manifest
    assert "replicas" not in deployment["spec"]  # never in the operator's own apply
    assert replicas["spec"] == {"replicas": 3}


def _applied(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """The children as they would exist after ``plan`` (controlled by UID, status empty)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for write in plan.writes:
        if write.manager != "modelservice-operator":
            continue
        obj = copy.deepcopy(write.manifest)
        obj["metadata"]["ownerReferences"][0]["uid"] = UID
        out.setdefault(write.kind, []).append(obj)
    return out


def test_nothing_is_written_when_children_match_and_drift_is_forced_back() -> None:
    first = decide(_obs(_serving_spec()), SETTINGS, NOW)
    children = _applied(first)
    assert children["Deployment"][0]["metadata"]["ownerReferences"][0]["uid"] == UID
    idle = decide(_obs(_serving_spec(), first.status.wire(), **children), SETTINGS, NOW)
    assert idle.writes == []
    assert idle.deletes == []
    # Someone changed the Service: its spec hash no longer matches, it is applied back.
    children["Service"][0]["metadata"]["annotations"]["modelservice.dev/spec-hash"] = "x"
    plan = decide(_obs(_serving_spec(), first.status.wire(), **children), SETTINGS, NOW)
    assert [(w.kind, w.force, w.creates) for w in plan.writes] == [("Service", True, False)]


def test_foreign_namesake_child_is_a_conflict_and_left_alone() -> None:
    first = decide(_obs(_serving_spec()), SETTINGS, NOW)
    children = _applied(first)
    children["Service"][0]["metadata"]["ownerReferences"] = [{"uid": "someone", "controller": True}]
    children["Service"][0]["metadata"]["annotations"]["modelservice.dev/spec-hash"] = "x"
    plan = decide(_obs(_serving_spec(), first.status.wire(), **children), SETTINGS, NOW)
    assert plan.writes == []
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.reason == "ChildConflict"
    assert "Service digits-predictor exists and is not controlled" in ready.message


def test_pdb_is_pruned_when_no_longer_desired() -> None:
    first = decide(_obs(_serving_spec(2)), SETTINGS, NOW)
    children = _applied(first)
    plan = decide(_obs(_serving_spec(1), first.status.wire(), **children), SETTINGS, NOW)
    assert [(d.kind, d.name) for d in plan.deletes] == [("PodDisruptionBudget", "digits-predictor")]


def test_finished_jobs_beyond_history_limit_are_deleted(sample: dict[str, Any]) -> None:
    spec = copy.deepcopy(sample["spec"])
    spec["training"]["historyLimit"] = 2
    name = _current_job(spec)
    jobs = [_job(f"digits-train-{v}", v, state="Complete") for v in (1, 2, 3)]
    jobs.append(_job("digits-train-4", 4, state="Failed"))
    jobs.append(_job(name, 5, state="Complete"))
    plan = decide(_obs(spec, {}, Job=jobs), SETTINGS, NOW)
    pruned = sorted(d.name for d in plan.deletes if d.reason == "TrainingHistoryPruned")
    assert pruned == ["digits-train-1", "digits-train-2", "digits-train-3"]
    # The newest finished ones stay (the current Job and the failed v4), running ones too.
    jobs[0]["status"] = {}
    plan = decide(_obs(spec, {}, Job=jobs), SETTINGS, NOW)
    assert ("digits-train-1", "TrainingSuperseded") in [(d.name, d.reason) for d in plan.deletes]


def test_serving_target_pin_promoted_and_uri() -> None:
    spec = ModelServiceSpec.model_validate({"training": {"dataset": "digits"}})
    versions = [
        ModelVersionRecord(version=1, quality_gate="Passed", promoted_at="2026-01-01T00:00:00Z"),
        ModelVersionRecord(version=2, quality_gate="Failed"),
        ModelVersionRecord(version=3, quality_gate="Passed", promoted_at="2026-01-02T00:00:00Z"),
    ]
    target = serving_target(spec, versions, None, "store")
    assert (target.model.version if target.model else None, target.model_dir) == (3, "/models/v3")
    pinned = ModelServiceSpec.model_validate(
        {"training": {"dataset": "digits"}, "model": {"version": 1}}
    )
    assert serving_target(pinned, versions, None, "store").model_dir == "/models/v1"
    current = ModelStatus(version=1)
    assert serving_target(spec, [], current, "store").model == current
    uri = ModelServiceSpec.model_validate({"model": {"uri": "gs://bucket/m"}})
    problem = serving_target(uri, [], None, "store").problem
    assert problem is not None
    assert problem.reason == "UnsupportedModelURI"


def test_rollout_reads_the_deployment() -> None:
    deployment = {
        "metadata": {"generation": 2, "labels": {"modelservice.dev/version": "3"}},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2},
    }
    seen = rollout(deployment, 4, [])
    assert (seen.version, seen.rolled_out, seen.ready_replicas) == (3, True, 0)
    deployment["metadata"]["generation"] = 3
    assert rollout(deployment, 4, []).rolled_out is False


def test_kept_store_claim_without_controller_is_used_not_adopted(sample: dict[str, Any]) -> None:
    """spec.storage.retainOnDelete leaves the PVC behind with no controller: it is the store."""
    kept = {
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "digits-models",
            "namespace": NS,
            "labels": {"modelservice.dev/name": "digits"},
        },
    }
    plan = decide(_obs(sample["spec"], {}, PersistentVolumeClaim=[kept]), SETTINGS, NOW)
    assert [w.kind for w in plan.writes] == ["Job"]
    (job,) = _writes(plan, "Job")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "digits-models"
    # Still controlled by a deleted namesake (garbage collection pending): not touched.
    kept["metadata"]["ownerReferences"] = [{"uid": "old-uid", "controller": True}]
    plan = decide(_obs(sample["spec"], {}, PersistentVolumeClaim=[kept]), SETTINGS, NOW)
    assert plan.writes == []
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.reason == "ChildConflict"
    assert "PersistentVolumeClaim digits-models" in ready.message


def test_workers_get_their_names_before_their_job(sample: dict[str, Any]) -> None:
    spec = copy.deepcopy(sample["spec"])
    spec["training"]["workers"] = 3
    plan = decide(_obs(spec), SETTINGS, NOW)
    kinds = [(w.kind, w.name) for w in plan.writes if w.kind in ("Service", "Job")]
    job = _current_job(spec)
    assert kinds == [("Service", job), ("Job", job)]  # the headless Service first
    # Once both exist nothing more is written for them; one worker needs no Service.
    (service,) = [w.manifest for w in plan.writes if w.kind == "Service"]
    service["metadata"]["ownerReferences"] = [{"uid": UID, "controller": True}]
    again = decide(_obs(spec, Job=[_job(job, 1)], Service=[service]), SETTINGS, NOW)
    assert [w for w in again.writes if w.kind in ("Service", "Job")] == []
    single = decide(_obs(sample["spec"]), SETTINGS, NOW)
    assert _writes(single, "Service") == []


def _workers_service(job: str, *, uid: str = UID) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {
            "name": job,
            "namespace": NS,
            "labels": {
                "modelservice.dev/name": "digits",
                "modelservice.dev/component": "training-workers",
            },
            "ownerReferences": [{"uid": uid, "controller": True}],
        },
    }


def test_a_pruned_or_vanished_jobs_workers_service_is_deleted(sample: dict[str, Any]) -> None:
    spec = copy.deepcopy(sample["spec"])
    spec["training"]["workers"] = 2
    spec["training"]["historyLimit"] = 1
    current = _current_job(spec)
    jobs = [_job("digits-train-1", 1, state="Complete"), _job(current, 3, state="Complete")]
    services = [
        _workers_service("digits-train-1"),  # its Job is pruned by this plan
        _workers_service("digits-train-0"),  # its Job is gone already
        _workers_service(current),  # the current Job's: kept
        _workers_service("digits-train-9", uid="someone-else"),  # not ours: never touched
    ]
    plan = decide(_obs(spec, {}, Job=jobs, Service=services), SETTINGS, NOW)
    deleted = sorted(d.name for d in plan.deletes if d.kind == "Service")
    assert deleted == ["digits-train-0", "digits-train-1"]
    assert ("Job", "digits-train-1") in [(d.kind, d.name) for d in plan.deletes]
    # Before its Job exists (the Service is written first), the current one stays too.
    plan = decide(_obs(spec, {}, Service=[_workers_service(current)]), SETTINGS, NOW)
    assert [d for d in plan.deletes if d.kind == "Service"] == []
