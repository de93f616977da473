"""Observed state to phase and conditions."""

from __future__ import annotations

import pytest

from modelservice_operator.conditions import (
    GateVerdict,
    Observed,
    ServingObservation,
    compute,
)
from modelservice_operator.diagnosis import JobOutcome, Stuck
from modelservice_operator.models import Condition

pytestmark = pytest.mark.unit

T0, T1 = "2026-11-28T12:00:00Z", "2026-11-28T12:05:00Z"
OK = JobOutcome("Succeeded", "JobSucceeded", "ok")


def serving(
    version: int | None = 1, ready: int = 1, replicas: int = 1, **kw: object
) -> ServingObservation:
    return ServingObservation(
        version=version,
        replicas=replicas,
        ready_replicas=ready,
        available_replicas=ready,
        rolled_out=kw.pop("rolled_out", True),  # type: ignore[arg-type]
        stuck=kw.pop("stuck", None),  # type: ignore[arg-type]
    )


def by_type(conds: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conds}


def test_ready_sample() -> None:
    obs = Observed(
        generation=2,
        trains=True,
        job=OK,
        training_version=1,
        gate=GateVerdict(1, True, "accuracy", 0.97, 0.9),
        served_version=1,
        desired_version=1,
        serving=serving(),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Ready"
    c = by_type(conds)
    assert [x.type for x in conds] == ["Trained", "QualityGatePassed", "ServingReady", "Ready"]
    assert all(x.status == "True" for x in conds)
    assert all(x.observed_generation == 2 and x.last_transition_time == T0 for x in conds)
    assert "0.97 >= minimum 0.9" in c["QualityGatePassed"].message


def test_transition_time_moves_only_on_flip() -> None:
    first = Observed(
        generation=1, trains=True, job=JobOutcome("Running", "Training", "e1"), training_version=1
    )
    _, before = compute(first, [], T0)
    second = Observed(
        generation=1, trains=True, job=JobOutcome("Running", "Training", "e2"), training_version=1
    )
    _, after = compute(second, before, T1)
    assert by_type(after)["Trained"].last_transition_time == T0
    done = Observed(
        generation=1,
        trains=True,
        job=OK,
        training_version=1,
        gate=GateVerdict(1, True, "accuracy", 0.95, 0.9),
        served_version=1,
        desired_version=1,
        serving=serving(),
    )
    _, flipped = compute(done, after, T1)
    assert by_type(flipped)["Trained"].last_transition_time == T1


def test_pending_training_unschedulable_is_waiting_not_failed() -> None:
    stuck = Stuck("Unschedulable", "pod x: 0/5 nodes are available: Insufficient nvidia.com/gpu")
    obs = Observed(
        generation=1,
        trains=True,
        training_version=1,
        job=JobOutcome("Pending", stuck.reason, stuck.message, stuck=stuck),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Pending"
    ready = by_type(conds)["Ready"]
    assert (ready.status, ready.reason) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in ready.message


def test_unschedulable_predictor_is_deploying() -> None:
    stuck = Stuck("Unschedulable", "pod p: 0/5 nodes are available")
    obs = Observed(
        generation=1,
        trains=True,
        job=OK,
        training_version=1,
        gate=GateVerdict(1, True, "accuracy", 0.95, 0.9),
        served_version=1,
        desired_version=1,
        serving=serving(ready=0, stuck=stuck),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Deploying"
    assert by_type(conds)["Ready"].reason == "Unschedulable"
    assert by_type(conds)["ServingReady"].reason == "Unschedulable"


def test_failed_gate_keeps_old_version_degraded() -> None:
    obs = Observed(
        generation=2,
        trains=True,
        job=OK,
        training_version=2,
        gate=GateVerdict(2, False, "accuracy", 0.5, 0.9),
        served_version=1,
        desired_version=1,
        serving=serving(version=1),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Degraded"
    gate = by_type(conds)["QualityGatePassed"]
    assert gate.status == "False"
    assert gate.reason == "BelowMinimum"
    assert "0.5" in gate.message
    assert "0.9" in gate.message
    assert "version 1 keeps serving" in gate.message


def test_loss_gate_is_lower_is_better() -> None:
    def gate(passed: bool, value: float | None) -> tuple[str, str, str]:
        obs = Observed(
            generation=2,
            trains=True,
            job=OK,
            training_version=2,
            gate=GateVerdict(2, passed, "loss", value, 0.3, higher_is_better=False),
            served_version=1,
            desired_version=1,
            serving=serving(version=1),
        )
        phase, conds = compute(obs, [], T0)
        c = by_type(conds)["QualityGatePassed"]
        return phase, c.reason, c.message

    phase, reason, message = gate(False, 0.42)
    assert (phase, reason) == ("Degraded", "AboveMaximum")
    assert message == (
        "version 2: loss 0.42 > maximum 0.3 (lower is better); version 1 keeps serving"
    )
    _, reason, message = gate(True, 0.12)
    assert reason == "BelowMaximum"
    assert message == "version 2: loss 0.12 <= maximum 0.3 (lower is better)"
    _, reason, message = gate(False, None)
    assert reason == "MetricMissing"
    assert "loss missing, maximum 0.3 (lower is better)" in message


def test_failed_accuracy_gate_without_a_model_is_failed_and_names_the_direction() -> None:
    obs = Observed(
        generation=1,
        trains=True,
        job=OK,
        training_version=1,
        gate=GateVerdict(1, False, "accuracy", 0.5, 0.9),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Failed"
    message = by_type(conds)["QualityGatePassed"].message
    assert (
        message == "version 1: accuracy 0.5 < minimum 0.9 (higher is better); no version to serve"
    )


def test_failed_job_is_failed_with_reason() -> None:
    job = JobOutcome("Failed", "BackoffLimitExceeded", "limit; last pod p: OOMKilled")
    phase, conds = compute(Observed(generation=1, trains=True, job=job, training_version=1), [], T0)
    assert phase == "Failed"
    c = by_type(conds)
    assert c["Trained"].reason == "BackoffLimitExceeded"
    assert c["Ready"].reason == "BackoffLimitExceeded"
    assert "OOMKilled" in c["Ready"].message


def test_retraining_while_serving() -> None:
    obs = Observed(
        generation=3,
        trains=True,
        job=JobOutcome("Running", "Training", "e"),
        training_version=2,
        served_version=1,
        desired_version=1,
        serving=serving(),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Training"
    assert by_type(conds)["Ready"].status == "True"


def test_crashloop_after_rollout_is_deploying() -> None:
    stuck = Stuck("CrashLoopBackOff", "container server of pod p: back-off")
    obs = Observed(
        generation=1,
        trains=False,
        served_version=None,
        desired_version=None,
        serving=serving(version=None, ready=0, rolled_out=False, stuck=stuck),
    )
    phase, conds = compute(obs, [], T0)
    assert phase == "Deploying"
    assert by_type(conds)["Ready"].reason == "CrashLoopBackOff"
    assert by_type(conds)["Trained"].reason == "ModelProvided"
