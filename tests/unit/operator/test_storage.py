"""kopf keeps no diff base for this operator, and refuses handlers that would need one."""

from __future__ import annotations

import kopf
import pytest

from modelservice_operator import handlers  # registers the operator's handlers
from modelservice_operator.storage import NoDiffBase, assert_no_change_handlers

pytestmark = pytest.mark.unit


def test_the_essence_is_empty_and_nothing_is_stored() -> None:
    body = kopf.Body({"metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {"a": 1}})
    storage = NoDiffBase()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence({"spec": {"a": 1}}))
    assert not patch  # no annotation written


def test_the_operator_registers_no_change_handler() -> None:
    assert handlers.on_modelservice_event is not None
    assert_no_change_handlers(kopf.get_default_registry())


def test_a_change_handler_is_refused_by_name() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.update("modelservice.dev", "v1alpha1", "modelservices", registry=registry)
    def on_update(**_: object) -> None:
        return None

    with pytest.raises(RuntimeError, match=r"need a diff base: .*on_update"):
        assert_no_change_handlers(registry)
