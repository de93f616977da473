"""Pieces shared by the builders: owner, metadata, pod security, GPUs, model volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..models import GPUSpec, PodSpecFields, ResourceRequirements, SecretReference
from ..names import (
    ANNOTATION_SPEC_HASH,
    GROUP,
    KIND,
    VERSION,
    common_labels,
    predictor_name,
    stable_hash,
)

__all__ = [
    "CREDENTIALS_ROOT",
    "MODELS_MOUNT",
    "RUN_AS",
    "ModelVolume",
    "Owner",
    "PodDefaults",
    "child_metadata",
    "container_env",
    "container_resources",
    "container_security_context",
    "credentials_volume",
    "ephemeral_storage",
    "hardened_pod",
    "pod_scheduling",
    "pod_security_context",
    "predictor_child",
    "tmp_volume",
]

MODELS_MOUNT = "/models"
RUN_AS = 1000
# Where a download's credentials Secret is mounted (one directory per Secret).
CREDENTIALS_ROOT = "/var/run/secrets/modelservice"
EPHEMERAL = "ephemeral-storage"


class PodDefaults(Protocol):
    """What the builders take from the operator's configuration (passed in, never read)."""

    @property
    def default_image(self) -> str:
        """Image of training and serving pods whose spec names none."""
        ...

    @property
    def image_pull_policy(self) -> str:
        """Pull policy of every child pod."""
        ...

    @property
    def gpu_resource(self) -> str:
        """Extended resource of a GPU when the spec names none."""
        ...

    @property
    def gpu_toleration_key(self) -> str:
        """Taint key that GPU pods tolerate."""
        ...

    @property
    def gpu_product_label(self) -> str:
        """Node label that selects a GPU product."""
        ...


@dataclass(frozen=True)
class Owner:
    """The ModelService that owns a child: enough for metadata and ownerReferences."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """The controller ownerReference that makes deletion cascade."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ModelVolume:
    """A PVC mounted at ``/models`` and the directory the server or trainer uses."""

    claim: str
    read_only: bool
    sub_path: str = ""

    def volume(self) -> dict[str, Any]:
        """The pod volume."""
        return {
            "name": "models",
            "persistentVolumeClaim": {"claimName": self.claim, "readOnly": self.read_only},
        }

    def mount(self) -> dict[str, Any]:
        """The container volume mount."""
        mount: dict[str, Any] = {
            "name": "models",
            "mountPath": MODELS_MOUNT,
            "readOnly": self.read_only,
        }
        if self.sub_path:
            mount["subPath"] = self.sub_path
        return mount


def child_metadata(
    owner: Owner,
    name: str,
    component: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Metadata of a child: deterministic name, standard labels, controller reference."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**common_labels(owner.name, component), **(labels or {})},
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def predictor_child(
    owner: Owner, api_version: str, kind: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """A predictor-side child named after its ModelService, its spec hash the drift marker.

    The reconciler compares the annotation with the hash of the desired spec and patches only
    when they differ.
    """
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": child_metadata(
            owner,
            predictor_name(owner.name),
            "predictor",
            annotations={ANNOTATION_SPEC_HASH: stable_hash(spec)},
        ),
        "spec": spec,
    }


def pod_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard at pod level (UID 1000, fsGroup for the PVC)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard at container level, read-only root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _gpu_resource(gpu: GPUSpec, defaults: PodDefaults) -> str:
    return gpu.resource or defaults.gpu_resource


def container_resources(
    resources: ResourceRequirements | None,
    gpu: GPUSpec | None,
    defaults: PodDefaults,
    default_requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Container resources: the user's, plus GPUs as an extended-resource limit.

    Extended resources cannot be overcommitted, so the GPU count goes into limits (the API
    copies it to requests). ``default_requests`` apply only when the user gave no requests.
    """
    out: dict[str, Any] = {}
    if resources is not None:
        out = resources.wire()
    if not out.get("requests") and default_requests:
        out["requests"] = dict(default_requests)
    if gpu is not None and gpu.count > 0:
        limits = dict(out.get("limits") or {})
        limits[_gpu_resource(gpu, defaults)] = gpu.count
        out["limits"] = limits
        requests = out.get("requests")
        if requests is not None and _gpu_resource(gpu, defaults) in requests:
            requests[_gpu_resource(gpu, defaults)] = gpu.count
    return out


def pod_scheduling(pod: PodSpecFields, defaults: PodDefaults) -> dict[str, Any]:
    """Scheduling fields of a pod spec: selector, tolerations, affinity, priority, SA.

    A GPU ask adds the GPU taint's toleration and, with a product, the product node label.
    """
    out: dict[str, Any] = {}
    node_selector = dict(pod.node_selector or {})
    tolerations = [t.wire() for t in pod.tolerations or []]
    if pod.gpu is not None and pod.gpu.count > 0:
        if pod.gpu.product:
            node_selector[defaults.gpu_product_label] = pod.gpu.product
        gpu_toleration = {
            "key": defaults.gpu_toleration_key,
            "operator": "Exists",
            "effect": "NoSchedule",
        }
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = tolerations
    if pod.affinity:
        out["affinity"] = pod.affinity
    if pod.priority_class_name:
        out["priorityClassName"] = pod.priority_class_name
    if pod.service_account_name:
        out["serviceAccountName"] = pod.service_account_name
    return out


def container_env(pod: PodSpecFields, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Environment: the operator's own variables, then the user's (which win by name)."""
    user = [e.wire() for e in pod.env or []]
    names = {e["name"] for e in user}
    return [e for e in extra if e["name"] not in names] + user


def tmp_volume(size_limit: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The writable ``/tmp`` (the root filesystem is read-only), bounded: volume and mount."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": size_limit}},
        {"name": "tmp", "mountPath": "/tmp"},
    )


def credentials_volume(
    name: str, ref: SecretReference
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A credentials Secret as read-only files: volume, mount, and the directory.

    Files are readable by the pod's group only (fsGroup); the values never appear in the
    pod spec, arguments or environment.
    """
    directory = f"{CREDENTIALS_ROOT}/{name}"
    volume = {
        "name": f"{name}-credentials",
        "secret": {"secretName": ref.secret_name, "defaultMode": 0o440},
    }
    mount = {"name": f"{name}-credentials", "mountPath": directory, "readOnly": True}
    return volume, mount, directory


def ephemeral_storage(resources: dict[str, Any], request: str, limit: str) -> dict[str, Any]:
    """``resources`` with an ephemeral-storage request and limit, unless the user set either.

    Bounded local disk makes the kubelet evict a pod that fills its node's disk (logs,
    emptyDirs, the writable layer) instead of letting it starve its neighbours.
    """
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    if EPHEMERAL in requests or EPHEMERAL in limits:
        return resources
    requests[EPHEMERAL] = request
    limits[EPHEMERAL] = limit
    return {**resources, "requests": requests, "limits": limits}


def hardened_pod(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Pod-level defaults of every child pod: no API token mounted.

    Training and serving parse untrusted input (datasets, model archives, requests) and
    never call the Kubernetes API, so a compromised process gets no credential for it.
    """
    return {**pod_spec, "automountServiceAccountToken": False}
