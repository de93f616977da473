"""The API answers 429: the operator waits its Retry-After, converges, and others go on.

A proxy in front of the real API server (throttleproxy.py) refuses the first writes of one
ModelService's children with ``429 Too Many Requests`` and ``Retry-After: 3``, as API
Priority and Fairness does; every other request reaches the API server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opharness import OperatorProcess, apply, sample_manifest
from throttleproxy import Seen, ThrottleProxy

from localcluster.kubectl import KubeCluster

RETRY_AFTER_S = 3.0
REFUSALS = 2
WRITES = ("POST", "PUT", "PATCH")
CHILDREN = ("/persistentvolumeclaims", "/jobs")


def of(name: str, seen: Seen) -> bool:
    """A write of one of ``name``'s store or training children."""
    return (
        seen.method in WRITES
        and any(kind in seen.path for kind in CHILDREN)
        and (f"/{name}-" in seen.path or f'"{name}-'.encode() in seen.body)
    )


class Refuse:
    """Refuse the first ``REFUSALS`` writes of the throttled ModelService's children."""

    def __init__(self) -> None:
        self.refused = 0

    def __call__(self, method: str, path: str, body: bytes) -> float | None:
        seen = Seen(0, method, path, body, None)
        if self.refused < REFUSALS and of("throttled", seen):
            self.refused += 1
            return RETRY_AFTER_S
        return None


@pytest.fixture
def proxy(crd: KubeCluster) -> Iterator[ThrottleProxy]:
    with ThrottleProxy(crd.kubeconfig, Refuse()) as running:
        yield running


def test_429_waits_retry_after_then_converges_while_others_proceed(
    crd: KubeCluster, namespace: str, proxy: ThrottleProxy, tmp_path: Path
) -> None:
    through_proxy = KubeCluster(proxy.kubeconfig(tmp_path / "proxy.kubeconfig"), crd.bin_dir)
    operator = OperatorProcess(
        through_proxy, namespace, tmp_path, extra_env={"MSO_OPERATOR_BACKOFF_BASE_S": "0.5"}
    )
    operator.start()
    try:
        manifests = {}
        for name in ("throttled", "free"):
            manifest = sample_manifest(accuracy=0.97)
            manifest["metadata"]["name"] = name
            manifests[name] = manifest
        throttled = apply(crd, manifests["throttled"], namespace)
        free = apply(crd, manifests["free"], namespace)

        throttled.wait_phase("Ready", timeout=120)
        free.wait_phase("Ready", timeout=120)
    except AssertionError:
        print(operator.logs()[-8000:])
        raise
    finally:
        operator.stop()

    writes = proxy.requests(lambda s: of("throttled", s))
    refused = [s for s in writes if s.throttled is not None]
    assert len(refused) == REFUSALS, [(s.method, s.path, s.throttled) for s in writes]
    # After each refusal, the next write of the same object waited at least Retry-After.
    for refusal in refused:
        later = [s for s in writes if s.at > refusal.at]
        assert later, "never tried again"
        waited = later[0].at - refusal.at
        assert waited >= RETRY_AFTER_S, f"retried after {waited:.2f}s, Retry-After was 3s"
    # One broken object never delays the others: the other ModelService's Job was created
    # while the throttled one was still waiting out its first Retry-After.
    free_job = next(  # created (POST) or server-side applied (PATCH)
        s for s in proxy.requests(lambda s: of("free", s)) if "/jobs" in s.path
    )
    assert free_job.at < refused[0].at + RETRY_AFTER_S
    for service in (throttled, free):
        assert len(service.children("job")) == 1
        assert len(service.children("pvc")) == 1
    assert "retry in" in operator.logs()  # the backoff is reported, not silent
