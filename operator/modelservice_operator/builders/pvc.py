"""The model-store PersistentVolumeClaim the operator creates (unless one is named).

With ``spec.storage.retainOnDelete`` (the default) the claim has no ownerReference, so
deleting the ModelService leaves it and every version in it (marked with
:data:`ANNOTATION_RETAINED`); a ModelService of the same name created later uses a store
claim that no one controls as it is (reconciler.children, ``usable_unowned``) and numbers new
versions above what it holds. The field takes effect when the claim is created.
"""

from __future__ import annotations

from typing import Any

from ..models import StorageSpec
from ..names import GROUP, pvc_name
from .common import Owner, child_metadata

__all__ = ["ANNOTATION_RETAINED", "build_pvc", "store_claim"]

ANNOTATION_RETAINED = f"{GROUP}/retain-on-delete"


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
    metadata = child_metadata(owner, pvc_name(owner.name), "storage")
    if storage.retain_on_delete:
        del metadata["ownerReferences"]  # garbage collection leaves it
        metadata["annotations"] = {ANNOTATION_RETAINED: "true"}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": spec,
    }
