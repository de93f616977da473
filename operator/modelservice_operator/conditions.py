"""Pure status computation: observed state in, phase and conditions out.

``lastTransitionTime`` moves only when a condition's status flips; reasons and messages may
change under a constant status without moving it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .diagnosis import JobOutcome, Stuck
from .models import Condition, Phase

__all__ = [
    "CONDITION_TYPES",
    "GateVerdict",
    "Observed",
    "ServingObservation",
    "compute",
    "merge_conditions",
]

CONDITION_TYPES = ("Trained", "QualityGatePassed", "ServingReady", "Ready")


@dataclass(frozen=True)
class GateVerdict:
    """The quality gate applied to one trained version."""

    version: int
    passed: bool
    metric: str
    value: float | None
    bound: float | None  # None: no gate at all
    higher_is_better: bool = True


@dataclass(frozen=True)
class ServingObservation:
    """The predictor Deployment as observed after the reconciler's writes."""

    version: int | None
    replicas: int
    ready_replicas: int
    available_replicas: int
    rolled_out: bool
    stuck: Stuck | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the status depends on, gathered by the reconciler."""

    generation: int
    trains: bool
    job: JobOutcome | None = None
    training_version: int | None = None
    gate: GateVerdict | None = None
    served_version: int | None = None
    desired_version: int | None = None
    model_problem: Stuck | None = None
    serving: ServingObservation | None = None


def _cond(type_: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type=type_, status=status, reason=reason, message=message)


def _trained(obs: Observed) -> Condition:
    if not obs.trains:
        return _cond("Trained", True, "ModelProvided", "spec.model.uri names the model")
    job = obs.job
    version = obs.training_version
    if job is None:
        return _cond("Trained", False, "JobPending", f"creating the Job for version {version}")
    if job.state == "Succeeded":
        return _cond("Trained", True, "JobSucceeded", f"version {version} trained")
    if job.state == "Failed":
        return _cond("Trained", False, job.reason, job.message)
    if job.state == "Running":
        return _cond("Trained", False, "Training", f"training version {version}: {job.message}")
    return _cond("Trained", False, job.reason, job.message)


def _gate(obs: Observed) -> Condition:
    if not obs.trains:
        return _cond("QualityGatePassed", True, "NotApplicable", "the model was not trained here")
    gate = obs.gate
    if gate is None:
        return _cond(
            "QualityGatePassed", None, "AwaitingTraining", "no trained version to evaluate yet"
        )
    value = "missing" if gate.value is None else f"{gate.value:g}"
    if gate.bound is None:
        return _cond("QualityGatePassed", True, "NoQualityGate", f"version {gate.version} promoted")
    if gate.higher_is_better:
        bar, direction = f"minimum {gate.bound:g}", "higher is better"
        ok_op, bad_op = ">=", "<"
        ok_reason, bad_reason = "AboveMinimum", "BelowMinimum"
    else:
        bar, direction = f"maximum {gate.bound:g}", "lower is better"
        ok_op, bad_op = "<=", ">"
        ok_reason, bad_reason = "BelowMaximum", "AboveMaximum"
    if gate.passed:
        return _cond(
            "QualityGatePassed",
            True,
            ok_reason,
            f"version {gate.version}: {gate.metric} {value} {ok_op} {bar} ({direction})",
        )
    keep = (
        f"; version {obs.served_version} keeps serving"
        if obs.served_version is not None
        else "; no version to serve"
    )
    if gate.value is None:
        reason, verdict = "MetricMissing", f"{gate.metric} missing, {bar} ({direction})"
    else:
        reason, verdict = bad_reason, f"{gate.metric} {value} {bad_op} {bar} ({direction})"
    return _cond("QualityGatePassed", False, reason, f"version {gate.version}: {verdict}{keep}")


def _serving(obs: Observed) -> Condition:
    if obs.model_problem is not None:
        return _cond("ServingReady", False, obs.model_problem.reason, obs.model_problem.message)
    sv = obs.serving
    if sv is None:
        return _cond("ServingReady", False, "AwaitingModel", "no promoted model to serve yet")
    counts = f"{sv.ready_replicas}/{sv.replicas} replicas ready"
    if sv.rolled_out and sv.available_replicas >= 1:
        return _cond(
            "ServingReady", True, "MinimumReplicasAvailable", f"version {sv.version}: {counts}"
        )
    if sv.stuck is not None:
        return _cond("ServingReady", False, sv.stuck.reason, sv.stuck.message)
    return _cond("ServingReady", False, "RollingOut", f"rolling out version {sv.version}: {counts}")


def _phase_and_ready(obs: Observed, serving_ready: Condition) -> tuple[Phase, Condition]:
    serving_ok = serving_ready.status == "True"
    sv = obs.serving
    job = obs.job

    def ready(ok: bool, reason: str, message: str) -> Condition:
        return _cond("Ready", ok, reason, message)

    if obs.model_problem is not None:
        return "Failed", ready(False, obs.model_problem.reason, obs.model_problem.message)
    if obs.trains and job is not None and job.state == "Failed":
        msg = f"training version {obs.training_version} failed: {job.message}"
        if serving_ok:
            return "Degraded", ready(
                False, job.reason, f"{msg}; version {obs.served_version} keeps serving"
            )
        return "Failed", ready(False, job.reason, msg)
    if obs.trains and obs.gate is not None and not obs.gate.passed:
        gate = _gate(obs)
        if serving_ok:
            return "Degraded", ready(False, "QualityGateFailed", gate.message)
        if obs.served_version is None:
            return "Failed", ready(False, "QualityGateFailed", gate.message)
    training = obs.trains and (job is None or job.state in ("Pending", "Running"))
    if training and not serving_ok:
        assert job is None or job.state in ("Pending", "Running")
        if job is None or job.state == "Pending":
            reason = job.reason if job is not None else "JobPending"
            message = job.message if job is not None else "creating the training Job"
            return "Pending", ready(False, reason, message)
        return "Training", ready(False, "Training", f"training version {obs.training_version}")
    if training and serving_ok:
        assert sv is not None
        return "Training", ready(
            True,
            "Serving",
            f"version {sv.version} serving while version {obs.training_version} trains",
        )
    if sv is None:
        if obs.served_version is None:
            return "Pending", ready(False, "AwaitingModel", "no promoted model to serve yet")
        return "Deploying", ready(False, "Creating", "creating the predictor")
    if not serving_ok:
        return "Deploying", ready(False, serving_ready.reason, serving_ready.message)
    if sv.stuck is not None and sv.stuck.reason == "ScalingUp":
        # Serving, and more nodes are on their way: progress, not a degradation.
        return "Ready", ready(
            True, "ScalingUp", f"{sv.ready_replicas}/{sv.replicas} ready, {sv.stuck.message}"
        )
    if sv.stuck is not None and sv.ready_replicas < sv.replicas:
        return "Degraded", ready(
            False, sv.stuck.reason, f"{sv.ready_replicas}/{sv.replicas} ready: {sv.stuck.message}"
        )
    if obs.desired_version is not None and sv.version != obs.desired_version:
        return "Deploying", ready(False, "RollingOut", f"rolling out version {obs.desired_version}")
    return "Ready", ready(
        True, "Serving", f"version {sv.version} serving, {sv.ready_replicas}/{sv.replicas} ready"
    )


def merge_conditions(
    previous: list[Condition], current: list[Condition], generation: int, now: str
) -> list[Condition]:
    """Stamp ``current`` with observedGeneration and a lastTransitionTime that moves on flips."""
    before = {c.type: c for c in previous}
    merged: list[Condition] = []
    for cond in current:
        old = before.get(cond.type)
        moved = old is None or old.status != cond.status or old.last_transition_time is None
        merged.append(
            cond.model_copy(
                update={
                    "observed_generation": generation,
                    "last_transition_time": now if moved else old.last_transition_time,  # type: ignore[union-attr]
                }
            )
        )
    return merged


def compute(obs: Observed, previous: list[Condition], now: str) -> tuple[Phase, list[Condition]]:
    """Return the phase and the four conditions for ``obs``."""
    serving_ready = _serving(obs)
    phase, ready = _phase_and_ready(obs, serving_ready)
    current = [_trained(obs), _gate(obs), serving_ready, ready]
    return phase, merge_conditions(previous, current, obs.generation, now)
