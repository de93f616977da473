"""Pod defaults of every child pod and download credentials by Secret reference."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelservice_operator.builders.common import ModelVolume, Owner
from modelservice_operator.builders.deployment import build_deployment
from modelservice_operator.builders.job import DEFAULT_ACTIVE_DEADLINE_SECONDS, build_job
from modelservice_operator.models import (
    ModelServiceSpec,
    SecretReference,
    ServingSpec,
    TrainingSpec,
)
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def _pods(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> dict[str, dict[str, Any]]:
    assert spec.training is not None
    job = build_job(owner, spec.training, 1, ModelVolume("digits-models", False), settings)
    on_pvc = build_deployment(
        owner, spec.serving, 1, "/models/v1", ModelVolume("digits-models", True), settings
    )
    downloaded = build_deployment(
        owner, spec.serving, 1, "", None, settings, model_uri="https://h/m.tgz"
    )
    return {
        "training": job["spec"]["template"]["spec"],
        "serving": on_pvc["spec"]["template"]["spec"],
        "serving-uri": downloaded["spec"]["template"]["spec"],
    }


def test_no_service_account_token_in_any_pod(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    for which, pod in _pods(owner, spec, settings).items():
        assert pod["automountServiceAccountToken"] is False, which


def test_every_empty_dir_has_a_size_limit(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    for which, pod in _pods(owner, spec, settings).items():
        empty_dirs = [v for v in pod["volumes"] if "emptyDir" in v]
        assert empty_dirs, which
        for volume in empty_dirs:
            assert volume["emptyDir"].get("sizeLimit"), (which, volume)


@pytest.mark.parametrize(
    ("which", "request_", "limit"),
    [("training", "1Gi", "3Gi"), ("serving", "256Mi", "2Gi"), ("serving-uri", "256Mi", "4Gi")],
)
def test_ephemeral_storage_requested_and_limited(
    owner: Owner,
    spec: ModelServiceSpec,
    settings: OperatorSettings,
    which: str,
    request_: str,
    limit: str,
) -> None:
    (container,) = _pods(owner, spec, settings)[which]["containers"]
    assert container["resources"]["requests"]["ephemeral-storage"] == request_
    assert container["resources"]["limits"]["ephemeral-storage"] == limit


def test_a_users_ephemeral_storage_is_kept(owner: Owner, settings: OperatorSettings) -> None:
    serving = ServingSpec.model_validate({"resources": {"limits": {"ephemeral-storage": "10Gi"}}})
    deployment = build_deployment(owner, serving, 1, "/models/v1", None, settings)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"ephemeral-storage": "10Gi"}
    assert "ephemeral-storage" not in container["resources"]["requests"]


def test_training_has_a_deadline_by_default(owner: Owner, settings: OperatorSettings) -> None:
    store = ModelVolume("c", False)
    default = build_job(owner, TrainingSpec(dataset="digits"), 1, store, settings)
    assert default["spec"]["activeDeadlineSeconds"] == DEFAULT_ACTIVE_DEADLINE_SECONDS == 86400
    given = TrainingSpec(dataset="digits", active_deadline_seconds=600)
    assert build_job(owner, given, 1, store, settings)["spec"]["activeDeadlineSeconds"] == 600


def test_dataset_credentials_are_mounted_files(owner: Owner, settings: OperatorSettings) -> None:
    training = TrainingSpec(
        dataset="https://data.example/d.csv",
        dataset_credentials=SecretReference(secret_name="dataset-token"),
    )
    job = build_job(owner, training, 1, ModelVolume("c", False), settings)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "dataset-credentials")
    assert volume["secret"] == {"secretName": "dataset-token", "defaultMode": 0o440}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "dataset-credentials")
    assert mount == {
        "name": "dataset-credentials",
        "mountPath": "/var/run/secrets/modelservice/dataset",
        "readOnly": True,
    }
    assert "--dataset-credentials-dir=/var/run/secrets/modelservice/dataset" in container["args"]
    # The Secret is only named: no env var reads it, nothing else carries it.
    assert "dataset-token" not in json.dumps(container)


def test_model_credentials_only_for_a_downloaded_model(
    owner: Owner, settings: OperatorSettings
) -> None:
    serving = ServingSpec()
    ref = SecretReference(secret_name="model-basic")
    downloaded = build_deployment(
        owner, serving, 1, "", None, settings, model_uri="https://h/m.tgz", model_credentials=ref
    )
    pod = downloaded["spec"]["template"]["spec"]
    assert {
        "name": "model-credentials",
        "secret": {"secretName": "model-basic", "defaultMode": 0o440},
    } in pod["volumes"]
    (container,) = pod["containers"]
    assert "--model-credentials-dir=/var/run/secrets/modelservice/model" in container["args"]
    on_pvc = build_deployment(
        owner, serving, 1, "/models/v1", ModelVolume("c", True), settings, model_credentials=ref
    )
    assert "model-basic" not in json.dumps(on_pvc)
