"""The admission policy on the local API server: each refusal names the field and the rule.

The chart's ValidatingAdmissionPolicy is rendered with test values and bound to this module's
namespace only (watchNamespaces), so other tests on a shared cluster are not affected.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from opharness import REPO, sample_manifest

from localcluster.kubectl import KubeCluster, KubectlError, wait_for

CHART = REPO / "charts" / "modelservice-operator"
ALLOWED_IMAGE = "registry.example.com/ml/serving:1"
ALLOWED_SECRET = "mso-creds-dataset"


def _with(**training: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(accuracy=None))
    manifest["spec"]["training"].update(training)
    return manifest


def _serving(**serving: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(accuracy=None))
    manifest["spec"]["serving"].update(serving)
    return manifest


def _model(**model: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(accuracy=None))
    del manifest["spec"]["training"], manifest["spec"]["qualityGate"]
    manifest["spec"]["model"] = model
    return manifest


SECRET_ENV = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
CONFIG_ENV = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]

REFUSED = [
    (
        "training image",
        _with(image="evil.example/miner:1"),
        "spec.training.image evil.example/miner:1 is refused by the rule allowed training image "
        "prefixes: registry.example.com/ml/",
    ),
    (
        "serving image",
        _serving(image="docker.io/library/python:3"),
        "spec.serving.image docker.io/library/python:3 is refused by the rule allowed serving "
        "image prefixes: none",
    ),
    (
        "training service account",
        _with(serviceAccountName="admin"),
        "spec.training.serviceAccountName admin is refused by the rule allowed "
        "serviceAccountNames: trainer",
    ),
    (
        "serving service account",
        _serving(serviceAccountName="default"),
        "spec.serving.serviceAccountName default is refused by the rule allowed "
        "serviceAccountNames: trainer",
    ),
    (
        "priority class",
        _serving(priorityClassName="system-cluster-critical"),
        "spec.serving.priorityClassName system-cluster-critical is refused by the rule allowed "
        "priorityClassNames: batch-low",
    ),
    (
        "secret env",
        _with(env=SECRET_ENV),
        "spec.training.env[].valueFrom.secretKeyRef is refused by the rule "
        "allowSecretKeyRefEnv: false",
    ),
    (
        "serving secret env",
        _serving(env=SECRET_ENV),
        "spec.serving.env[].valueFrom.secretKeyRef is refused by the rule "
        "allowSecretKeyRefEnv: false",
    ),
    (
        "config map env",
        _serving(env=CONFIG_ENV),
        "spec.serving.env[].valueFrom.configMapKeyRef is refused by the rule "
        "allowConfigMapKeyRefEnv: false",
    ),
    (
        "dataset credentials",
        _with(datasetCredentials={"secretName": "db-admin"}),
        "spec.training.datasetCredentials.secretName db-admin is refused by the rule allowed "
        "credentials Secret prefixes: mso-creds-",
    ),
    (
        "model credentials",
        _model(uri="https://models.example.com/m.tgz", credentials={"secretName": "kubeconfig"}),
        "spec.model.credentials.secretName kubeconfig is refused by the rule allowed "
        "credentials Secret prefixes: mso-creds-",
    ),
]

ALLOWED = [
    ("the sample", sample_manifest(accuracy=None)),
    (
        "allowed values",
        _with(
            image=ALLOWED_IMAGE,
            serviceAccountName="trainer",
            priorityClassName="batch-low",
            env=[{"name": "A", "value": "b"}],
            datasetCredentials={"secretName": ALLOWED_SECRET},
        ),
    ),
]


def _dry_run(cluster: KubeCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(manifest)
    )


@pytest.fixture(scope="module")
def policy_namespace(crd: KubeCluster) -> Iterator[str]:
    """A namespace bound to the chart's policy, rendered with test values."""
    namespace = f"ms-admission-{uuid.uuid4().hex[:6]}"
    release = f"adm-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", namespace)
    rendered = crd.helm(
        "template", release, str(CHART), "--show-only", "templates/admission-policy.yaml",
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "admissionPolicy.trainingImagePrefixes={registry.example.com/ml/}",
        "--set", "admissionPolicy.serviceAccountNames={trainer}",
        "--set", "admissionPolicy.priorityClassNames={batch-low}",
        "--set", "admissionPolicy.credentialsSecretPrefixes={mso-creds-}",
    )  # fmt: skip
    names = [
        f"{d['kind'].lower()}/{d['metadata']['name']}" for d in yaml.safe_load_all(rendered) if d
    ]
    crd.kubectl("apply", "-f", "-", input=rendered)
    # The API server compiles a new policy and binding asynchronously: wait until it bites.
    probe = REFUSED[0][1]

    def refused() -> bool:
        try:
            _dry_run(crd, namespace, probe)
        except KubectlError:
            return True
        return False

    wait_for("the admission policy to be enforced", refused, timeout=60)
    yield namespace
    crd.kubectl("delete", *names, "--ignore-not-found", check=False)
    crd.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize(
    ("manifest", "message"), [(m, msg) for _, m, msg in REFUSED], ids=[i for i, _, _ in REFUSED]
)
def test_refused_with_the_field_and_the_rule(
    crd: KubeCluster, policy_namespace: str, manifest: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        _dry_run(crd, policy_namespace, manifest)
    text = " ".join(str(refused.value).split())
    assert "ValidatingAdmissionPolicy" in text, text
    assert message in text, text


@pytest.mark.parametrize(("manifest"), [m for _, m in ALLOWED], ids=[i for i, _ in ALLOWED])
def test_allowed_values_pass(crd: KubeCluster, policy_namespace: str, manifest: Any) -> None:
    _dry_run(crd, policy_namespace, manifest)


def test_other_namespaces_are_not_bound(crd: KubeCluster, shared_namespace: str) -> None:
    # The binding selects only the policy's namespace (watchNamespaces).
    _dry_run(crd, shared_namespace, REFUSED[0][1])
