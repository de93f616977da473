"""The predictor's NetworkPolicy, enforced for real on the real node (kube-router).

The real node runs kube-router's network policy controller as a host process
(``hack/localcluster/realnode.py``), so a NetworkPolicy the operator builds is enforced on
the node's bridge.
A ModelService serves a small model from the store (no training: the model is trained here
first); client pods on the real node then call its Service:

- from the ModelService's own namespace (the default ``access.sameNamespace``): HTTP 200;
- from a namespace that ``spec.serving.access.namespaces`` lists: HTTP 200;
- from any other namespace: the connection never completes (kube-router answers with an
  ICMP reject, so a client sees "connection refused"; a policy that dropped would time out).

The operator runs on the same node with its own NetworkPolicy (the chart's default), and it
must still reconcile: the ModelService reaching Ready proves its API traffic gets through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import workloads as rw
from localcluster.kubectl import KubeCluster, wait_for

pytestmark = pytest.mark.timeout(1200)

NAME = "guarded"
CLAIM = "guarded-models"
# One line per attempt: "200", "refused", "timeout" or the error's type. An allowed client
# retries until it gets through (kube-router adds a new pod's address to its sets within
# seconds); a refused one tries a few times after the allowed ones got through.
CLIENT = """
import sys, time, socket, urllib.request, urllib.error
url, mode = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + (120 if mode == "until-ok" else 30)
tries = 0
while time.monotonic() < deadline:
    tries += 1
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            print(r.status, flush=True)
            if mode == "until-ok":
                break
    except urllib.error.HTTPError as e:
        print(e.code, flush=True)
    except (ConnectionRefusedError, urllib.error.URLError, socket.timeout, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ConnectionRefusedError):
            print("refused", flush=True)
        elif isinstance(reason, (socket.timeout, TimeoutError)):
            print("timeout", flush=True)
        else:
            print(type(reason).__name__, flush=True)
    if mode == "few" and tries >= 4:
        break
    time.sleep(1)
"""


def _train_into(store: Path) -> None:
    """A small digits model in ``store/v1``, trained here (the serving image's trainer)."""
    completed = subprocess.run(
        [
            sys.executable, "-m", "modelservice_serving", "train", "--dataset", "digits",
            "--epochs", "1", "--batch-size", "64", "--hidden-units", "16", "--seed", "1",
            "--output", str(store / "v1"), "--termination-log", str(store / "termination-log"),
        ],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]


def _client_pod(name: str, namespace: str, url: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "netpol-client"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": rw.NODE_SELECTOR,
            "tolerations": rw.TOLERATIONS,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "client",
                    "image": rw.SERVING_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", CLIENT, url, mode],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": rw.SERVING_UID,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


def _finished_lines(cluster: KubeCluster, namespace: str, pod: str) -> list[str]:
    def done() -> str | None:
        phase = cluster.get("pod", pod, "-n", namespace)["status"].get("phase")
        return str(phase) if phase in ("Succeeded", "Failed") else None

    phase = wait_for(f"client pod {namespace}/{pod} to finish", done, 240, 2)
    lines = cluster.kubectl("logs", pod, "-n", namespace).split()
    assert phase == "Succeeded", f"{pod}: {phase} {lines}"
    return lines


@pytest.fixture(scope="module")
def guarded(
    kube_cluster: KubeCluster, real_namespace: str, real_node: dict[str, Any]
) -> Iterator[tuple[str, str, str]]:
    """(own namespace, allowed namespace, Service URL) of a Ready, policy-guarded predictor."""
    enforcement = real_node.get("network_policy") or {}
    assert enforcement.get("enforced"), (
        f"the real node does not enforce NetworkPolicy: {enforcement.get('reason', 'unknown')}"
    )
    suffix = uuid.uuid4().hex[:6]
    allowed, other = f"np-allowed-{suffix}", f"np-other-{suffix}"
    for namespace in (allowed, other):
        kube_cluster.kubectl("create", "namespace", namespace)
    store = rw.model_store(kube_cluster, real_namespace, CLAIM)
    _train_into(store)
    sample = rw.cpu_sample(NAME, CLAIM, minReplicas=1, maxReplicas=1)
    spec = sample["spec"]
    spec.pop("training")
    spec.pop("qualityGate", None)
    spec.pop("storage", None)
    spec["model"] = {"uri": f"pvc://{CLAIM}/v1"}
    spec["serving"].pop("autoscaling", None)
    spec["serving"]["access"] = {"namespaces": [allowed]}
    kube_cluster.apply(sample, namespace=real_namespace)

    def ready() -> bool:
        status = kube_cluster.get("ms", NAME, "-n", real_namespace).get("status") or {}
        return status.get("phase") == "Ready"

    try:
        wait_for(f"ModelService {NAME} Ready", ready, 600, 2)
    except AssertionError as error:
        ms = kube_cluster.kubectl("get", "ms", NAME, "-n", real_namespace, "-o", "json")
        raise AssertionError(f"{error}\n{json.loads(ms).get('status')}") from None
    url = rw.service_url(kube_cluster, real_namespace, f"{NAME}-predictor")
    yield real_namespace, allowed, url
    kube_cluster.kubectl("delete", "ms", NAME, "-n", real_namespace, "--wait=false", check=False)
    for namespace in (allowed, other):
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_predictor_admits_only_the_namespaces_its_access_lists(
    kube_cluster: KubeCluster, guarded: tuple[str, str, str]
) -> None:
    own, allowed, url = guarded
    other = allowed.replace("np-allowed-", "np-other-")
    policy = kube_cluster.get("networkpolicy", f"{NAME}-predictor", "-n", own)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # The operator reconciled this ModelService to Ready behind its own policy.
    operator_policies = kube_cluster.get("networkpolicy", "-n", f"{own}-system")["items"]
    assert operator_policies, "the chart installed no NetworkPolicy for the operator"
    target = f"{url}/v2/models/{NAME}"
    kube_cluster.apply(_client_pod("same-ns", own, target, "until-ok"))
    kube_cluster.apply(_client_pod("listed-ns", allowed, target, "until-ok"))
    same = _finished_lines(kube_cluster, own, "same-ns")
    listed = _finished_lines(kube_cluster, allowed, "listed-ns")
    assert same[-1] == "200", same
    assert listed[-1] == "200", listed
    # Now that admitted clients get through, one from elsewhere must not, on any try.
    kube_cluster.apply(_client_pod("outsider", other, target, "few"))
    outsider = _finished_lines(kube_cluster, other, "outsider")
    print(f"same namespace: {same}; listed namespace: {listed}; other namespace: {outsider}")
    assert outsider, "the outsider made no attempt"
    assert all(line in ("refused", "timeout") for line in outsider), outsider
