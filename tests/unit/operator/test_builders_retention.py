"""The model store outlives its ModelService unless retainOnDelete is false."""

from __future__ import annotations

import pytest

from modelservice_operator.builders.common import Owner
from modelservice_operator.builders.pvc import (
    ANNOTATION_RETAINED,
    build_pvc,
    is_retained_store,
    owner_patch,
)
from modelservice_operator.models import StorageSpec

pytestmark = pytest.mark.unit


def test_retained_by_default_without_owner_reference(owner: Owner) -> None:
    pvc = build_pvc(owner, StorageSpec())
    assert pvc is not None
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["metadata"]["annotations"] == {ANNOTATION_RETAINED: "true"}
    # A ModelService of the same name and namespace, any uid, recognises it.
    assert is_retained_store(pvc, Owner(owner.name, owner.namespace, "a-new-uid"))
    assert not is_retained_store(pvc, Owner("other", owner.namespace, "x"))
    assert not is_retained_store(pvc, Owner(owner.name, "elsewhere", "x"))


def test_not_retained_goes_with_its_model_service(owner: Owner) -> None:
    pvc = build_pvc(owner, StorageSpec(retain_on_delete=False))
    assert pvc is not None
    (ref,) = pvc["metadata"]["ownerReferences"]
    assert ref["uid"] == owner.uid
    assert not is_retained_store(pvc, owner)


def test_switching_retention_patches_only_the_owner_reference(owner: Owner) -> None:
    owned = build_pvc(owner, StorageSpec(retain_on_delete=False))
    retained = build_pvc(owner, StorageSpec())
    assert owned is not None
    assert retained is not None
    assert owner_patch(owned, owner, StorageSpec(retain_on_delete=False)) is None
    assert owner_patch(retained, owner, StorageSpec()) is None
    assert owner_patch(owned, owner, StorageSpec()) == {
        "metadata": {"ownerReferences": None, "annotations": {ANNOTATION_RETAINED: "true"}}
    }
    assert owner_patch(retained, owner, StorageSpec(retain_on_delete=False)) == {
        "metadata": {
            "ownerReferences": [owner.reference()],
            "annotations": {ANNOTATION_RETAINED: None},
        }
    }
    assert owner_patch(owned, owner, StorageSpec(existing_claim="mine")) is None
