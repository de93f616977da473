"""Each builder: spec in, child manifest out."""

from __future__ import annotations

import pytest

from modelservice_operator.builders.common import ModelVolume, Owner
from modelservice_operator.builders.deployment import build_deployment
from modelservice_operator.builders.hpa import build_hpa
from modelservice_operator.builders.job import build_job
from modelservice_operator.builders.pdb import build_pdb
from modelservice_operator.builders.pvc import build_pvc, store_claim
from modelservice_operator.builders.service import build_service, grpc_address, service_url
from modelservice_operator.models import ModelServiceSpec, ServingSpec, StorageSpec
from modelservice_operator.names import ANNOTATION_SPEC_HASH, training_hash
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def _owner_ref_ok(manifest: dict, owner: Owner) -> None:  # type: ignore[type-arg]
    (ref,) = manifest["metadata"]["ownerReferences"]
    assert ref["uid"] == owner.uid
    assert ref["controller"] is True
    assert ref["kind"] == "ModelService"
    assert manifest["metadata"]["namespace"] == owner.namespace


def test_job_is_named_by_training_hash_and_carries_version(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    assert spec.training is not None
    job = build_job(owner, spec.training, 3, ModelVolume("digits-models", False), settings)
    h = training_hash(spec.training.identity())
    assert job["metadata"]["name"] == f"digits-train-{h}"
    # historyLimit is bookkeeping: the name (and so the version) does not depend on it, and
    # names stay what operators before historyLimit computed (an upgrade retrains nothing).
    before = {k: v for k, v in spec.training.wire().items() if k != "historyLimit"}
    assert h == training_hash(before)
    other = spec.training.model_copy(update={"history_limit": 9})
    assert build_job(owner, other, 3, ModelVolume("digits-models", False), settings) == job
    assert len(h) == 8
    assert job["metadata"]["labels"]["modelservice.dev/version"] == "3"
    _owner_ref_ok(job, owner)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.local/serving:1"
    assert "--output=/models/v3" in c["args"]
    assert "--version=3" in c["args"]
    assert "--hidden-units=128,128" in c["args"]
    assert c["resources"]["requests"] == {
        "cpu": "1",
        "memory": "2Gi",
        "ephemeral-storage": "1Gi",
    }
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 2
    assert pod["securityContext"]["runAsUser"] == 1000
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # Same spec, same name: a restart finds the existing Job.
    again = build_job(owner, spec.training, 3, ModelVolume("digits-models", False), settings)
    assert again == job


def test_training_gpu_resources_and_scheduling(owner: Owner, settings: OperatorSettings) -> None:
    spec = ModelServiceSpec.model_validate(
        {
            "training": {
                "dataset": "mnist",
                "gpu": {"count": 2, "product": "NVIDIA-A100-SXM4-40GB"},
                "tolerations": [{"key": "team", "operator": "Equal", "value": "ml"}],
                "nodeSelector": {"zone": "a"},
                "activeDeadlineSeconds": 600,
                "backoffLimit": 0,
                "podAnnotations": {"sim.modelservice.dev/duration": "2s"},
                "env": [{"name": "HOME", "value": "/home/x"}],
            }
        }
    )
    assert spec.training is not None
    job = build_job(owner, spec.training, 1, ModelVolume("c", False), settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": 2,
        "ephemeral-storage": "3Gi",
    }
    assert pod["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert len(pod["tolerations"]) == 2
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "sim.modelservice.dev/duration": "2s"
    }
    env = pod["containers"][0]["env"]
    # The user's HOME replaces the operator's; the contract's variables stay.
    assert [e for e in env if e["name"] == "HOME"] == [{"name": "HOME", "value": "/home/x"}]
    assert env[-1] == {"name": "HOME", "value": "/home/x"}


def test_deployment_gpu_probes_security_and_replicas(
    owner: Owner, spec: ModelServiceSpec, settings: OperatorSettings
) -> None:
    d = build_deployment(
        owner, spec.serving, 2, "/models/v2", ModelVolume("digits-models", True), settings
    )
    _owner_ref_ok(d, owner)
    assert d["metadata"]["name"] == "digits-predictor"
    assert d["spec"]["replicas"] == 1
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 1, "ephemeral-storage": "2Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert "--grpc-port=8081" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert "--model-dir=/models/v2" in c["args"]
    assert "--model-name=digits" in c["args"]
    assert "--max-batch-size=32" in c["args"]
    assert "--max-latency-ms=5" in c["args"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert "/tmp" in mounts
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
    assert d["spec"]["template"]["metadata"]["labels"]["modelservice.dev/version"] == "2"


def test_deployment_hash_moves_with_serving_spec_not_replicas(
    owner: Owner, settings: OperatorSettings
) -> None:
    def h(serving: ServingSpec, version: int = 1) -> str:
        d = build_deployment(owner, serving, version, "/models/v1", None, settings)
        return str(d["metadata"]["annotations"][ANNOTATION_SPEC_HASH])

    base = ServingSpec(min_replicas=1, max_replicas=4)
    assert h(base) == h(ServingSpec(min_replicas=1, max_replicas=4))
    assert h(base) == h(ServingSpec(min_replicas=2, max_replicas=4))  # replicas: HPA's
    assert h(base) != h(ServingSpec.model_validate({"batching": {"maxBatchSize": 64}}))
    assert h(base) != h(base, version=2)


def test_mig_resource(owner: Owner, settings: OperatorSettings) -> None:
    serving = ServingSpec.model_validate(
        {"gpu": {"count": 1, "resource": "nvidia.com/mig-1g.10gb"}}
    )
    d = build_deployment(owner, serving, 1, "/models/v1", None, settings)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {
        "nvidia.com/mig-1g.10gb": 1,
        "ephemeral-storage": "2Gi",
    }
    assert "nodeSelector" not in d["spec"]["template"]["spec"]


def test_service_and_url(owner: Owner) -> None:
    svc = build_service(owner)
    _owner_ref_ok(svc, owner)
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]
    assert svc["spec"]["selector"] == {
        "modelservice.dev/name": "digits",
        "modelservice.dev/component": "predictor",
    }
    assert service_url(owner) == (
        "http://digits-predictor.ml.svc.cluster.local:8080/v2/models/digits"
    )
    assert grpc_address(owner) == "digits-predictor.ml.svc.cluster.local:8081"
    assert (
        grpc_address(owner, "example.internal") == "digits-predictor.ml.svc.example.internal:8081"
    )


def test_hpa_scales_on_cpu_only(owner: Owner) -> None:
    serving = ServingSpec.model_validate(
        {
            "minReplicas": 2,
            "maxReplicas": 6,
            "autoscaling": {
                "metric": "concurrency",  # needs KEDA: the HPA still scales on CPU
                "targetCPUUtilizationPercentage": 60,
                "scaleDownStabilizationSeconds": 30,
            },
        }
    )
    hpa = build_hpa(owner, serving)
    _owner_ref_ok(hpa, owner)
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["scaleTargetRef"]["name"] == "digits-predictor"
    (cpu,) = spec["metrics"]
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    # maxReplicas defaults to minReplicas; the CPU target to 80%.
    plain = build_hpa(owner, ServingSpec(min_replicas=3))["spec"]
    assert plain["maxReplicas"] == 3
    assert plain["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert "behavior" not in plain


def test_pdb_only_above_one_replica(owner: Owner) -> None:
    assert build_pdb(owner, ServingSpec(min_replicas=1)) is None
    pdb = build_pdb(owner, ServingSpec(min_replicas=2, max_replicas=3))
    assert pdb is not None
    _owner_ref_ok(pdb, owner)
    assert pdb["spec"]["maxUnavailable"] == 1


def test_pvc_defaults_and_existing_claim(owner: Owner) -> None:
    pvc = build_pvc(owner, StorageSpec(retain_on_delete=False))
    assert pvc is not None
    _owner_ref_ok(pvc, owner)
    assert pvc["metadata"]["name"] == "digits-models"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in pvc["spec"]
    fast = build_pvc(owner, StorageSpec(storage_class_name="fast", size="5Gi"))
    assert fast is not None
    assert fast["spec"]["storageClassName"] == "fast"
    mine = StorageSpec(existing_claim="shared")
    assert build_pvc(owner, mine) is None
    assert store_claim(owner, mine) == "shared"
