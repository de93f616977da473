"""The predictor's NetworkPolicy and the closed endpoint's server arguments."""

from __future__ import annotations

import pytest

from modelservice_operator.builders.common import ModelVolume, Owner
from modelservice_operator.builders.deployment import build_deployment
from modelservice_operator.builders.networkpolicy import build_network_policy
from modelservice_operator.models import ServingSpec
from modelservice_operator.names import ANNOTATION_SPEC_HASH
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

HTTP = [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]
METRICS = [{"port": "metrics", "protocol": "TCP"}]


def _ns(name: str) -> dict[str, dict[str, dict[str, str]]]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def test_default_admits_only_the_own_namespace(owner: Owner) -> None:
    policy = build_network_policy(owner, ServingSpec())
    assert policy["metadata"]["name"] == "digits-predictor"
    assert policy["metadata"]["namespace"] == "ml"
    assert policy["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    spec = policy["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {
            "modelservice.dev/name": "digits",
            "modelservice.dev/component": "predictor",
        }
    }
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": HTTP},
        {"from": [{"podSelector": {}}], "ports": METRICS},
    ]


def test_access_lists_namespaces_and_pods(owner: Owner) -> None:
    serving = ServingSpec.model_validate(
        {
            "access": {
                "sameNamespace": False,
                "namespaces": ["gateway"],
                "pods": [
                    {"matchLabels": {"app": "frontend"}},
                    {"namespace": "batch", "matchLabels": {"job": "scoring"}},
                ],
                "metricsNamespaces": ["monitoring"],
            }
        }
    )
    ingress = build_network_policy(owner, serving)["spec"]["ingress"]
    assert ingress == [
        {
            "from": [
                _ns("gateway"),
                {"podSelector": {"matchLabels": {"app": "frontend"}}},
                {"podSelector": {"matchLabels": {"job": "scoring"}}, **_ns("batch")},
            ],
            "ports": HTTP,
        },
        {"from": [{"podSelector": {}}, _ns("monitoring")], "ports": METRICS},
    ]


def test_nobody_admitted_when_access_is_empty(owner: Owner) -> None:
    serving = ServingSpec.model_validate({"access": {"sameNamespace": False}})
    ingress = build_network_policy(owner, serving)["spec"]["ingress"]
    assert [rule["ports"] for rule in ingress] == [METRICS]


def test_server_arguments_of_the_closed_endpoint(owner: Owner, settings: OperatorSettings) -> None:
    plain = build_deployment(owner, ServingSpec(), 1, "/models/v1", None, settings)
    (container,) = plain["spec"]["template"]["spec"]["containers"]
    assert "--metrics-port=9090" in container["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert not [a for a in container["args"] if a.startswith(("--auth", "--docs"))]
    serving = ServingSpec.model_validate(
        {"auth": {"secretRef": {"name": "digits-token", "key": "bearer"}}, "docs": True}
    )
    closed = build_deployment(owner, serving, 1, "/models/v1", ModelVolume("c", True), settings)
    pod = closed["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--auth-token-file=/var/run/secrets/modelservice/auth/bearer" in container["args"]
    assert "--docs=true" in container["args"]
    assert {
        "name": "auth-token",
        "secret": {
            "secretName": "digits-token",
            "items": [{"key": "bearer", "path": "bearer"}],
            "defaultMode": 0o440,
        },
    } in pod["volumes"]
    assert {
        "name": "auth-token",
        "mountPath": "/var/run/secrets/modelservice/auth",
        "readOnly": True,
    } in container["volumeMounts"]


def test_keda_scrapes_the_metrics_port_from_its_namespace(owner: Owner) -> None:
    """A predictor KEDA scales admits KEDA's namespace on the metrics port, and only there."""
    serving = ServingSpec.model_validate({"access": {"metricsNamespaces": ["monitoring"]}})
    ingress = build_network_policy(owner, serving, ["keda"])["spec"]["ingress"]
    assert ingress == [
        {"from": [{"podSelector": {}}], "ports": HTTP},
        {"from": [{"podSelector": {}}, _ns("keda"), _ns("monitoring")], "ports": METRICS},
    ]
