"""Invalid ModelServices are refused at apply time, each with a message naming the rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opharness import sample_manifest

from localcluster.kubectl import KubeCluster, KubectlError


def _with(path: str, value: Any) -> dict[str, Any]:
    """The sample with ``path`` (dotted, from the root) set to ``value`` (None deletes)."""
    manifest = copy.deepcopy(sample_manifest(accuracy=None))
    *parents, leaf = path.split(".")
    cur = manifest
    for p in parents:
        cur = cur.setdefault(p, {})
    if value is None:
        cur.pop(leaf, None)
    else:
        cur[leaf] = value
    return manifest


def _uri_only(**model: Any) -> dict[str, Any]:
    manifest = _with("spec.training", None)
    manifest["spec"].pop("qualityGate")
    manifest["spec"]["model"] = model
    return manifest


INVALID = [
    ("unknown field", _with("spec.serving.replicas", 3), 'unknown field "spec.serving.replicas"'),
    (
        "min above max",
        _with("spec.serving.minReplicas", 5),
        "spec.serving.minReplicas must be <= spec.serving.maxReplicas",
    ),
    ("zero epochs", _with("spec.training.epochs", 0), "spec.training.epochs"),
    ("negative batch", _with("spec.training.batchSize", -1), "spec.training.batchSize"),
    ("minimum above 1", _with("spec.qualityGate.minimum", 1.5), "spec.qualityGate.minimum"),
    (
        "neither training nor uri",
        _with("spec.training", None),
        "spec.training or spec.model.uri is required",
    ),
    (
        "training and uri",
        _with("spec.model", {"uri": "pvc://models/digits"}),
        "spec.training and spec.model.uri are mutually exclusive",
    ),
    (
        "product without GPUs",
        _with("spec.serving.gpu", {"count": 0, "product": "NVIDIA-H100-80GB-HBM3"}),
        "spec.serving.gpu.product needs spec.serving.gpu.count > 0",
    ),
    (
        "bad uri scheme",
        _uri_only(uri="ftp://x/y"),
        "spec.model.uri must be pvc://claim/path, http(s)://host[:port]/archive.tar.gz",
    ),
    (
        "presigned model uri",
        _uri_only(uri="https://b.s3.amazonaws.com/m.tgz?X-Amz-Signature=abc"),
        "spec.model.uri must not carry a query string or fragment",
    ),
    (
        "dataset with user info",
        _with("spec.training.dataset", "https://user:pw@data.example/d.csv"),
        "spec.training.dataset must not carry credentials",
    ),
    (
        "dataset with a token in the query",
        _with("spec.training.dataset", "https://data.example/d.csv?token=abc"),
        "spec.training.dataset must not carry credentials",
    ),
    ("empty hidden units", _with("spec.training.hiddenUnits", []), "spec.training.hiddenUnits"),
    (
        "too many hidden layers",
        _with("spec.training.hiddenUnits", [8] * 17),
        "spec.training.hiddenUnits",
    ),
    ("zero units", _with("spec.training.hiddenUnits", [0]), "spec.training.hiddenUnits[0]"),
    ("pin alone", _uri_only(version=2), "spec.training or spec.model.uri is required"),
    ("empty model", _uri_only(), "spec.model needs uri or version"),
    (
        "bad quantity",
        _with("spec.training.resources", {"requests": {"memory": "two gigs"}}),
        "spec.training.resources.requests: every value must be a Kubernetes quantity",
    ),
    (
        "splits sum to 1",
        _with("spec.training.validationSplit", 0.5) | {},
        None,  # replaced below
    ),
    ("bad gate metric", _with("spec.qualityGate.metric", "f1"), "spec.qualityGate.metric"),
    (
        "storage with existing claim and size",
        _with("spec.storage", {"existingClaim": "mine", "size": "5Gi"}),
        "spec.storage.existingClaim excludes size",
    ),
    (
        "name too long",
        _with("metadata.name", "a" * 46),
        "metadata.name must be a DNS-1035 label",
    ),
    ("zero min replicas", _with("spec.serving.minReplicas", 0), "spec.serving.minReplicas"),
    (
        "minimum with loss",
        _with("spec.qualityGate", {"metric": "loss", "minimum": 0.5}),
        "spec.qualityGate.minimum is for metric accuracy (higher is better); metric loss takes "
        "maximum",
    ),
    (
        "maximum with accuracy",
        _with("spec.qualityGate", {"minimum": 0.9, "maximum": 0.3}),
        "spec.qualityGate.maximum is for metric loss (lower is better); metric accuracy takes "
        "minimum",
    ),
    (
        "loss without maximum",
        _with("spec.qualityGate", {"metric": "loss"}),
        "spec.qualityGate needs minimum (metric accuracy, higher is better) or maximum",
    ),
    (
        "negative maximum",
        _with("spec.qualityGate", {"metric": "loss", "maximum": -0.1}),
        "spec.qualityGate.maximum",
    ),
]
INVALID += [
    (
        "own command without image",
        _with("spec.training.command", ["python", "/app/train.py"]),
        "spec.training.command needs spec.training.image",
    ),
    (
        "args without command",
        _with("spec.training.args", ["--epochs=3"]),
        "spec.training.args needs spec.training.command",
    ),
    ("zero workers", _with("spec.training.workers", 0), "spec.training.workers"),
]
# Two fields at once for the split rule.
_split = _with("spec.training.validationSplit", 0.5)
_split["spec"]["training"]["testSplit"] = 0.5
INVALID[18] = (
    "splits sum to 1",
    _split,
    "spec.training.validationSplit + spec.training.testSplit must be below 1",
)


@pytest.mark.parametrize(
    ("manifest", "message"), [(m, msg) for _, m, msg in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_manifest_is_refused(
    crd: KubeCluster, shared_namespace: str, manifest: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        crd.kubectl(
            "apply", "--validate=strict", "-n", shared_namespace, "-f", "-", input=_json(manifest)
        )
    assert message in str(refused.value), str(refused.value)


def test_sample_is_accepted_as_written(crd: KubeCluster, namespace: str) -> None:
    crd.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=_json(sample_manifest(accuracy=None)),
    )
    loss_gate = _with("spec.qualityGate", {"metric": "loss", "maximum": 0.3})
    crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=_json(loss_gate))
    for archive in ("https://models.example.com:8443/digits/v3.tar.gz", "http://models/m.zip"):
        remote = _uri_only(uri=archive)
        crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=_json(remote))
    uri = _uri_only(uri="pvc://models/digits/v1", version=3)
    crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=_json(uri))


def test_explain_documents_spec(crd: KubeCluster) -> None:
    text = crd.kubectl("explain", "ms.spec", "--recursive")
    for field in ("training", "qualityGate", "serving", "storage", "model", "hiddenUnits"):
        assert field in text
    described = crd.kubectl("explain", "ms.spec.serving.gpu.product")
    assert "nvidia.com/gpu.product" in described


def _json(manifest: dict[str, Any]) -> str:
    import json

    return json.dumps(manifest)
