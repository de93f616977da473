"""An operator SIGKILLed at any point and restarted converges without duplicates."""

from __future__ import annotations

import time

from opharness import OperatorProcess, apply, sample_manifest, sim_success


def test_sigkill_mid_reconcile_converges_once(operator: OperatorProcess, namespace: str) -> None:
    manifest = sample_manifest(accuracy=0.97)
    manifest["spec"]["training"]["podAnnotations"] = sim_success(0.97, duration="3s")
    ms = apply(operator.cluster, manifest, namespace)
    # Kill it again and again while it creates the PVC, the Job, reads results, creates the
    # predictor and writes status.
    for delay in (0.2, 0.5, 0.9, 1.4, 2.0, 2.7, 3.5):
        time.sleep(delay)
        operator.kill9()
        operator.start()
    status = ms.wait_phase("Ready", timeout=120)
    assert status["model"]["version"] == 1
    assert len(ms.children("job")) == 1
    assert len(ms.children("deployment")) == 1
    assert len(ms.children("replicaset")) == 1
    assert len(ms.children("service")) == 1
    assert len(ms.children("hpa")) == 1
    assert len(ms.children("pvc")) == 1

    # A restart of a converged operator changes nothing and keeps the promoted version.
    before = ms.get()["metadata"]["resourceVersion"]
    operator.kill9()
    operator.start()
    time.sleep(5)
    after = ms.get()
    assert after["status"]["model"]["version"] == 1
    assert after["status"]["phase"] == "Ready"
    assert after["metadata"]["resourceVersion"] == before
    assert len(ms.children("job")) == 1

    # A new training spec during restarts gets exactly one new Job and version 2.
    manifest["spec"]["training"]["epochs"] = 6
    apply(operator.cluster, manifest, namespace)
    for delay in (0.3, 0.8, 1.5):
        time.sleep(delay)
        operator.kill9()
        operator.start()
    ms.wait(
        "version 2 served",
        lambda s: (s.get("model") or {}).get("version") == 2 and s.get("phase") == "Ready",
        timeout=120,
    )
    versions = sorted(
        j["metadata"]["labels"]["modelservice.dev/version"] for j in ms.children("job")
    )
    assert versions == ["1", "2"]
    assert len(ms.children("deployment")) == 1
