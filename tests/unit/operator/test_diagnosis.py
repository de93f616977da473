"""Pods and Jobs to the reason things are stuck, and training output parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelservice_operator.diagnosis import (
    diagnose_job,
    diagnose_pods,
    parse_progress,
    parse_result,
)

pytestmark = pytest.mark.unit

SCHED = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."


def pod(name: str = "p", phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-28T12:00:00Z"},
        "status": {"phase": phase, **status},
    }


def unschedulable() -> dict[str, Any]:
    return pod(
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHED}
        ]
    )


def waiting(reason: str, last: str | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": "server",
        "state": {"waiting": {"reason": reason, "message": "m"}},
    }
    if last:
        cs["lastState"] = {"terminated": {"reason": last, "exitCode": 137}}
    return pod(phase="Running", containerStatuses=[cs])


def test_unschedulable_keeps_scheduler_message() -> None:
    stuck = diagnose_pods([unschedulable()])
    assert stuck is not None
    assert stuck.reason == "Unschedulable"
    assert SCHED in stuck.message


@pytest.mark.parametrize(
    ("p", "reason"),
    [
        (waiting("CrashLoopBackOff"), "CrashLoopBackOff"),
        (waiting("ImagePullBackOff"), "ImagePullBackOff"),
        (waiting("CrashLoopBackOff", last="OOMKilled"), "OOMKilled"),
    ],
)
def test_waiting_reasons(p: dict[str, Any], reason: str) -> None:
    stuck = diagnose_pods([p])
    assert stuck is not None
    assert stuck.reason == reason


def test_healthy_and_severity() -> None:
    assert diagnose_pods([pod(phase="Running")]) is None
    stuck = diagnose_pods([unschedulable(), waiting("CrashLoopBackOff", last="OOMKilled")])
    assert stuck is not None
    assert stuck.reason == "OOMKilled"


RESULT = {
    "status": "Succeeded",
    "version": 3,
    "uri": "/models/v3",
    "metrics": {"accuracy": 0.97, "loss": 0.1},
    "trainedAt": "2026-11-28T12:00:00Z",
}


def terminated(phase: str, reason: str, message: str) -> dict[str, Any]:
    return pod(
        phase=phase,
        containerStatuses=[
            {"name": "train", "state": {"terminated": {"reason": reason, "message": message}}}
        ],
    )


def job(cond: str | None, reason: str = "", message: str = "") -> dict[str, Any]:
    conds = [{"type": cond, "status": "True", "reason": reason, "message": message}] if cond else []
    return {"metadata": {"name": "j"}, "status": {"conditions": conds}}


def test_job_succeeded_reads_termination_message() -> None:
    out = diagnose_job(job("Complete"), [terminated("Succeeded", "Completed", json.dumps(RESULT))])
    assert out.state == "Succeeded"
    assert out.result == RESULT


def test_job_failed_reports_reason_and_last_message() -> None:
    failure = {"status": "Failed", "reason": "DatasetNotFound", "message": "no such dataset x"}
    out = diagnose_job(
        job("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        [terminated("Failed", "Error", json.dumps(failure))],
    )
    assert out.state == "Failed"
    assert out.reason == "BackoffLimitExceeded"
    assert "DatasetNotFound: no such dataset x" in out.message
    deadline = diagnose_job(job("Failed", "DeadlineExceeded", "Job was active longer"), [])
    assert (deadline.state, deadline.reason) == ("Failed", "DeadlineExceeded")


def test_job_pending_and_running() -> None:
    pending = diagnose_job(job(None), [unschedulable()])
    assert (pending.state, pending.reason) == ("Pending", "Unschedulable")
    running = diagnose_job(job(None), [pod(phase="Running")])
    assert running.state == "Running"
    assert running.pod_name == "p"
    assert diagnose_job(job(None), []).state == "Pending"


def test_parse_result_and_progress() -> None:
    assert parse_result(json.dumps(RESULT)) == RESULT
    assert parse_result("Traceback...\nboom") is None
    assert parse_result("log line\n" + json.dumps({"status": "Failed", "reason": "X"})) == {
        "status": "Failed",
        "reason": "X",
    }
    log = "\n".join(
        [
            "starting",
            json.dumps({"event": "epoch", "epoch": 1, "epochs": 5, "loss": 0.5, "accuracy": 0.8}),
            json.dumps({"event": "epoch", "epoch": 2, "epochs": 5, "loss": 0.3, "accuracy": 0.9}),
            "not json {",
        ]
    )
    progress = parse_progress(log)
    assert progress is not None
    assert (progress.epoch, progress.epochs, progress.loss, progress.accuracy) == (2, 5, 0.3, 0.9)
    assert parse_progress(None) is None


def test_server_download_failure_beats_crash_loop() -> None:
    p = pod(
        containerStatuses=[
            {
                "name": "server",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                "lastState": {
                    "terminated": {
                        "reason": "Error",
                        "exitCode": 1,
                        "message": "ModelDownloadFailed: GET https://h/m.zip: HTTP 404 Not Found\n",
                    }
                },
            }
        ]
    )
    stuck = diagnose_pods([p])
    assert stuck is not None
    assert stuck.reason == "ModelDownloadFailed"
    assert stuck.message == "container server of pod p: GET https://h/m.zip: HTTP 404 Not Found"
