"""The watch-fed cache: kopf-index lookups, and the overlay of the operator's own writes."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator.cache import MODELSERVICE_INDEX, IndexSource, index_id, snapshot

pytestmark = pytest.mark.unit


def _obj(kind: str, name: str, rv: str, owner: str = "digits") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": rv,
            "labels": {"modelservice.dev/name": owner},
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"rv": rv},
    }


def _source(children: list[dict[str, Any]]) -> IndexSource:
    # kopf's Index: a mapping of key -> Store (an iterable of the indexed values).
    indices: dict[str, dict[Any, list[dict[str, Any]]]] = {
        MODELSERVICE_INDEX: {("ml", "digits"): [snapshot(_obj("ModelService", "digits", "1"))]},
        index_id("Service"): {("ml", "digits"): [snapshot(c) for c in children]},
    }
    return IndexSource(indices)


def test_snapshot_drops_managed_fields() -> None:
    assert "managedFields" not in snapshot(_obj("Service", "a", "1"))["metadata"]


def test_snapshot_of_a_pod_keeps_no_spec() -> None:
    pod = {**_obj("Pod", "a-1", "1"), "status": {"phase": "Running"}}
    kept = snapshot(pod)
    assert "spec" not in kept
    assert kept["status"] == {"phase": "Running"}
    assert kept["metadata"]["labels"] == {"modelservice.dev/name": "digits"}
    assert snapshot(_obj("Deployment", "a", "1"))["spec"] == {"rv": "1"}


async def test_reads_come_from_the_index() -> None:
    source = _source([_obj("Service", "digits-predictor", "5")])
    assert source.model_services() == [("ml", "digits")]
    ms = await source.model_service("ml", "digits")
    assert ms is not None
    assert ms["metadata"]["resourceVersion"] == "1"
    assert await source.model_service("ml", "other") is None
    (svc,) = await source.children("Service", "ml", "digits")
    assert svc["spec"] == {"rv": "5"}
    assert await source.children("Service", "ml", "other") == []


async def test_own_writes_show_until_the_watch_catches_up() -> None:
    old = _obj("Service", "digits-predictor", "5")
    source = _source([old])
    source.written("Service", old, _obj("Service", "digits-predictor", "6"))
    new = _obj("Service", "digits-predictor-b", "7")
    source.written("Service", None, new)  # created: the cache has not seen it yet
    seen = {
        s["metadata"]["name"]: s["spec"]["rv"]
        for s in await source.children("Service", "ml", "digits")
    }
    assert seen == {"digits-predictor": "6", "digits-predictor-b": "7"}
    # The watch delivered rv 6: the cache is the truth again, the overlay entry is dropped.
    indices = source.indices
    indices[index_id("Service")][("ml", "digits")] = [
        snapshot(_obj("Service", "digits-predictor", "6"))
    ]
    (svc,) = [
        s
        for s in await source.children("Service", "ml", "digits")
        if s["metadata"]["name"] == "digits-predictor"
    ]
    assert svc["spec"] == {"rv": "6"}
    assert ("Service", "ml", "digits-predictor") not in source.overlay.entries
    # A delete hides the object while the cache still shows it.
    source.deleted("Service", _obj("Service", "digits-predictor", "6"))
    names = [s["metadata"]["name"] for s in await source.children("Service", "ml", "digits")]
    assert names == ["digits-predictor-b"]
    source.overlay.forget("ml", "digits")
    assert source.overlay.entries == {}


async def test_the_echo_of_an_own_write_is_known_until_forgotten() -> None:
    source = _source([])
    svc = ("Service", "ml", "digits-predictor")
    ms = ("ModelService", "ml", "digits")
    source.written("Service", None, _obj("Service", "digits-predictor", "5"))
    source.written("ModelService", None, _obj("ModelService", "digits", "8"))
    source.written("Service", None, _obj("Service", "other-predictor", "6", owner="other"))
    assert source.overlay.echo(svc, "5")
    assert not source.overlay.echo(svc, "4")  # another state: someone else's write
    assert not source.overlay.echo(svc, None)
    assert source.overlay.echo(ms, "8")
    # Kept after the cache caught up (the overlay entry is gone): the event may come later.
    source.indices[index_id("Service")][("ml", "digits")] = [
        snapshot(_obj("Service", "digits-predictor", "5"))
    ]
    assert len(await source.children("Service", "ml", "digits")) == 1
    assert svc not in source.overlay.entries
    assert source.overlay.echo(svc, "5")
    source.deleted("Service", _obj("Service", "digits-predictor", "5"))
    assert not source.overlay.echo(svc, "5")
    source.overlay.forget("ml", "digits")
    assert not source.overlay.echo(ms, "8")
    assert source.overlay.echo(("Service", "ml", "other-predictor"), "6")  # another's


async def test_pending_writes_are_found_by_their_modelservice_alone() -> None:
    source = _source([])
    for owner in ("digits", "other"):
        written = _obj("Service", f"{owner}-predictor", "7", owner=owner)
        source.written("Service", None, written)
    (mine,) = await source.children("Service", "ml", "digits")
    assert mine["metadata"]["name"] == "digits-predictor"
    source.indices[index_id("Job")] = {}
    assert await source.children("Job", "ml", "digits") == []  # another kind
    assert set(source.overlay.by_owner) == {("Service", "ml", "digits"), ("Service", "ml", "other")}
    # Once the watch shows the object, the entry goes, and with it its owner's group.
    source.indices[index_id("Service")][("ml", "digits")] = [
        snapshot(_obj("Service", "digits-predictor", "7"))
    ]
    source.indices[index_id("Service")][("ml", "other")] = [
        snapshot(_obj("Service", "other-predictor", "8", owner="other"))
    ]
    await source.children("Service", "ml", "digits")
    await source.children("Service", "ml", "other")
    assert source.overlay.by_owner == {}
    assert source.overlay.entries == {}
