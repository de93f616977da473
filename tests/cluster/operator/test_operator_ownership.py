"""Ownership, versions, quiet idling and history, against the real control plane (kwok nodes).

- a ModelService deleted and created again over a store that keeps its versions trains the
  next free version, never a colliding one, and adopts nothing of its namesake;
- a child name held by an object it does not control is a ``ChildConflict`` that clears by
  itself once the object goes;
- an idle ModelService makes no API writes across several resyncs (the API server's own
  request counters);
- finished training Jobs beyond ``spec.training.historyLimit`` are deleted with their pods.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from opharness import MS, OperatorProcess, apply, sample_manifest, scrape_metrics, wait_until


def _version(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["labels"]["modelservice.dev/version"])


def _uid(ms: MS) -> str:
    return str(ms.get()["metadata"]["uid"])


def _controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == uid and r.get("controller") for r in refs)


def test_recreate_over_kept_store_trains_the_next_version(
    operator: OperatorProcess, namespace: str
) -> None:
    cluster = operator.cluster
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")
    first_uid = _uid(ms)
    cluster.kubectl("delete", "ms", "digits", "-n", namespace, "--wait=false")
    wait_until(
        "the first digits to go",
        lambda: (
            not cluster.kubectl(
                "get", "ms", "-n", namespace, "--ignore-not-found", "-o", "name"
            ).strip()
        ),
    )

    # The same name again, at once (its children may still be there), over a store that
    # still holds v1: the trainer of v1 finds its directory taken (simulated here).
    manifest = sample_manifest(accuracy=0.98)
    taken = {
        "status": "Failed",
        "reason": "OutputExists",
        "message": "output '/models/v1' already exists; versions are never overwritten",
        "highestVersion": 1,
    }
    manifest["spec"]["training"]["podAnnotations"].update(
        {
            "sim.modelservice.dev/store-holds": "1",
            "sim.modelservice.dev/store-message": json.dumps(taken),
        }
    )
    ms = apply(cluster, manifest, namespace)
    status = ms.wait(
        "Ready at version 2",
        lambda s: (
            s if s.get("phase") == "Ready" and (s.get("model") or {}).get("version") == 2 else None
        ),
        timeout=120,
    )
    second_uid = _uid(ms)
    assert second_uid != first_uid
    assert status["highestVersion"] == 2
    assert status["model"]["uri"] == "pvc://digits-models/v2"
    assert [v["version"] for v in status["versions"]] == [2]
    # Nothing of the first ModelService was adopted: every child is the new one's.
    # The store was kept (spec.storage.retainOnDelete, default true): no one controls it.
    (store,) = ms.children("pvc")
    assert not store["metadata"].get("ownerReferences")
    for kind in ("job", "deployment", "service", "hpa", "networkpolicy"):
        for child in ms.children(kind):
            if child["metadata"].get("deletionTimestamp"):
                continue
            assert _controlled_by(child, second_uid), (kind, child["metadata"]["name"])
    jobs = [j for j in ms.children("job") if _controlled_by(j, second_uid)]
    assert [_version(j) for j in jobs] == [2]
    (deploy,) = ms.children("deployment")
    assert _version(deploy) == 2

    # Events are posted in the background, after the status that they follow.
    wait_until(
        "the VersionTaken event", lambda: "VersionTaken" in ms.events(uid=second_uid).split(), 10
    )


def test_foreign_namesake_is_a_conflict_until_it_goes(
    operator: OperatorProcess, namespace: str
) -> None:
    cluster = operator.cluster
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "digits-predictor",
            "labels": {"modelservice.dev/name": "digits", "team": "someone-else"},
        },
        "spec": {"ports": [{"name": "web", "port": 9999}], "selector": {"app": "theirs"}},
    }
    cluster.apply(theirs, namespace=namespace)
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    ready = ms.wait(
        "ChildConflict",
        lambda s: next(
            (c for c in s.get("conditions") or [] if c["reason"] == "ChildConflict"), None
        ),
        timeout=90,
    )
    assert "Service digits-predictor exists and is not controlled" in ready["message"]
    svc = cluster.get("service", "digits-predictor", "-n", namespace)
    assert not svc["metadata"].get("ownerReferences")
    assert svc["spec"]["ports"][0]["port"] == 9999
    assert svc["spec"]["selector"] == {"app": "theirs"}

    cluster.kubectl("delete", "service", "digits-predictor", "-n", namespace)
    ms.wait_phase("Ready")
    (svc,) = ms.children("service")
    assert _controlled_by(svc, _uid(ms))
    assert svc["spec"]["ports"][0]["port"] == 8080


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _operator_writes(port: int) -> float:
    """Every write the operator's reconciler sent to the API server, by its own counter.

    The API server's ``apiserver_request_total`` has no namespace: other tests' cleanups and
    the controllers would be counted too, so the operator's counter is the exact one.
    """
    text = scrape_metrics(port)
    assert text is not None, "the operator's /metrics does not answer"
    total = 0.0
    for line in text.splitlines():
        if line.startswith("modelservice_operator_api_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("method") in WRITE_METHODS:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_idle_modelservice_makes_no_writes(
    metered: tuple[OperatorProcess, int], namespace: str
) -> None:
    """Resyncs (every second here) find everything as desired and write nothing."""
    operator, port = metered
    cluster = operator.cluster
    ms = apply(cluster, sample_manifest(accuracy=0.97), namespace)
    ms.wait_phase("Ready")
    time.sleep(3)  # the last watch events of the rollout settle
    before = _operator_writes(port)
    assert before > 0  # the counter sees the writes that made it Ready
    resyncs_before = len(operator.logs())
    time.sleep(8)
    assert _operator_writes(port) - before == 0, "the operator wrote while idle"
    assert "applied " not in operator.logs()[resyncs_before:]
    assert ms.status()["phase"] == "Ready"


def test_finished_jobs_beyond_the_history_limit_are_deleted(
    operator: OperatorProcess, namespace: str
) -> None:
    cluster = operator.cluster
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["training"]["historyLimit"] = 2
    ms = apply(cluster, manifest, namespace)
    for epochs in (2, 3, 4):
        ms.wait(f"a trained version before epochs={epochs}", lambda s: s.get("phase") == "Ready")
        manifest["spec"]["training"]["epochs"] = epochs
        apply(cluster, manifest, namespace)
        ms.wait(
            f"the version of epochs={epochs} trained",
            lambda s, e=epochs: (
                (s.get("training") or {}).get("epochs") == e
                and (s.get("training") or {}).get("state") == "Succeeded"
            ),
        )
    status = ms.wait(
        "version 4 Ready", lambda s: s if (s.get("model") or {}).get("version") == 4 else None
    )

    def pruned() -> list[int] | None:
        live = [j for j in ms.children("job") if not j["metadata"].get("deletionTimestamp")]
        versions = sorted(_version(j) for j in live)
        return versions if versions == [3, 4] else None

    wait_until("Jobs of v1 and v2 deleted", pruned, timeout=60)

    # Their pods went with them; their results stay in status.
    def pods_gone() -> bool:
        pods = cluster.get("pods", "-n", namespace, "-l", "modelservice.dev/component=training")
        live = {p["metadata"]["labels"].get("modelservice.dev/version") for p in pods["items"]}
        return live <= {"3", "4"}

    wait_until("pods of v1 and v2 deleted", pods_gone, timeout=60)
    assert [v["version"] for v in status["versions"]] == [1, 2, 3, 4]
    # Changing historyLimit is bookkeeping: no new training.
    manifest["spec"]["training"]["historyLimit"] = 1
    apply(cluster, manifest, namespace)
    wait_until(
        "only the current Job kept",
        lambda: (
            [_version(j) for j in ms.children("job") if not j["metadata"].get("deletionTimestamp")]
            == [4]
        ),
        timeout=60,
    )
    assert ms.status()["model"]["version"] == 4
    assert ms.status()["highestVersion"] == 4
