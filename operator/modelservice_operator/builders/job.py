"""The training Job: one per training-spec hash, writing model version N to the store."""

from __future__ import annotations

from typing import Any

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
    pod_scheduling,
    pod_security_context,
)

__all__ = ["build_job", "training_args", "version_dir"]

DEFAULT_TRAINING_REQUESTS = {"cpu": "1", "memory": "2Gi"}


def version_dir(version: int) -> str:
    """Directory of model version ``version`` inside the store mount."""
    return f"{MODELS_MOUNT}/v{version}"


def training_args(training: TrainingSpec, version: int) -> list[str]:
    """Arguments of ``python -m modelservice_serving`` for this training spec."""
    args = [
        "train",
        f"--dataset={training.dataset}",
        f"--epochs={training.epochs}",
        f"--batch-size={training.batch_size}",
        f"--learning-rate={training.learning_rate}",
        "--hidden-units=" + ",".join(str(u) for u in training.hidden_units),
        f"--output={version_dir(version)}",
        f"--version={version}",
        "--termination-log=/dev/termination-log",
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
    container: dict[str, Any] = {
        "name": "train",
        "image": training.image or defaults.default_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["python", "-m", "modelservice_serving"],
        "args": training_args(training, version),
        "env": container_env(training, [{"name": "HOME", "value": "/tmp"}]),
        "resources": container_resources(
            training.resources, training.gpu, defaults, DEFAULT_TRAINING_REQUESTS
        ),
        "securityContext": container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [store.mount(), {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [store.volume(), {"name": "tmp", "emptyDir": {}}],
        **pod_scheduling(training, defaults),
    }
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if training.pod_annotations:
        template_meta["annotations"] = dict(training.pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": training.backoff_limit,
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if training.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = training.active_deadline_seconds
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
