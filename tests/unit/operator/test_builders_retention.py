"""The model store outlives its ModelService unless retainOnDelete is false."""

from __future__ import annotations

import pytest

from modelservice_operator.builders.common import Owner
from modelservice_operator.builders.pvc import ANNOTATION_RETAINED, build_pvc
from modelservice_operator.models import StorageSpec

pytestmark = pytest.mark.unit


def test_retained_by_default_without_owner_reference(owner: Owner) -> None:
    pvc = build_pvc(owner, StorageSpec())
    assert pvc is not None
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["metadata"]["annotations"] == {ANNOTATION_RETAINED: "true"}
    assert pvc["metadata"]["labels"]["modelservice.dev/name"] == owner.name


def test_not_retained_goes_with_its_model_service(owner: Owner) -> None:
    pvc = build_pvc(owner, StorageSpec(retain_on_delete=False))
    assert pvc is not None
    (ref,) = pvc["metadata"]["ownerReferences"]
    assert ref["uid"] == owner.uid
    assert ref["controller"] is True
    assert "annotations" not in pvc["metadata"]
