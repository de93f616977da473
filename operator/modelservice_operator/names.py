"""Deterministic names, labels and hashes of the children of a ModelService."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "ANNOTATION_RESULT",
    "ANNOTATION_SPEC_HASH",
    "ANNOTATION_TRAINING_HASH",
    "GROUP",
    "LABEL_COMPONENT",
    "LABEL_NAME",
    "LABEL_VERSION",
    "MANAGED_BY",
    "PLURAL",
    "VERSION",
    "common_labels",
    "job_name",
    "predictor_name",
    "predictor_selector",
    "pvc_name",
    "stable_hash",
    "training_hash",
]

GROUP = "modelservice.dev"
VERSION = "v1alpha1"
PLURAL = "modelservices"
KIND = "ModelService"
MANAGED_BY = "modelservice-operator"

LABEL_NAME = f"{GROUP}/name"
LABEL_COMPONENT = f"{GROUP}/component"
LABEL_VERSION = f"{GROUP}/version"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
ANNOTATION_TRAINING_HASH = f"{GROUP}/training-hash"
ANNOTATION_RESULT = f"{GROUP}/result"


def stable_hash(value: Any, length: int = 8) -> str:
    """Return a short hex SHA-256 of the canonical JSON form of ``value``."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def training_hash(training: dict[str, Any]) -> str:
    """Hash of the canonical training spec (wire form, defaults applied)."""
    return stable_hash(training)


def job_name(name: str, spec_hash: str) -> str:
    """Name of the training Job for one training-spec hash."""
    return f"{name}-train-{spec_hash}"


def predictor_name(name: str) -> str:
    """Name of the predictor Deployment, Service, HPA and PDB."""
    return f"{name}-predictor"


def pvc_name(name: str) -> str:
    """Name of the model-store PVC the operator creates."""
    return f"{name}-models"


def common_labels(name: str, component: str) -> dict[str, str]:
    """Labels on every child (and pod) of the ModelService ``name``."""
    return {
        "app.kubernetes.io/name": "modelservice",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_NAME: name,
        LABEL_COMPONENT: component,
    }


def predictor_selector(name: str) -> dict[str, str]:
    """The immutable selector of the predictor Deployment and Service."""
    return {LABEL_NAME: name, LABEL_COMPONENT: "predictor"}
