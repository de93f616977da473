"""The training Job: one per training-spec hash, writing model version N to the store."""

from __future__ import annotations

from typing import Any

from modelservice_serving import contract
from modelservice_serving.contract import WORKER_PORT
from modelservice_serving.redact import redact_url

from ..models import TrainingSpec
from ..names import (
    ANNOTATION_TRAINING_HASH,
    LABEL_VERSION,
    job_name,
    training_hash,
)
from .common import (
    MODELS_MOUNT,
    ModelVolume,
    Owner,
    PodDefaults,
    child_metadata,
    container_env,
    container_resources,
    container_security_context,
    credentials_volume,
    ephemeral_storage,
    hardened_pod,
    pod_scheduling,
    pod_security_context,
    tmp_volume,
)
from .workers import worker_hosts, workers_service_name

__all__ = ["build_job", "training_args", "training_env", "version_dir"]

DEFAULT_TRAINING_REQUESTS = {"cpu": "1", "memory": "2Gi"}
# /tmp holds a downloaded dataset (train --dataset-max-bytes, 1 GiB) and Keras' caches.
TRAINING_TMP_SIZE = "2Gi"
TRAINING_EPHEMERAL_REQUEST = "1Gi"
TRAINING_EPHEMERAL_LIMIT = "3Gi"
# A Job that never ends holds its node (and GPU) forever: a day unless the spec says.
DEFAULT_ACTIVE_DEADLINE_SECONDS = 24 * 3600


def version_dir(version: int) -> str:
    """Directory of model version ``version`` inside the store mount."""
    return f"{MODELS_MOUNT}/v{version}"


def training_args(training: TrainingSpec, version: int) -> list[str]:
    """Arguments of ``python -m modelservice_serving`` for this training spec."""
    args = [
        "train",
        # Redacted: credentials come from spec.training.datasetCredentials, never the URI.
        f"--dataset={redact_url(training.dataset)}",
        f"--epochs={training.epochs}",
        f"--batch-size={training.batch_size}",
        f"--learning-rate={training.learning_rate}",
        "--hidden-units=" + ",".join(str(u) for u in training.hidden_units),
        f"--output={version_dir(version)}",
        f"--version={version}",
        f"--termination-log={contract.TERMINATION_LOG}",
    ]
    if training.label_column:
        args.append(f"--label-column={training.label_column}")
    if training.validation_split is not None:
        args.append(f"--validation-split={training.validation_split}")
    if training.test_split is not None:
        args.append(f"--test-split={training.test_split}")
    if training.seed is not None:
        args.append(f"--seed={training.seed}")
    return args


def training_env(training: TrainingSpec, version: int, job: str) -> list[dict[str, Any]]:
    """The environment of every training container, built-in trainer or the user's code.

    With several workers, ``TF_CONFIG`` names them all; the kubelet expands
    ``$(MSO_WORKER_INDEX)`` (the pod's completion index) when it starts the container, so any
    code under MultiWorkerMirroredStrategy finds its place without a helper.
    """
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": contract.ENV_OUTPUT, "value": version_dir(version)},
        {"name": contract.ENV_VERSION, "value": str(version)},
        {"name": contract.ENV_TERMINATION_LOG, "value": contract.TERMINATION_LOG},
        {"name": contract.ENV_DATASET, "value": training.dataset},
        {"name": contract.ENV_EPOCHS, "value": str(training.epochs)},
        {"name": contract.ENV_BATCH_SIZE, "value": str(training.batch_size)},
        {"name": contract.ENV_LEARNING_RATE, "value": str(training.learning_rate)},
    ]
    if training.worker_count > 1:
        hosts = worker_hosts(job, training.worker_count)
        tf_config = (
            '{"cluster": {"worker": ["' + '", "'.join(hosts) + '"]}, '
            '"task": {"type": "worker", "index": $(MSO_WORKER_INDEX)}}'
        )
        env += [
            {
                "name": "MSO_WORKER_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
            },
            {"name": contract.ENV_WORKER_HOSTS, "value": ",".join(hosts)},
            {"name": "TF_CONFIG", "value": tf_config},
            # Where the pods cannot resolve each other's names (no cluster DNS), the package's
            # workers.reachable_tf_config meets the peers by IP through the shared store.
            {"name": contract.ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": contract.ENV_WORKER_RENDEZVOUS,
                "value": f"{MODELS_MOUNT}/.workers/{job}-v{version}",
            },
        ]
    return env


# The Job controller's annotation (and label) with the pod's completion index.
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
# One failed worker fails the whole Job (and so the version): a collective cannot go on
# without it. A pod evicted or preempted (DisruptionTarget) is replaced instead.
POD_FAILURE_POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]},
        },
    ]
}


def build_job(
    owner: Owner,
    training: TrainingSpec,
    version: int,
    store: ModelVolume,
    defaults: PodDefaults,
) -> dict[str, Any]:
    """Return the Job that trains ``version`` from ``training`` into ``store``."""
    spec_hash = training_hash(training.identity())
    name = job_name(owner.name, spec_hash)
    version_label = {LABEL_VERSION: str(version)}
    pod_labels = {**child_metadata(owner, name, "training")["labels"], **version_label}
    tmp, tmp_mount = tmp_volume(TRAINING_TMP_SIZE)
    volumes: list[dict[str, Any]] = [store.volume(), tmp]
    mounts: list[dict[str, Any]] = [store.mount(), tmp_mount]
    args = training_args(training, version)
    env = training_env(training, version, name)
    if training.dataset_credentials is not None:
        volume, mount, directory = credentials_volume("dataset", training.dataset_credentials)
        volumes.append(volume)
        mounts.append(mount)
        args.append(f"--dataset-credentials-dir={directory}")
        # Your own training code finds the same files through the environment.
        env.append({"name": contract.ENV_DATASET_CREDENTIALS_DIR, "value": directory})
    resources = container_resources(
        training.resources, training.gpu, defaults, DEFAULT_TRAINING_REQUESTS
    )
    container: dict[str, Any] = {
        "name": "train",
        "image": training.image or defaults.default_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": training.command or ["python", "-m", "modelservice_serving"],
        "args": (training.args or []) if training.command else args,
        "env": container_env(training, env),
        "resources": ephemeral_storage(
            resources, TRAINING_EPHEMERAL_REQUEST, TRAINING_EPHEMERAL_LIMIT
        ),
        "securityContext": container_security_context(),
        "terminationMessagePath": contract.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = hardened_pod(
        {
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes,
            **pod_scheduling(training, defaults),
        }
    )
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if training.pod_annotations:
        template_meta["annotations"] = dict(training.pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": training.backoff_limit,
        "activeDeadlineSeconds": training.active_deadline_seconds
        or DEFAULT_ACTIVE_DEADLINE_SECONDS,
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if training.worker_count > 1:
        workers = training.worker_count
        container["ports"] = [
            {"name": "tf-worker", "containerPort": WORKER_PORT, "protocol": "TCP"}
        ]
        pod_spec["subdomain"] = workers_service_name(name)
        job_spec.update(
            completionMode="Indexed",
            completions=workers,
            parallelism=workers,
            podFailurePolicy=POD_FAILURE_POLICY,
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(
            owner,
            name,
            "training",
            labels=version_label,
            annotations={ANNOTATION_TRAINING_HASH: spec_hash},
        ),
        "spec": job_spec,
    }
