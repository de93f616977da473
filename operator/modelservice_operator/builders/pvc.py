"""The model-store PersistentVolumeClaim the operator creates (unless one is named).

With ``spec.storage.retainOnDelete`` (the default) the claim has no ownerReference, so
deleting the ModelService leaves it and every version in it; it carries the ModelService's
name label and :data:`ANNOTATION_RETAINED`, by which a ModelService of the same name created
later recognises it as its own store (:func:`is_retained_store`) and keeps using it.
"""

from __future__ import annotations

from typing import Any

from ..models import StorageSpec
from ..names import GROUP, LABEL_NAME, pvc_name
from .common import Owner, child_metadata

__all__ = ["ANNOTATION_RETAINED", "build_pvc", "is_retained_store", "owner_patch", "store_claim"]

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


def is_retained_store(pvc: dict[str, Any], owner: Owner) -> bool:
    """Whether ``pvc`` is a store kept for a ModelService of ``owner``'s name and namespace."""
    meta = pvc.get("metadata") or {}
    return (
        meta.get("name") == pvc_name(owner.name)
        and meta.get("namespace") == owner.namespace
        and (meta.get("labels") or {}).get(LABEL_NAME) == owner.name
        and (meta.get("annotations") or {}).get(ANNOTATION_RETAINED) == "true"
        and not any(ref.get("controller") for ref in meta.get("ownerReferences") or [])
    )


def owner_patch(pvc: dict[str, Any], owner: Owner, storage: StorageSpec) -> dict[str, Any] | None:
    """A merge patch that makes an existing store follow ``retainOnDelete``, or None.

    Turning retention on removes this ModelService's ownerReference (and marks the claim);
    turning it off adds the reference back, so the claim goes with the ModelService.
    """
    if storage.existing_claim:
        return None
    meta = pvc.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    owned = any(ref.get("uid") == owner.uid for ref in refs)
    if storage.retain_on_delete and owned:
        return {
            "metadata": {
                "ownerReferences": [r for r in refs if r.get("uid") != owner.uid] or None,
                "annotations": {ANNOTATION_RETAINED: "true"},
            }
        }
    if not storage.retain_on_delete and not owned and is_retained_store(pvc, owner):
        return {
            "metadata": {
                "ownerReferences": [*refs, owner.reference()],
                "annotations": {ANNOTATION_RETAINED: None},
            }
        }
    return None
