"""Training beyond the built-in trainer in one process: your own code, several workers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from modelservice_operator.builders.common import ModelVolume, Owner
from modelservice_operator.builders.job import build_job
from modelservice_operator.builders.workers import build_workers_service
from modelservice_operator.diagnosis import diagnose_job
from modelservice_operator.models import TrainingSpec
from modelservice_operator.names import training_hash
from modelservice_operator.settings import OperatorSettings
from modelservice_serving import contract

pytestmark = pytest.mark.unit

STORE = ModelVolume("digits-models", False)


def _job(owner: Owner, settings: OperatorSettings, **training: Any) -> dict[str, Any]:
    spec = TrainingSpec.model_validate({"dataset": "digits", **training})
    return build_job(owner, spec, 4, STORE, settings)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _expand(value: str, env: dict[str, str]) -> str:
    """What the kubelet does with ``$(VAR)`` in an env value."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], value)


def test_every_training_pod_gets_the_contract_environment(
    owner: Owner, settings: OperatorSettings
) -> None:
    job = _job(owner, settings, epochs=7, batchSize=16, learningRate=0.01)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env[contract.ENV_OUTPUT] == "/models/v4"
    assert env[contract.ENV_VERSION] == "4"
    assert env[contract.ENV_TERMINATION_LOG] == container["terminationMessagePath"]
    assert env[contract.ENV_DATASET] == "digits"
    assert (env[contract.ENV_EPOCHS], env[contract.ENV_BATCH_SIZE]) == ("7", "16")
    assert env[contract.ENV_LEARNING_RATE] == "0.01"
    assert "TF_CONFIG" not in env  # one worker: no cluster
    assert "completionMode" not in job["spec"]


def test_own_training_code_runs_with_the_same_volumes(
    owner: Owner, settings: OperatorSettings
) -> None:
    builtin = _job(owner, settings)
    own = _job(
        owner,
        settings,
        image="registry.local/digits-cnn:1",
        command=["python", "/app/train_cnn.py"],
        args=["--filters=16"],
    )
    (container,) = own["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.local/digits-cnn:1"
    assert container["command"] == ["python", "/app/train_cnn.py"]
    assert container["args"] == ["--filters=16"]
    (builtin_container,) = builtin["spec"]["template"]["spec"]["containers"]
    for same in ("volumeMounts", "securityContext", "terminationMessagePolicy", "env"):
        assert container[same] == builtin_container[same], same
    assert (
        own["spec"]["template"]["spec"]["volumes"] == builtin["spec"]["template"]["spec"]["volumes"]
    )
    assert own["metadata"]["name"] != builtin["metadata"]["name"]  # new code, new version


def test_user_env_wins_by_name(owner: Owner, settings: OperatorSettings) -> None:
    job = _job(owner, settings, env=[{"name": contract.ENV_DATASET, "value": "/data/x.npz"}])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert _env(container)[contract.ENV_DATASET] == "/data/x.npz"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"command": ["python", "train.py"]}, "spec.training.command needs spec.training.image"),
        ({"image": "x:1", "args": ["--a"]}, "spec.training.args needs spec.training.command"),
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
    ],
)
def test_invalid_training_specs(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        TrainingSpec.model_validate({"dataset": "digits", **fields})


def test_unset_new_fields_keep_the_training_hash() -> None:
    """Upgrading the operator must not retrain every ModelService."""
    wire = TrainingSpec.model_validate({"dataset": "digits"}).identity()
    assert set(wire) & {"workers", "command", "args"} == set()
    assert training_hash(wire) == training_hash(
        TrainingSpec.model_validate({"dataset": "digits", "workers": None}).identity()
    )


def test_workers_make_an_indexed_job_with_tf_config(
    owner: Owner, settings: OperatorSettings
) -> None:
    job = _job(owner, settings, workers=4, gpu={"count": 2, "product": "NVIDIA-H100-80GB-HBM3"})
    name = job["metadata"]["name"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name  # the headless Service's name
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2  # per worker, as today
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    env = _env(container)
    assert env["MSO_WORKER_INDEX"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    # MSO_WORKER_INDEX is defined before TF_CONFIG, so the kubelet can expand it.
    names = [e["name"] for e in container["env"]]
    assert names.index("MSO_WORKER_INDEX") < names.index("TF_CONFIG")
    config = json.loads(_expand(env["TF_CONFIG"], {"MSO_WORKER_INDEX": "2"}))
    assert config["task"] == {"type": "worker", "index": 2}
    assert config["cluster"]["worker"] == [
        f"{name}-{i}.{name}:{contract.WORKER_PORT}" for i in range(4)
    ]
    assert env[contract.ENV_WORKER_HOSTS] == ",".join(config["cluster"]["worker"])
    # One failed worker fails the Job; an evicted one is replaced.
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    assert {
        "action": "FailJob",
        "onExitCodes": {"containerName": container["name"], "operator": "NotIn", "values": [0]},
    } in rules
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_workers_service_is_headless_and_selects_the_jobs_pods(owner: Owner) -> None:
    service = build_workers_service(owner, "digits-train-abcd1234")
    assert service["metadata"]["name"] == "digits-train-abcd1234"
    assert service["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "digits-train-abcd1234"}
    assert service["spec"]["publishNotReadyAddresses"] is True


def _worker(index: int, phase: str, message: str | None, exit_code: int) -> dict[str, Any]:
    terminated = {"reason": "Error" if exit_code else "Completed", "exitCode": exit_code}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {
            "name": f"j-{index}-x",
            "creationTimestamp": f"2026-12-01T00:00:0{index}Z",
            "labels": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "train", "state": {"terminated": terminated}}],
        },
    }


def _finished(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "status": {
            "conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]
        }
    }


def test_chiefs_result_is_read_whichever_worker_finished_last() -> None:
    result = contract.result_json(
        contract.Succeeded(version=4, uri="/models/v4", metrics={"accuracy": 0.97, "loss": 0.1})
    )
    pods = [_worker(0, "Succeeded", result, 0), _worker(1, "Succeeded", None, 0)]
    outcome = diagnose_job(_finished("Complete"), pods)
    assert outcome.result is not None
    assert outcome.result["metrics"] == {"accuracy": 0.97, "loss": 0.1}
    assert outcome.pod_name == "j-0-x"


def test_one_failed_worker_fails_the_version_with_its_reason() -> None:
    failed = contract.result_json(
        contract.Failed(reason="InternalError", message="worker 2: NCCL timeout")
    )
    pods = [
        _worker(0, "Failed", None, 137),  # stopped by the Job controller
        _worker(1, "Failed", None, 137),
        _worker(2, "Failed", failed, 1),
    ]
    job = _finished(
        "Failed",
        "PodFailurePolicy",
        "Container train for pod ns/j-2-x failed with exit code 1 matching FailJob rule at index 1",
    )
    outcome = diagnose_job(job, pods)
    assert outcome.state == "Failed"
    assert outcome.reason == "PodFailurePolicy"
    assert "j-2-x: InternalError: worker 2: NCCL timeout" in outcome.message
