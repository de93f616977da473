"""The operator's command lines parse with the image's own flag parser (docs/contracts.md)."""

from __future__ import annotations

import pytest

from modelservice_operator.builders.common import ModelVolume, Owner
from modelservice_operator.builders.deployment import build_deployment
from modelservice_operator.builders.job import build_job
from modelservice_operator.models import ModelServiceSpec
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

serving_settings = pytest.importorskip("modelservice_serving.settings")


def test_training_args_parse(owner: Owner, settings: OperatorSettings) -> None:
    spec = ModelServiceSpec.model_validate(
        {
            "training": {
                "dataset": "digits",
                "epochs": 3,
                "hiddenUnits": [64, 32],
                "validationSplit": 0.1,
                "testSplit": 0.2,
                "seed": 7,
                "labelColumn": "y",
            }
        }
    )
    assert spec.training is not None
    job = build_job(owner, spec.training, 4, ModelVolume("c", False), settings)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "modelservice_serving"]
    assert container["args"][0] == "train"
    parsed = serving_settings.parse(serving_settings.TrainSettings, container["args"][1:])
    assert parsed.epochs == 3
    assert tuple(parsed.hidden_units) == (64, 32)
    assert str(parsed.output) == "/models/v4"
    assert parsed.version == 4
    assert parsed.label_column == "y"
    assert str(parsed.termination_log) == container["terminationMessagePath"]


def test_serving_args_parse(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    deployment = build_deployment(owner, spec.serving, 2, "/models/v2", None, settings)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "serve"
    parsed = serving_settings.parse(serving_settings.ServeSettings, container["args"][1:])
    assert str(parsed.model_dir) == "/models/v2"
    assert parsed.model_name == "digits"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert parsed.port == ports["http"]
    assert parsed.grpc_port == ports["grpc"]
    assert parsed.max_batch_size == 32
    assert (
        parsed.graceful_timeout_s + 5
        < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


SLOW_CLIENT_LIMITS = (
    "max_connections",
    "max_in_flight",
    "grpc_max_in_flight",
    "max_header_bytes",
    "header_timeout_s",
    "body_timeout_s",
    "keep_alive_timeout_s",
)


def test_serving_args_state_the_servers_slow_client_defaults(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    deployment = build_deployment(owner, spec.serving, 2, "/models/v2", None, settings)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = serving_settings.parse(serving_settings.ServeSettings, args[1:])
    fields = serving_settings.ServeSettings.model_fields
    for name in SLOW_CLIENT_LIMITS:
        assert any(arg.startswith("--" + name.replace("_", "-") + "=") for arg in args), name
        assert getattr(parsed, name) == fields[name].default, name


def test_serving_args_parse_for_a_remote_uri(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    uri = "https://models.example.com/digits/v3.tar.gz"
    deployment = build_deployment(owner, spec.serving, 3, "", None, settings, model_uri=uri)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    parsed = serving_settings.parse(serving_settings.ServeSettings, container["args"][1:])
    assert parsed.model_uri == uri
    assert parsed.model_dir is None
    assert str(parsed.termination_log) == "/dev/termination-log"
    # The cache directory the server writes into is the emptyDir, mounted writable.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-cache"]
    assert str(parsed.model_cache_dir) == mount["mountPath"]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model-cache"]
    assert "emptyDir" in volume
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
