"""The model-store PersistentVolumeClaim the operator creates (unless one is named)."""

from __future__ import annotations

from typing import Any

from ..models import StorageSpec
from ..names import pvc_name
from .common import Owner, child_metadata

__all__ = ["build_pvc", "store_claim"]


def store_claim(owner: Owner, storage: StorageSpec) -> str:
    """Name of the claim holding model versions: the user's or the operator's."""
    return storage.existing_claim or pvc_name(owner.name)


def build_pvc(owner: Owner, storage: StorageSpec) -> dict[str, Any] | None:
    """Return the store PVC to create, or None when the user names an existing claim.

    A PVC's spec is immutable apart from growing the request, so it is only created.
    """
    if storage.existing_claim:
        return None
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(owner, pvc_name(owner.name), "storage"),
        "spec": spec,
    }
