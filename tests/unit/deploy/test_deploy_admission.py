"""The admission policy on ModelServices: values reach it, kustomize's copy is the default."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
import yaml

from .conftest import CHART, DEPLOY, Manifests, by_kind, one, parse_manifests

pytestmark = pytest.mark.unit

Helm = Callable[..., subprocess.CompletedProcess[str]]
KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _policy(manifests: Manifests) -> tuple[dict, dict]:  # type: ignore[type-arg]
    return one(manifests, KINDS[0]), one(manifests, KINDS[1])


def _rule(policy: dict, field: str) -> dict:  # type: ignore[type-arg]
    (rule,) = [
        r
        for r in policy["spec"]["validations"]
        if f"'spec.{field} '" in r.get("messageExpression", "")
        or r.get("message", "").startswith(f"spec.{field}")
    ]
    return rule


def test_kustomize_copy_is_the_chart_with_default_values(helm: Helm) -> None:
    result = helm(
        "template", "modelservice-operator", str(CHART),
        "--set", "fullnameOverride=modelservice-operator",
        "--show-only", "templates/admission-policy.yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    chart = parse_manifests(result.stdout)
    copy = parse_manifests((DEPLOY / "admission" / "admission-policy.yaml").read_text())
    for kind in KINDS:
        rendered, kept = one(chart, kind), one(copy, kind)
        assert kept["metadata"]["name"] == rendered["metadata"]["name"]
        assert kept["spec"] == rendered["spec"], kind
    default = yaml.safe_load((DEPLOY / "default" / "kustomization.yaml").read_text())
    assert "../admission" in default["resources"]


def test_defaults_allow_only_what_the_operator_chooses(
    render_chart: Callable[..., Manifests],
) -> None:
    policy, binding = _policy(render_chart())
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert "matchResources" not in binding["spec"]  # every namespace
    assert policy["spec"]["failurePolicy"] == "Fail"
    fields = [
        "training.image", "serving.image", "training.serviceAccountName",
        "serving.serviceAccountName", "training.priorityClassName", "serving.priorityClassName",
        "training.env[].valueFrom.secretKeyRef", "serving.env[].valueFrom.secretKeyRef",
        "training.env[].valueFrom.configMapKeyRef", "serving.env[].valueFrom.configMapKeyRef",
        "training.datasetCredentials.secretName", "model.credentials.secretName",
    ]  # fmt: skip
    for field in fields:
        rule = _rule(policy, field)
        assert rule["reason"] == "Forbidden"
        assert "refused by the rule" in (rule.get("messageExpression") or rule["message"])
    assert (
        "[].exists(p, object.spec.training.image.startsWith(p))"
        in _rule(policy, "training.image")["expression"]
    )


def test_values_reach_the_policy(render_chart: Callable[..., Manifests]) -> None:
    policy, binding = _policy(
        render_chart(
            sets=[
                "admissionPolicy.trainingImagePrefixes={registry.example.com/ml/,ghcr.io/acme/}",
                "admissionPolicy.serviceAccountNames={trainer}",
                "admissionPolicy.allowSecretKeyRefEnv=true",
                "admissionPolicy.validationActions={Warn,Audit}",
                "watchNamespaces={team-a,team-b}",
            ]
        )
    )
    image = _rule(policy, "training.image")
    assert '["registry.example.com/ml/","ghcr.io/acme/"].exists(' in image["expression"]
    assert "prefixes: registry.example.com/ml/, ghcr.io/acme/" in image["messageExpression"]
    assert 'in ["trainer"]' in _rule(policy, "serving.serviceAccountName")["expression"]
    # Secret env allowed: its rules are gone; ConfigMap env still refused.
    messages = [r.get("message", "") for r in policy["spec"]["validations"]]
    assert not [m for m in messages if "secretKeyRef" in m]
    assert [m for m in messages if "configMapKeyRef" in m]
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert selector == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    ]


def test_policy_can_be_turned_off(render_chart: Callable[..., Manifests]) -> None:
    manifests = render_chart(sets=["admissionPolicy.enabled=false"])
    assert not by_kind(manifests, KINDS[0])
    assert not by_kind(manifests, KINDS[1])


@pytest.mark.parametrize(
    "setting",
    [
        "admissionPolicy.trainingImagePrefixes[0]=",  # an empty prefix would allow every image
        "admissionPolicy.servingImagePrefixes[0]=a'b",  # no quote can break out of CEL
        "admissionPolicy.serviceAccountNames[0]=Not_A_Name",
        "admissionPolicy.validationActions={Deny,Warn}",
    ],
)
def test_schema_refuses_values_that_would_weaken_the_policy(helm: Helm, setting: str) -> None:
    result = helm("template", "mso", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "admissionPolicy" in result.stderr


def test_operator_network_policy_closes_the_pod(
    render_chart: Callable[..., Manifests], kustomize: Callable[[str], Manifests]
) -> None:
    closed = one(render_chart(), "NetworkPolicy")
    selector = one(render_chart(), "Deployment")["spec"]["selector"]["matchLabels"]
    assert closed["spec"]["podSelector"]["matchLabels"] == selector
    assert closed["spec"]["policyTypes"] == ["Ingress"]
    assert closed["spec"]["ingress"] == []  # metrics off: nothing comes in
    scraped = one(
        render_chart(
            sets=["metrics.service.enabled=true", "networkPolicy.metricsNamespaces={monitoring}"]
        ),
        "NetworkPolicy",
    )
    assert scraped["spec"]["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [
                {"podSelector": {}},
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                },
            ],
        }
    ]
    assert not by_kind(render_chart(sets=["networkPolicy.enabled=false"]), "NetworkPolicy")
    manifests = kustomize("default")
    policy = one(manifests, "NetworkPolicy")
    deployment = one(manifests, "Deployment")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
