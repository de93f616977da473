"""The reconcile loop against an in-memory API: idempotence, versions, gate, rollouts."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fakekube import FakeKube

from modelservice_operator.kube import ApiError
from modelservice_operator.reconciler import merge_patch_diff, reconcile
from modelservice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

NS = "ml"


def _ms(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelservice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "digits", "namespace": NS, "uid": "ms-uid", "generation": 1},
        "spec": spec,
    }


@pytest.fixture
def kube(sample: dict[str, Any]) -> FakeKube:
    fake = FakeKube()
    fake.put(_ms(copy.deepcopy(sample["spec"])))
    return fake


async def run(kube: FakeKube) -> dict[str, Any]:
    body = kube.objects[("ModelService", NS, "digits")]
    await reconcile(kube, copy.deepcopy(body), OperatorSettings())  # type: ignore[arg-type]
    return kube.objects[("ModelService", NS, "digits")]


def finish_job(kube: FakeKube, accuracy: float | None, ok: bool = True) -> dict[str, Any]:
    (job,) = [j for j in kube.of("Job") if not j.get("status")]
    version = int(job["metadata"]["labels"]["modelservice.dev/version"])
    if ok:
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        message = json.dumps(
            {
                "status": "Succeeded",
                "version": version,
                "uri": f"/models/v{version}",
                "metrics": {"accuracy": accuracy, "loss": 0.1},
                "trainedAt": "2026-11-28T12:00:00Z",
            }
        )
        state = {"terminated": {"reason": "Completed", "exitCode": 0, "message": message}}
        phase = "Succeeded"
    else:
        job["status"] = {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        }
        message = json.dumps({"status": "Failed", "reason": "DatasetNotFound", "message": "nope"})
        state = {"terminated": {"reason": "Error", "exitCode": 1, "message": message}}
        phase = "Failed"
    kube.put(
        {
            "kind": "Pod",
            "metadata": {
                "name": job["metadata"]["name"] + "-abcde",
                "namespace": NS,
                "labels": {"job-name": job["metadata"]["name"], "modelservice.dev/name": "digits"},
                "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
            },
            "status": {"phase": phase, "containerStatuses": [{"name": "train", "state": state}]},
        }
    )
    return job


def roll_out(kube: FakeKube) -> None:
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    n = d["spec"]["replicas"]
    d["status"] = {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
    }


def conditions(ms: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ms["status"]["conditions"]}


async def test_sample_trains_gates_and_serves(kube: FakeKube) -> None:
    ms = await run(kube)
    (job,) = kube.of("Job")
    assert job["metadata"]["labels"]["modelservice.dev/version"] == "1"
    assert ms["status"]["phase"] == "Pending"
    assert ms["status"]["training"]["jobName"] == job["metadata"]["name"]
    assert [p["metadata"]["name"] for p in kube.of("PersistentVolumeClaim")] == ["digits-models"]
    assert kube.of("Deployment") == []

    finish_job(kube, 0.97)
    ms = await run(kube)
    assert ms["status"]["model"]["version"] == 1
    assert ms["status"]["model"]["metrics"]["accuracy"] == 0.97
    assert ms["status"]["model"]["uri"] == "pvc://digits-models/v1"
    assert "modelservice.dev/result" in kube.of("Job")[0]["metadata"]["annotations"]
    assert ms["status"]["phase"] == "Deploying"
    assert len(kube.of("Deployment")) == 1
    assert len(kube.of("Service")) == 1
    assert len(kube.of("HorizontalPodAutoscaler")) == 1
    assert kube.of("PodDisruptionBudget") == []

    roll_out(kube)
    ms = await run(kube)
    assert ms["status"]["phase"] == "Ready"
    c = conditions(ms)
    assert {k: v["status"] for k, v in c.items()} == {
        "Trained": "True",
        "QualityGatePassed": "True",
        "ServingReady": "True",
        "Ready": "True",
    }
    assert ms["status"]["serving"]["ready"] == "1/1"
    assert ms["status"]["serving"]["url"].endswith(":8080/v2/models/digits")
    assert ms["status"]["serving"]["grpcAddress"].endswith("-predictor.ml.svc.cluster.local:8081")
    assert ms["status"]["observedGeneration"] == 1

    # Level-based and quiet: nothing changes, nothing is written.
    kube.writes.clear()
    await run(kube)
    assert kube.writes == []


async def test_restart_after_job_create_keeps_version(kube: FakeKube) -> None:
    await run(kube)
    # The status patch "never happened": a restarted operator sees only the Job.
    kube.objects[("ModelService", NS, "digits")].pop("status")
    await run(kube)
    (job,) = kube.of("Job")
    assert job["metadata"]["labels"]["modelservice.dev/version"] == "1"


async def test_failed_gate_keeps_previous_version(kube: FakeKube) -> None:
    await run(kube)
    finish_job(kube, 0.97)
    await run(kube)
    roll_out(kube)
    await run(kube)
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["training"]["epochs"] = 1
    ms["metadata"]["generation"] = 2
    await run(kube)
    assert len(kube.of("Job")) == 2
    finish_job(kube, 0.5)
    ms = await run(kube)
    assert ms["status"]["model"]["version"] == 1
    gate = conditions(ms)["QualityGatePassed"]
    assert gate["status"] == "False"
    assert "0.5" in gate["message"]
    assert "0.9" in gate["message"]
    assert ms["status"]["phase"] == "Degraded"
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    assert d["metadata"]["labels"]["modelservice.dev/version"] == "1"
    assert [v["qualityGate"] for v in ms["status"]["versions"]] == ["Passed", "Failed"]

    # A further training spec gets the next version, never a reused one.
    ms["spec"]["training"]["epochs"] = 7
    await run(kube)
    jobs = sorted(int(j["metadata"]["labels"]["modelservice.dev/version"]) for j in kube.of("Job"))
    assert jobs == [1, 2, 3]


async def test_serving_change_rolls_without_new_job(kube: FakeKube) -> None:
    await run(kube)
    finish_job(kube, 0.97)
    await run(kube)
    roll_out(kube)
    await run(kube)
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    d["spec"]["replicas"] = 3  # the HPA scaled it
    before = d["metadata"]["annotations"]["modelservice.dev/spec-hash"]
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["serving"]["batching"]["maxBatchSize"] = 64
    ms["spec"]["serving"]["minReplicas"] = 2
    await run(kube)
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    assert d["metadata"]["annotations"]["modelservice.dev/spec-hash"] != before
    assert "--max-batch-size=64" in d["spec"]["template"]["spec"]["containers"][0]["args"]
    assert d["spec"]["replicas"] == 3  # never fights the HPA
    assert len(kube.of("Job")) == 1
    assert (
        kube.objects[("HorizontalPodAutoscaler", NS, "digits-predictor")]["spec"]["minReplicas"]
        == 2
    )
    assert len(kube.of("PodDisruptionBudget")) == 1
    ms["spec"]["serving"]["minReplicas"] = 1
    await run(kube)
    assert kube.of("PodDisruptionBudget") == []


async def test_failed_job_is_failed(kube: FakeKube) -> None:
    await run(kube)
    finish_job(kube, None, ok=False)
    ms = await run(kube)
    assert ms["status"]["phase"] == "Failed"
    ready = conditions(ms)["Ready"]
    assert ready["reason"] == "BackoffLimitExceeded"
    assert "DatasetNotFound: nope" in ready["message"]
    assert ("Warning", "BackoffLimitExceeded") in [(t, r) for t, r, _ in kube.events]


async def test_uri_model_without_training() -> None:
    kube = FakeKube()
    kube.put(_ms({"model": {"uri": "pvc://models/digits/v7"}, "serving": {"minReplicas": 2}}))
    ms = await run(kube)
    assert kube.of("Job") == []
    assert kube.of("PersistentVolumeClaim") == []
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    pod = d["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert "--model-dir=/models/digits/v7" in pod["containers"][0]["args"]
    assert conditions(ms)["Trained"]["reason"] == "ModelProvided"
    kube.objects[("ModelService", NS, "digits")]["spec"]["model"]["uri"] = "gs://b/m"
    ms = await run(kube)
    assert ms["status"]["phase"] == "Failed"
    assert conditions(ms)["Ready"]["reason"] == "UnsupportedModelURI"
    assert (
        "supported today: pvc://claim/path, and http://, https:// or s3://"
        in (conditions(ms)["Ready"]["message"])
    )


async def test_https_model_is_downloaded_by_the_server() -> None:
    kube = FakeKube()
    uri = "https://models.example.com/digits/v3.tar.gz?sig=abc"
    kube.put(_ms({"model": {"uri": uri, "version": 3}}))
    ms = await run(kube)
    assert kube.of("PersistentVolumeClaim") == []
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    pod = d["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    # The query string (a signature) is redacted wherever the operator writes the URI.
    shown = "https://models.example.com/digits/v3.tar.gz?REDACTED"
    assert f"--model-uri={shown}" in args
    assert not [a for a in args if a.startswith("--model-dir")]
    assert pod["volumes"][0] == {"name": "model-cache", "emptyDir": {"sizeLimit": "2Gi"}}
    assert d["metadata"]["labels"]["modelservice.dev/version"] == "3"
    assert ms["status"]["model"] == {"version": 3, "uri": shown}
    written = json.dumps([o for k, o in kube.objects.items() if k[0] != "ModelService"])
    assert "sig=abc" not in written + json.dumps(ms["status"])
    roll_out(kube)
    ms = await run(kube)
    assert ms["status"]["phase"] == "Ready"


async def test_pin_rolls_back_without_retraining(kube: FakeKube) -> None:
    await run(kube)
    finish_job(kube, 0.95)
    await run(kube)
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["training"]["epochs"] = 9
    await run(kube)
    finish_job(kube, 0.96)
    ms = await run(kube)
    assert ms["status"]["model"]["version"] == 2
    ms["spec"]["model"] = {"version": 1}
    ms = await run(kube)
    assert len(kube.of("Job")) == 2
    assert ms["status"]["model"]["version"] == 1
    assert ms["status"]["model"]["metrics"]["accuracy"] == 0.95
    d = kube.objects[("Deployment", NS, "digits-predictor")]
    assert "--model-dir=/models/v1" in d["spec"]["template"]["spec"]["containers"][0]["args"]
    del ms["spec"]["model"]
    ms = await run(kube)
    assert ms["status"]["model"]["version"] == 2


def test_merge_patch_diff() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 2}, "e": [1, 2], "f": "x"}
    assert merge_patch_diff(old, new) == {"b": {"d": None}, "e": [1, 2], "f": "x"}
    assert merge_patch_diff(new, new) == {}


async def test_refused_child_is_reported_not_retried_forever(kube: FakeKube) -> None:
    real_create = kube.create_new

    async def refuse_jobs(manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Job":
            raise ApiError(422, 'Job.batch "x" is invalid: spec.template...: Invalid value')
        return await real_create(manifest)

    kube.create_new = refuse_jobs  # type: ignore[method-assign]
    ms = await run(kube)
    assert ms["status"]["phase"] == "Failed"
    ready = conditions(ms)["Ready"]
    assert ready["reason"] == "ChildRejected"
    assert "Invalid value" in ready["message"]


async def test_superseded_running_job_is_stopped(kube: FakeKube) -> None:
    await run(kube)
    (first,) = kube.of("Job")
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["training"]["epochs"] = 2
    await run(kube)
    (second,) = kube.of("Job")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["metadata"]["labels"]["modelservice.dev/version"] == "2"
    assert ("Normal", "TrainingSuperseded") in [(t, r) for t, r, _ in kube.events]
    # A finished Job is history and stays.
    finish_job(kube, 0.95)
    ms["spec"]["training"]["epochs"] = 3
    await run(kube)
    assert len(kube.of("Job")) == 2


@pytest.mark.parametrize(("loss", "passed"), [(0.1, True), (0.3, True), (0.31, False)])
async def test_loss_gate_promotes_at_or_below_maximum(
    kube: FakeKube, loss: float, passed: bool
) -> None:
    ms = kube.objects[("ModelService", NS, "digits")]
    ms["spec"]["qualityGate"] = {"metric": "loss", "maximum": 0.3}
    await run(kube)
    job = finish_job(kube, 0.5)  # accuracy is not the gate here
    pod = kube.objects[("Pod", NS, job["metadata"]["name"] + "-abcde")]
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    state["message"] = state["message"].replace('"loss": 0.1', f'"loss": {loss}')
    ms = await run(kube)
    gate = conditions(ms)["QualityGatePassed"]
    assert (gate["status"] == "True") is passed
    op = "<=" if passed else ">"
    assert f"loss {loss:g} {op} maximum 0.3 (lower is better)" in gate["message"]
    assert ms["status"]["versions"][0]["qualityGate"] == ("Passed" if passed else "Failed")
    assert bool(kube.of("Deployment")) is passed


async def test_live_training_progress_reaches_status(kube: FakeKube) -> None:
    ms = await run(kube)
    (job,) = kube.of("Job")
    pod = job["metadata"]["name"] + "-live1"
    kube.put(
        {
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": NS,
                "labels": {"job-name": job["metadata"]["name"], "modelservice.dev/name": "digits"},
                "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "train", "ready": True, "state": {"running": {}}}],
            },
        }
    )
    kube.logs[pod] = "\n".join(
        [
            "Epoch 2/5 (keras noise)",
            json.dumps({"event": "epoch", "epoch": 2, "epochs": 5, "loss": 0.5, "accuracy": 0.8}),
            json.dumps({"event": "epoch", "epoch": 3, "epochs": 5, "loss": 0.3, "accuracy": 0.9}),
        ]
    )
    ms = await run(kube)
    training = ms["status"]["training"]
    assert (training["epoch"], training["epochs"]) == (3, 5)
    assert (training["loss"], training["accuracy"]) == (0.3, 0.9)
    assert ms["status"]["phase"] == "Training"
    trained = next(c for c in ms["status"]["conditions"] if c["type"] == "Trained")
    assert trained["reason"] == "Training"
    assert "epoch 3/5, loss 0.3, accuracy 0.9" in trained["message"]

    # The pod is gone with its log by the time the Job completes: all epochs ran all the same.
    del kube.objects[("Pod", NS, pod)]
    finish_job(kube, accuracy=0.97)
    ms = await run(kube)
    assert ms["status"]["training"]["epoch"] == ms["status"]["training"]["epochs"] == 5


async def test_store_is_kept_unless_asked(kube: FakeKube) -> None:
    await run(kube)
    (pvc,) = kube.of("PersistentVolumeClaim")
    assert "ownerReferences" not in pvc["metadata"]  # retained by default
    await run(kube)  # an uncontrolled store of this name is used, not a conflict
    ms = kube.objects[("ModelService", NS, "digits")]
    assert "ChildConflict" not in json.dumps(ms["status"])


async def test_predictor_is_closed_by_a_network_policy(kube: FakeKube) -> None:
    await run(kube)
    finish_job(kube, 0.97)
    await run(kube)
    (policy,) = kube.of("NetworkPolicy")
    assert policy["metadata"]["name"] == "digits-predictor"
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == ["ms-uid"]
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


async def test_lineage_of_a_version_and_events_on_promotion_and_rollback(kube: FakeKube) -> None:
    await run(kube)
    job = finish_job(kube, 0.95)
    (pod,) = [
        p for p in kube.of("Pod") if p["metadata"]["labels"]["job-name"] == job["metadata"]["name"]
    ]
    state = pod["status"]["containerStatuses"][0]
    message = json.loads(state["state"]["terminated"]["message"])
    message |= {
        "datasetUri": "https://data.example/d.csv",
        "datasetSha256": "ab" * 32,
        "hyperparameters": {"epochs": 5, "batchSize": 32},
    }
    state["state"]["terminated"]["message"] = json.dumps(message)
    state["imageID"] = "registry.local/serving@sha256:" + "cd" * 32
    ms = await run(kube)
    (record,) = ms["status"]["versions"]
    assert record["datasetUri"] == "https://data.example/d.csv"
    assert record["datasetSha256"] == "ab" * 32
    assert record["hyperparameters"] == {"epochs": 5, "batchSize": 32}
    assert record["imageDigest"] == "registry.local/serving@sha256:" + "cd" * 32
    assert record["qualityGate"] == "Passed"
    assert record["gatedAt"]
    assert ("Normal", "Promoted", "version 1 promoted to serving (accuracy 0.95)") in kube.events
    gated_at = record["gatedAt"]
    ms = await run(kube)
    assert ms["status"]["versions"][0]["gatedAt"] == gated_at  # the first verdict's time
    ms["spec"]["training"]["epochs"] = 9
    await run(kube)
    finish_job(kube, 0.96)
    await run(kube)
    promoted = "version 2 promoted to serving (accuracy 0.96), replacing version 1"
    assert ("Normal", "Promoted", promoted) in kube.events
    ms["spec"]["model"] = {"version": 1}
    await run(kube)
    await run(kube)
    rollbacks = [e for e in kube.events if e[1] == "RolledBack"]
    assert rollbacks == [("Normal", "RolledBack", "serving pinned version 1 instead of version 2")]


async def test_write_once_children_are_posted_the_rest_applied(kube: FakeKube) -> None:
    await run(kube)
    created = sorted((kind, name) for op, kind, name in kube.writes if op == "create")
    applied = {kind for op, kind, _ in kube.writes if op == "apply"}
    # The Job and the store's claim: created once, never re-applied.
    assert [kind for kind, _ in created] == ["Job", "PersistentVolumeClaim"]
    assert "Job" not in applied
    assert "PersistentVolumeClaim" not in applied
    finish_job(kube, 0.97)
    await run(kube)
    applied = {kind for op, kind, _ in kube.writes if op == "apply"}
    assert "Deployment" in applied  # the predictor's children stay server-side applied
    assert sorted(kind for op, kind, _ in kube.writes if op == "create") == [k for k, _ in created]


async def test_a_posted_childs_taken_name_is_a_conflict(kube: FakeKube) -> None:
    real_create = kube.create_new

    async def taken(manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Job":  # a namesake the cache has not shown yet
            raise ApiError(409, f'jobs.batch "{manifest["metadata"]["name"]}" already exists')
        return await real_create(manifest)

    kube.create_new = taken  # type: ignore[method-assign]
    ms = await run(kube)
    ready = conditions(ms)["Ready"]
    assert ready["reason"] == "ChildConflict"
    assert "not controlled by this ModelService" in ready["message"]
